package socket

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in   string
		want Address
		str  string // canonical form, when it differs from in
	}{
		{in: "127.0.0.1:8000", want: Address{Kind: KindTCP, Host: "127.0.0.1", Port: 8000}},
		{in: "127.0.0.1", want: Address{Kind: KindTCP, Host: "127.0.0.1", Port: 8000}, str: "127.0.0.1:8000"},
		{in: "0.0.0.0:0", want: Address{Kind: KindTCP, Host: "0.0.0.0", Port: 0}},
		{in: ":9000", want: Address{Kind: KindTCP, Host: "0.0.0.0", Port: 9000}, str: "0.0.0.0:9000"},
		{in: "localhost", want: Address{Kind: KindTCP, Host: "localhost", Port: 8000}, str: "localhost:8000"},
		{in: "LocalHost:65535", want: Address{Kind: KindTCP, Host: "localhost", Port: 65535}, str: "localhost:65535"},
		{in: "my-host_1.example.com:80", want: Address{Kind: KindTCP, Host: "my-host_1.example.com", Port: 80}},
		{in: "[::1]:8000", want: Address{Kind: KindTCP, Host: "::1", Port: 8000}},
		{in: "[::]", want: Address{Kind: KindTCP, Host: "::", Port: 8000}, str: "[::]:8000"},
		{in: "[0:0::1]:80", want: Address{Kind: KindTCP, Host: "::1", Port: 80}, str: "[::1]:80"},
		{in: "[fe80::1%eth0]:80", want: Address{Kind: KindTCP, Host: "fe80::1%eth0", Port: 80}},
		{in: "tcp://127.0.0.1:80", want: Address{Kind: KindTCP, Host: "127.0.0.1", Port: 80}, str: "127.0.0.1:80"},
		{in: "tcp://[::1]", want: Address{Kind: KindTCP, Host: "::1", Port: 8000}, str: "[::1]:8000"},
		{in: "tcp://:80", want: Address{Kind: KindTCP, Host: "0.0.0.0", Port: 80}, str: "0.0.0.0:80"},
		{in: "unix:/run/app.sock", want: Address{Kind: KindUnix, Path: "/run/app.sock"}},
		{in: "unix:///run/app.sock", want: Address{Kind: KindUnix, Path: "/run/app.sock"}, str: "unix:/run/app.sock"},
		{in: "unix://run/app.sock", want: Address{Kind: KindUnix, Path: "run/app.sock"}, str: "unix:run/app.sock"},
		{in: "unix:app.sock", want: Address{Kind: KindUnix, Path: "app.sock"}},
		{in: "unix:@gorn", want: Address{Kind: KindUnix, Path: "@gorn"}},
		{in: "unix:/" + strings.Repeat("x", 106), want: Address{Kind: KindUnix, Path: "/" + strings.Repeat("x", 106)}},
		{in: "fd://3", want: Address{Kind: KindFD, FD: 3}},
		{in: "fd://0", want: Address{Kind: KindFD, FD: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAddress(tt.in)
			if err != nil {
				t.Fatalf("ParseAddress(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseAddress(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			str := tt.str
			if str == "" {
				str = tt.in
			}
			if got.String() != str {
				t.Errorf("String() = %q, want %q", got.String(), str)
			}
			again, err := ParseAddress(got.String())
			if err != nil || again != got {
				t.Errorf("ParseAddress(%q) = %+v, %v; want it to round-trip", got.String(), again, err)
			}
		})
	}
}

func TestParseAddressErrors(t *testing.T) {
	tests := []struct {
		in, why string
	}{
		{"", "empty"},
		{"1.2.3.4:99999", "port out of range"},
		{"1.2.3.4:99999999999999999999999", "port out of range"},
		{"1.2.3.4:", "missing port"},
		{"1.2.3.4:http", `port "http" is not a number`},
		{"1.2.3.4:-1", `port "-1" is not a number`},
		{"1.2.3.4:+80", `port "+80" is not a number`},
		{"8000", `missing host (did you mean ":8000"?)`},
		{"1.2.3:80", `invalid host "1.2.3"`},
		{"999.1.1.1", `invalid host "999.1.1.1"`},
		{"*:80", `invalid host "*"`},
		{"bad host:80", `invalid host "bad host"`},
		{"::1", "must be in brackets"},
		{"::1:8000", "must be in brackets"},
		{"[::1", "missing ']'"},
		{"[::1]8000", `unexpected "8000" after ']'`},
		{"[::1]:", "missing port"},
		{"[::1]:70000", "port out of range"},
		{"[1.2.3.4]:80", "not an IPv6 address"},
		{"[localhost]:80", "not an IPv6 address"},
		{"http://127.0.0.1:80", `unsupported scheme "http"`},
		{"tcp://", "missing host"},
		{"unix:", "missing socket path"},
		{"unix://", "missing socket path"},
		{"unix:/" + strings.Repeat("x", 107), "socket path is 108 bytes"},
		{"unix:/a\x00b", "NUL"},
		{"fd://", "not a file descriptor number"},
		{"fd://x", "not a file descriptor number"},
		{"fd://-1", "not a file descriptor number"},
		{"fd://99999999999", "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			a, err := ParseAddress(tt.in)
			if err == nil {
				t.Fatalf("ParseAddress(%q) = %+v, want an error", tt.in, a)
			}
			prefix := fmt.Sprintf("invalid bind address %q: ", tt.in)
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tt.why) {
				t.Errorf("ParseAddress(%q) error %q, want %q + ...%q...", tt.in, err, prefix, tt.why)
			}
		})
	}
}

func TestDefaultBind(t *testing.T) {
	tests := []struct {
		port string
		want string
	}{
		{"", "127.0.0.1:8000"},
		{"5000", "0.0.0.0:5000"},
	}
	for _, tt := range tests {
		env := func(k string) string {
			if k == "PORT" {
				return tt.port
			}
			return ""
		}
		if got := DefaultBind(env); got != tt.want {
			t.Errorf("DefaultBind(PORT=%q) = %q, want %q", tt.port, got, tt.want)
		}
		if _, err := ParseAddress(DefaultBind(env)); err != nil {
			t.Errorf("DefaultBind(PORT=%q) does not parse: %v", tt.port, err)
		}
	}
}
