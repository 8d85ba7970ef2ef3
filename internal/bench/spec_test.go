package bench

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseWorkers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		err  string
	}{
		{"4", []int{4}, ""},
		{"1..4", []int{1, 2, 3, 4}, ""},
		{"4,1,2,2", []int{1, 2, 4}, ""},
		{"1..3,6", []int{1, 2, 3, 6}, ""},
		{"0", nil, "at least 1"},
		{"0..3", nil, "at least 1"},
		{"5..2", nil, "goes down"},
		{"1..65", nil, "at most 64"},
		{"many", nil, "want counts"},
		{"", nil, "want counts"},
	} {
		got, err := ParseWorkers(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrUsage) {
				t.Errorf("ParseWorkers(%q) = %v, %v; want a usage error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseWorkers(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseLayouts(t *testing.T) {
	got, err := ParseLayouts("1x2, 2x1,4x0.5")
	if err != nil || len(got) != 3 || got[2] != (Layout{4, 0.5}) || got[1].String() != "2x1" || got[0].Total() != 2 {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", "2", "0x1", "2x0", "x1", "1x2x3", "17x0.1", "2xa"} {
		if _, err := ParseLayouts(bad); !errors.Is(err, ErrUsage) {
			t.Errorf("ParseLayouts(%q): %v, want a usage error", bad, err)
		}
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"127.0.0.1", "127.0.0.1:8000", "localhost:80", "[::1]:80", "::1", "127.9.9.9"} {
		if err := CheckLoopback(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"10.0.0.1", "192.168.1.1:80", "example.com", "0.0.0.0:8000", "[2001:db8::1]:80", ""} {
		if err := CheckLoopback(bad); !errors.Is(err, ErrUsage) {
			t.Errorf("%s: %v, want a refusal", bad, err)
		}
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in, method, path string
		weight, body     int
	}{
		{"/", "", "/", 0, -1},
		{"3 /json", "", "/json", 3, -1},
		{"POST /echo 512", "POST", "/echo", 0, 512},
		{"2 PUT /x?a=1 0", "PUT", "/x?a=1", 2, 0},
		{"http://127.0.0.1:8000/work?cpu_ms=2", "", "/work?cpu_ms=2", 0, -1},
	} {
		r, err := ParseURL(tc.in)
		if err != nil || r.Method != tc.method || r.Path != tc.path || r.Weight != tc.weight ||
			(tc.body < 0) != (r.Body == nil) || (tc.body >= 0 && len(r.Body) != tc.body) {
			t.Errorf("ParseURL(%q) = %+v, %v", tc.in, r, err)
		}
	}
	for _, bad := range []string{"", "json", "0 /", "GET", "/ a", "/ 1 2", "http://10.1.2.3/x", "https://127.0.0.1/", "/ 99999999999"} {
		if _, err := ParseURL(bad); !errors.Is(err, ErrUsage) {
			t.Errorf("ParseURL(%q): %v, want a usage error", bad, err)
		}
	}
}

func TestReadURLFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "urls")
	os.WriteFile(f, []byte("# a mix\n3 /json\n\n1 POST /echo 10\n"), 0o644)
	got, err := ReadURLFile(f)
	if err != nil || len(got) != 2 || got[1].Method != "POST" || len(got[1].Body) != 10 {
		t.Errorf("got %+v, %v", got, err)
	}
	os.WriteFile(f, []byte("/ok\nhttp://10.0.0.1/\n"), 0o644)
	if _, err := ReadURLFile(f); err == nil || !strings.Contains(err.Error(), "line 2") || !errors.Is(err, ErrUsage) {
		t.Errorf("a remote URL on line 2: %v", err)
	}
	for _, p := range []string{filepath.Join(dir, "missing"), filepath.Join(dir, "empty")} {
		os.WriteFile(filepath.Join(dir, "empty"), []byte("# nothing\n"), 0o644)
		if _, err := ReadURLFile(p); !errors.Is(err, ErrUsage) {
			t.Errorf("%s: %v, want a usage error", p, err)
		}
	}
}

func TestReadAccessLog(t *testing.T) {
	log := `127.0.0.1 - - [01/Dec/2026:03:00:00 +0000] "GET /json HTTP/1.1" 200 1021 "-" "curl/8"
[2026-12-01 03:00:00 +0000] [12] [INFO] not a request
127.0.0.1 - - [01/Dec/2026:03:00:01 +0000] "POST /echo?x=1 HTTP/1.1" 200 42 "-" "-"
{"logger": "access", "method": "PUT", "uri": "/item/1", "path": "/item/1", "query": "", "status": 204, "bytes": 7}
{"logger": "access", "method": "GET", "path": "/q", "query": "a=b", "status": 200, "bytes": 3}
{"msg": "worker ready"}
127.0.0.1 - - [01/Dec/2026:03:00:02 +0000] "HEAD / HTTP/1.0" 200 - "-" "-"
`
	f := filepath.Join(t.TempDir(), "access.log")
	os.WriteFile(f, []byte(log), 0o644)
	got, err := ReadAccessLog(f)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		method, path string
		body         int
	}{{"GET", "/json", -1}, {"POST", "/echo?x=1", 42}, {"PUT", "/item/1", 7}, {"GET", "/q?a=b", -1}, {"HEAD", "/", -1}}
	if len(got) != len(want) {
		t.Fatalf("got %d requests, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Method != w.method || g.Path != w.path || (w.body < 0) != (g.Body == nil) || (w.body >= 0 && len(g.Body) != w.body) {
			t.Errorf("line %d: %s %s body %d, want %+v", i, g.Method, g.Path, len(g.Body), w)
		}
	}
	os.WriteFile(f, []byte("nothing here\n"), 0o644)
	if _, err := ReadAccessLog(f); !errors.Is(err, ErrUsage) {
		t.Errorf("a log without requests: %v", err)
	}
	if _, err := ReadAccessLog(f + ".missing"); !errors.Is(err, ErrUsage) {
		t.Errorf("a missing log: %v", err)
	}
}
