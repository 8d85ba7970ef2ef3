package statsd

import (
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseAddress(t *testing.T) {
	for in, want := range map[string]string{
		"localhost":             "localhost:8125",
		"StatsD.example:9125":   "statsd.example:9125",
		"127.0.0.1:8125":        "127.0.0.1:8125",
		"[::1]:9000":            "[::1]:9000",
		"::1":                   "[::1]:8125",
		"unix:///run/s.sock":    "unix:///run/s.sock",
		"unix:/run/s.sock":      "unix:///run/s.sock",
		"unix:9125":             "unix:9125", // gunicorn's guard: the host "unix"
		"tcp-less.example:8125": "tcp-less.example:8125",
	} {
		if got, err := ParseAddress(in); err != nil || got != want {
			t.Errorf("ParseAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "host:", "host:port", "host:70000", "unix://", ":8125"} {
		if got, err := ParseAddress(bad); err == nil {
			t.Errorf("ParseAddress(%q) = %q, want an error", bad, got)
		}
	}
}

// gunicorn: re.sub(r"^(.+[^.]+)\.*$", "\\g<1>.", prefix).
func TestPrefixAsGunicorn(t *testing.T) {
	for in, want := range map[string]string{"": "", "app": "app.", "app.": "app.", "app...": "app.", "a.b": "a.b.", "a": "a"} {
		if got := Prefix(in); got != want {
			t.Errorf("Prefix(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClientLines(t *testing.T) {
	for _, network := range []string{"udp", "unixgram"} {
		addr := "127.0.0.1:0"
		if network == "unixgram" {
			addr = filepath.Join(t.TempDir(), "statsd.sock")
		}
		srv, err := net.ListenPacket(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		target := srv.LocalAddr().String()
		if network == "unixgram" {
			target = "unix://" + target
		}
		c, err := Dial(target, "web", "env:test")
		if err != nil {
			t.Fatal(err)
		}
		c.Gauge("gunicorn.workers", 3)
		c.Increment("gunicorn.log.error", 1)
		c.Histogram("gunicorn.backlog", 7)
		c.Close()
		c.Increment("gunicorn.log.error", 1) // after Close: dropped, no panic
		var got []string
		buf := make([]byte, 2048)
		for range 3 {
			_ = srv.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, _, err := srv.ReadFrom(buf)
			if err != nil {
				t.Fatalf("%s: %v", network, err)
			}
			got = append(got, strings.Split(string(buf[:n]), "\n")...)
		}
		want := []string{"web.gunicorn.workers:3|g|#env:test", "web.gunicorn.log.error:1|c|@1.0|#env:test", "web.gunicorn.backlog:7|h|#env:test"}
		if !slices.Equal(got, want) {
			t.Errorf("%s: lines %q, want %q", network, got, want)
		}
	}
}

func TestDialFailsClearly(t *testing.T) {
	_, err := Dial("unix://"+filepath.Join(t.TempDir(), "none.sock"), "", "")
	if err == nil || !strings.HasPrefix(err.Error(), "connecting to the statsd server ") {
		t.Errorf("error %v", err)
	}
}
