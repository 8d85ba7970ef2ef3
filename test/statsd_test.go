package test

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStatsd: with --statsd-host, a real UDP listener receives gunicorn's metrics with
// gunicorn's names, types, prefix and DogStatsD tags: per request from the workers, the
// workers gauge and the log counters from the master and the workers.
func TestStatsd(t *testing.T) {
	srv, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "counted.py"), `def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/error":
        raise RuntimeError("always fails")
    if path == "/logged":
        environ["wsgi.errors"].write("an app's own error line\n")
    status = "404 Not Found" if path == "/nope" else "200 OK"
    start_response(status, [("Content-Type", "text/plain")])
    return [b"ok"]
`)
	g := startGorn(t, gornOpts{dir: dir}, "-w", "2", "--statsd-host", srv.LocalAddr().String(), "--statsd-prefix", "web",
		"--dogstatsd-tags", "env:test", "--worker-tmp-dir", "/dev/shm", "--enable-backlog-metric", "counted")
	want := map[string]int{"/": 200, "/logged": 200, "/nope": 404, "/error": 500}
	for range 3 {
		for path, code := range want {
			if got, _ := get(t, g.url(path)); got != code {
				t.Fatalf("GET %s: %d, want %d", path, got, code)
			}
		}
	}
	lines := map[string]int{}
	var durations []float64
	buf := make([]byte, 65536)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && lines["web.gunicorn.requests:1|c|@1.0|#env:test"] < 12 {
		_ = srv.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := srv.ReadFrom(buf)
		if err != nil {
			break
		}
		for _, l := range strings.Split(string(buf[:n]), "\n") {
			if v, ok := strings.CutPrefix(l, "web.gunicorn.request.duration:"); ok {
				ms, err := strconv.ParseFloat(strings.TrimSuffix(v, "|ms|#env:test"), 64)
				if err != nil || !strings.HasSuffix(v, "|ms|#env:test") {
					t.Errorf("duration line %q", l)
				}
				durations = append(durations, ms)
				continue
			}
			lines[l]++
		}
	}
	// The worker gauge and the master's warning went out at start; wait a little for
	// anything still in a worker's queue (flushed every second).
	_ = srv.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	for {
		n, _, err := srv.ReadFrom(buf)
		if err != nil {
			break
		}
		for _, l := range strings.Split(string(buf[:n]), "\n") {
			lines[l]++
		}
	}
	for line, n := range map[string]int{
		"web.gunicorn.requests:1|c|@1.0|#env:test":           12,
		"web.gunicorn.request.status.200:1|c|@1.0|#env:test": 6,
		"web.gunicorn.request.status.404:1|c|@1.0|#env:test": 3,
		"web.gunicorn.request.status.500:1|c|@1.0|#env:test": 3,
		"web.gunicorn.log.exception:1|c|@1.0|#env:test":      3, // the workers' tracebacks of /error
		"web.gunicorn.log.error:1|c|@1.0|#env:test":          0, // wsgi.errors lines are not log calls
		"web.gunicorn.log.warning:1|c|@1.0|#env:test":        1, // the master's: --worker-tmp-dir ignored
		"web.gunicorn.workers:2|g|#env:test":                 1,
	} {
		if lines[line] != n {
			t.Errorf("%q received %d times, want %d; all: %v", line, lines[line], n, lines)
		}
	}
	backlogs := 0
	for l := range lines {
		if strings.HasPrefix(l, "web.gunicorn.backlog:") && strings.HasSuffix(l, "|h|#env:test") {
			backlogs += lines[l]
		}
	}
	if backlogs == 0 {
		t.Errorf("no gunicorn.backlog histogram line (--enable-backlog-metric): %v", lines)
	}
	if len(durations) != 12 {
		t.Errorf("%d duration lines, want 12", len(durations))
	}
	for _, ms := range durations {
		if ms < 0 || ms > 5000 {
			t.Errorf("duration %v ms", ms)
		}
	}
}
