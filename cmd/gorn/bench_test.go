package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
)

// TestBenchBadInput: every mistake is caught before a server starts (the binary given is
// not gorn), with exit status 2 and a message that names it.
func TestBenchBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no app", nil, "want one MODULE:APP"},
		{"two apps", []string{"a:app", "b:app"}, "want one MODULE:APP"},
		{"zero workers", []string{"--workers", "0", "app:app"}, "at least 1"},
		{"zero in a range", []string{"--workers", "0..3", "app:app"}, "at least 1"},
		{"unknown URL file", []string{"--urls", "/nonexistent/urls.txt", "app:app"}, "reading the URL file"},
		{"unknown access log", []string{"--requests", "/nonexistent/access.log", "app:app"}, "reading the access log"},
		{"limit above the machine", []string{"--cpus", "512", "app:app"}, "at most this machine's"},
		{"layout above the machine", []string{"--layouts", "256x2", "app:app"}, "--layouts"},
		{"layouts with workers", []string{"--layouts", "1x1", "--workers", "2", "app:app"}, "sizes itself"},
		{"bad cpus", []string{"--cpus", "lots", "app:app"}, "--cpus"},
		{"remote bind", []string{"-b", "10.0.0.1:8000", "app:app"}, "not a loopback address"},
		{"remote URL", []string{"--url", "http://192.168.1.10/work", "app:app"}, "not a loopback address"},
		{"bind after --", []string{"app:app", "--", "-b", "0.0.0.0:80"}, "sets the bind"},
		{"unknown class", []string{"-k", "sync,tornado", "app:app"}, "worker class"},
		{"unknown flag", []string{"--frobnicate", "app:app"}, "frobnicate"},
		{"two load sources", []string{"--url", "/", "--urls", "x", "app:app"}, "one of --url"},
		{"chart format", []string{"--chart", "c.gif", "app:app"}, "want a .svg file"},
		{"zero duration", []string{"--duration", "0s", "app:app"}, "--duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := benchCommand(context.Background(), tc.args, "/bin/false", nil, &out, &errb)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr: %s", code, errb.String())
			}
			if !strings.Contains(errb.String(), tc.want) || !strings.HasPrefix(errb.String(), "gorn bench: error: ") {
				t.Errorf("stderr %q lacks %q", errb.String(), tc.want)
			}
		})
	}
}

func TestBenchHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := benchCommand(context.Background(), []string{"--help"}, "", nil, &out, &errb); code != 0 || !strings.Contains(out.String(), "usage: gorn bench") {
		t.Errorf("exit %d, stdout %q", code, out.String())
	}
}

// TestParseBenchPassThrough: serving flags reach gorn in order, flags may follow the app,
// and everything after -- is passed as is.
func TestParseBenchPassThrough(t *testing.T) {
	o, out, err := parseBench([]string{"--chdir", "examples/flask", "app:app", "--python", "/py", "--preload",
		"--workers", "1..2", "--json", "--chart", "x.svg", "-k", "gthread", "--threads", "4", "--no-keepalive", "--", "--timeout", "60"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--chdir", "examples/flask", "--python", "/py", "--preload", "--timeout", "60"}
	if !slices.Equal(o.AppArgs, want) || o.Module != "app:app" || !out.json || out.chart != "x.svg" || o.KeepAlive || o.Threads != 4 ||
		!slices.Equal(o.Workers, []int{1, 2}) || !slices.Equal(o.Classes, []string{"gthread"}) || o.CPUs != 1 {
		t.Errorf("got %+v %+v", o, out)
	}
}
