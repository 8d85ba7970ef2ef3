package test

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
	// The workers flush within a second; the gauge and the master's warning went out at start.
	lines := received(srv, 2*time.Second, func(got map[string]int) bool {
		return got["web.gunicorn.requests:1|c|@1.0|#env:test"] >= 12 && got["web.gunicorn.log.exception:1|c|@1.0|#env:test"] >= 3
	})
	time.Sleep(1500 * time.Millisecond) // one more flush: nothing beyond the 12 may come
	for l, n := range received(srv, 500*time.Millisecond, nil) {
		lines[l] += n
	}
	var durations []float64
	for l, n := range lines {
		if v, ok := strings.CutPrefix(l, "web.gunicorn.request.duration:"); ok {
			ms, err := strconv.ParseFloat(strings.TrimSuffix(v, "|ms|#env:test"), 64)
			if err != nil || !strings.HasSuffix(v, "|ms|#env:test") {
				t.Errorf("duration line %q", l)
			}
			for range n {
				durations = append(durations, ms)
			}
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

// TestStatsdFollowsHUP: a HUP that changes statsd_host sends the new workers' request
// metrics and the master's gauge and log counters to the new server, as gunicorn's reload.
func TestStatsdFollowsHUP(t *testing.T) {
	listen := func() net.PacketConn {
		srv, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		return srv
	}
	first, second := listen(), listen()
	dir := t.TempDir()
	conf := filepath.Join(dir, "gunicorn.conf.py")
	writeFile(t, conf, "statsd_host = '"+first.LocalAddr().String()+"'\n")
	writeFile(t, filepath.Join(dir, "counted.py"), "def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n")
	g := startGorn(t, gornOpts{dir: dir}, "-w", "1", "counted")
	if code, _ := get(t, g.url("/")); code != 200 {
		t.Fatal(code)
	}
	if got := received(first, 2*time.Second, nil); got["gunicorn.requests:1|c|@1.0"] != 1 {
		t.Fatalf("the first server got %v", got)
	}
	writeFile(t, conf, "statsd_host = '"+second.LocalAddr().String()+"'\nworker_tmp_dir = '/dev/shm'\n")
	g.signal(syscall.SIGHUP)
	g.waitLog(`"reason":"reload"`, 1, 30*time.Second)
	for range 3 {
		if code, _ := get(t, g.url("/")); code != 200 {
			t.Fatal(code)
		}
	}
	// The warning about worker_tmp_dir is logged after the switch: the master counts it there.
	got := received(second, 2500*time.Millisecond, nil)
	for line, n := range map[string]int{"gunicorn.requests:1|c|@1.0": 3, "gunicorn.workers:1|g": 1, "gunicorn.log.warning:1|c|@1.0": 1} {
		if got[line] < n {
			t.Errorf("the second server got %q %d times, want %d: %v", line, got[line], n, got)
		}
	}
}

// received counts the lines srv receives until none arrives for quiet, or enough says so
// (nil: never), 10 s at most.
func received(srv net.PacketConn, quiet time.Duration, enough func(map[string]int) bool) map[string]int {
	got := map[string]int{}
	buf := make([]byte, 65536)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && (enough == nil || !enough(got)); {
		_ = srv.SetReadDeadline(time.Now().Add(quiet))
		k, _, err := srv.ReadFrom(buf)
		if err != nil {
			break
		}
		for _, l := range strings.Split(string(buf[:k]), "\n") {
			got[l]++
		}
	}
	return got
}
