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
