package test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/testenv"
)

// asyncClasses are the async worker classes; the app's environment provides the library.
var asyncClasses = []string{"gevent", "eventlet"}

// requireLibrary fails or skips (internal/testenv) when the test Python lacks the library.
func requireLibrary(t *testing.T, lib string) {
	t.Helper()
	py := python(t)
	if out, err := exec.Command(py, "-c", "import "+lib).CombinedOutput(); err != nil {
		testenv.Missing(t, "%s has no %s (%v: %s); `make venv` installs it from worker/pyworker/requirements-test.txt", py, lib, err, out)
	}
}

// TestAsyncServesConcurrentSlowRequests: one gevent or eventlet worker serves 200 requests
// that each wait 1 s at once, then stops cleanly on TERM.
func TestAsyncServesConcurrentSlowRequests(t *testing.T) {
	for _, class := range asyncClasses {
		t.Run(class, func(t *testing.T) {
			requireLibrary(t, class)
			g := startGorn(t, gornOpts{}, "-k", class, "-w", "1", "--worker-connections", "500", "--backlog", "1024", "app:app")
			const n = 200
			c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: 0}}
			var wg sync.WaitGroup
			errs := make(chan error, n)
			start := time.Now()
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := c.Get(g.url("/slow?ms=1000"))
					if err != nil {
						errs <- fmt.Errorf("GET /slow: %w", err)
						return
					}
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(string(body), "slept 1000 ms") {
						errs <- fmt.Errorf("GET /slow: %d %q %v", resp.StatusCode, body, err)
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if elapsed > 2500*time.Millisecond {
				t.Errorf("%d concurrent 1 s requests on one %s worker took %s, want well under 3 s", n, class, elapsed)
			}
			t.Logf("%s: %d concurrent 1 s requests in %s", class, n, elapsed.Round(time.Millisecond))
			g.signal(syscall.SIGTERM)
			if code := g.wait(30 * time.Second); code != 0 {
				t.Errorf("exit code %d after TERM", code)
			}
		})
	}
}

// TestAsyncMissingLibraryStopsBoot: without the library the worker logs one line naming
// the package and exits 3; the master stops instead of respawning.
func TestAsyncMissingLibraryStopsBoot(t *testing.T) {
	for _, class := range asyncClasses {
		t.Run(class, func(t *testing.T) {
			shadow := t.TempDir()
			pkg := filepath.Join(shadow, class)
			if err := os.Mkdir(pkg, 0o755); err != nil {
				t.Fatalf("making %s: %v", pkg, err)
			}
			writeFile(t, filepath.Join(pkg, "__init__.py"), fmt.Sprintf("raise ImportError(\"No module named %s\")\n", class))
			// PYTHONPATH, not --pythonpath: the library is imported (and patches) before the
			// worker puts the --pythonpath entries in sys.path.
			g := startGorn(t, gornOpts{noWait: true, env: []string{"PYTHONPATH=" + shadow}}, "-k", class, "-w", "2", "app:app")
			code := g.wait(30 * time.Second)
			if code == 0 {
				t.Errorf("exit code 0 without %s", class)
			}
			logs := g.logs.String()
			if !strings.Contains(logs, "needs the "+class+" package") || !strings.Contains(logs, "pip install "+class) {
				t.Errorf("no clear message naming %s:\n%s", class, logs)
			}
			if n := g.logs.count("worker failed to boot"); n > 2 {
				t.Errorf("%d boot failures: the master respawned", n)
			}
		})
	}
}

// TestAsyncBlockedHubIsDumpedAndReplaced: a greenlet that computes without yielding blocks
// its worker's hub; the heartbeat stops, the master's --timeout dumps the stack (pointing
// at the CPU loop) and replaces the worker while the other worker keeps serving.
func TestAsyncBlockedHubIsDumpedAndReplaced(t *testing.T) {
	for _, class := range asyncClasses {
		t.Run(class, func(t *testing.T) {
			requireLibrary(t, class)
			g := startGorn(t, gornOpts{}, "-k", class, "-w", "2", "--timeout", "2", "app:app")
			go func() {
				resp, err := client().Get(g.url("/work?cpu_ms=60000&io_ms=0"))
				if err == nil {
					resp.Body.Close()
				}
			}()
			// Until the CPU loop runs, its worker may still take a connection (and reset it
			// when it is replaced): start polling once it surely runs.
			time.Sleep(500 * time.Millisecond)
			deadline := time.Now().Add(15 * time.Second)
			for g.logs.count("WORKER TIMEOUT") == 0 && time.Now().Before(deadline) {
				// The other worker serves while one hub is blocked.
				if code, _ := get(t, g.url("/")); code != 200 {
					t.Fatalf("request while a hub is blocked: %d", code)
				}
				time.Sleep(100 * time.Millisecond)
			}
			g.waitLog("WORKER TIMEOUT", 1, time.Second)
			g.waitLog("worker ready", 3, 20*time.Second)
			for range 10 {
				if code, _ := get(t, g.url("/")); code != 200 {
					t.Fatalf("request after the replacement: %d", code)
				}
			}
			logs := g.logs.String()
			if !strings.Contains(logs, "no heartbeat for") {
				t.Errorf("the timeout is not a stale heartbeat:\n%s", logs)
			}
			if !strings.Contains(logs, `app.py\", line`) || !strings.Contains(logs, " in work") {
				t.Errorf("no Python stack pointing at the CPU loop in the log:\n%s", logs)
			}
			if !strings.Contains(logs, `"reason":"timeout"`) {
				t.Errorf("the exit is not attributed to the timeout")
			}
		})
	}
}

// TestAsyncLongRequestIsNotAHungWorker: a request that waits longer than --timeout on an
// async worker is ended with its greenlet's stack logged; the worker itself keeps serving.
func TestAsyncLongRequestIsNotAHungWorker(t *testing.T) {
	requireLibrary(t, "gevent")
	g := startGorn(t, gornOpts{}, "-k", "gevent", "-w", "1", "--timeout", "2", "app:app")
	pid := g.workerPids()
	start := time.Now()
	resp, err := client().Get(g.url("/slow?ms=60000"))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a 60 s request answered %d despite --timeout 2", resp.StatusCode)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("the request was ended after %s", d)
	}
	g.waitLog("longer than --timeout (2 s): ending it", 1, 5*time.Second)
	if code, _ := get(t, g.url("/")); code != 200 {
		t.Fatalf("request after the ended one: %d", code)
	}
	if got := g.workerPids(); fmt.Sprint(got) != fmt.Sprint(pid) {
		t.Errorf("worker replaced (%v -> %v): a long request is not a hung worker", pid, got)
	}
	if g.logs.count("WORKER TIMEOUT") != 0 {
		t.Errorf("the master timed the worker out")
	}
}

// TestChaosAsync is TestChaos for the async classes: steady load through recycling, HUPs,
// TTIN/TTOU, a SIGKILLed worker and a TERM with connections queued.
func TestChaosAsync(t *testing.T) {
	testenv.Short(t, "chaos test is long")
	for _, class := range asyncClasses {
		t.Run(class, func(t *testing.T) {
			requireLibrary(t, class)
			chaos(t, []string{"-k", class})
		})
	}
}
