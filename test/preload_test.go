package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// moldApp reports where it was imported and how the worker serving it came to be.
const moldApp = `import gc, os, threading, time
IMPORTED_IN = os.getpid()
GC_AT_IMPORT = gc.isenabled()
threading.Thread(target=time.sleep, args=(3600,), name="import-time-poller", daemon=True).start()
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    import json
    return [json.dumps({"imported_in": IMPORTED_IN, "pid": os.getpid(), "ppid": os.getppid(),
                        "frozen": gc.get_freeze_count(), "pgid": os.getpgid(0),
                        "gc_at_import": GC_AT_IMPORT, "gc": gc.isenabled()}).encode()]
`

type moldInfo struct {
	ImportedIn int  `json:"imported_in"`
	Pid        int  `json:"pid"`
	Ppid       int  `json:"ppid"`
	Frozen     int  `json:"frozen"`
	Pgid       int  `json:"pgid"`
	GCAtImport bool `json:"gc_at_import"` // the collector ran while the mold imported the app
	GC         bool `json:"gc"`           // the collector runs in the worker
}

func askMold(t *testing.T, g *gorn) moldInfo {
	t.Helper()
	code, body := get(t, g.url("/"))
	var m moldInfo
	if code != 200 || json.Unmarshal([]byte(body), &m) != nil {
		t.Fatalf("GET / = %d %q", code, body)
	}
	return m
}

// socketsOf lists the sockets a process holds (each once, however many fds name it).
func socketsOf(pid int) []string {
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	seen := map[string]bool{}
	var out []string
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "socket:") && !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

// TestPreloadMold: with --preload the app is imported once, in the mold; the workers are
// the master's children (their own process groups), with the import's objects frozen out
// of the collector; the mold holds the listeners and its socket to the master, no client
// connection; a thread alive in the mold at fork is named in a warning. The mold dies: it
// is logged, counted, started again, and the next worker comes from the new mold while
// the others serve on.
func TestPreloadMold(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "moldapp.py"), moldApp)
	g := startGorn(t, gornOpts{dir: dir, preload: true}, "-w", "2", "--metrics-bind", "127.0.0.1:0", "moldapp:application")
	maddr := g.metricsAddr()
	master := g.cmd.Process.Pid
	mold := g.hookHostPid()
	if mold == 0 || processTitle(mold) != "mold" {
		t.Fatalf("no mold child (%d %q)", mold, processTitle(mold))
	}
	workers := g.workerPids()
	seen := map[int]bool{}
	for i := 0; i < 50 && len(seen) < 2; i++ {
		m := askMold(t, g)
		seen[m.Pid] = true
		if m.ImportedIn != mold || m.Ppid != master || m.Frozen == 0 || m.Pgid != m.Pid || m.GCAtImport || !m.GC {
			t.Fatalf("worker %+v: want the app imported in the mold %d with the collector off, parent the master %d, frozen objects, the collector on, its own process group", m, mold, master)
		}
	}
	for pid := range seen {
		if processTitle(pid) != "worker" {
			t.Errorf("worker %d is titled %q", pid, processTitle(pid))
		}
	}
	if len(seen) != 2 || len(workers) != 2 {
		t.Errorf("served by %v, workers %v", seen, workers)
	}
	// The listener and the master's socket: nothing else (no client connection).
	if n := len(socketsOf(mold)); n != 2 {
		t.Errorf("the mold holds %d sockets, want 2 (the listener and its socket to the master)", n)
	}
	if g.logs.count("threads alive in the mold at fork do not exist in the workers: import-time-poller") != 1 {
		t.Errorf("no (or more than one) warning naming the mold's thread")
	}

	syscall.Kill(mold, syscall.SIGKILL)
	g.waitLog("the hook host exited unexpectedly", 1, 20*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	var again int
	for again == 0 || again == mold {
		if time.Now().After(deadline) {
			t.Fatal("no new mold")
		}
		time.Sleep(50 * time.Millisecond)
		again = g.hookHostPid()
	}
	for i := 0; i < 10; i++ {
		if m := askMold(t, g); m.ImportedIn != mold {
			t.Fatalf("an old worker changed: %+v", m)
		}
	}
	if n := scrape(t, maddr)["gorn_hook_host_restarts_total"]; n != 1 {
		t.Errorf("gorn_hook_host_restarts_total %v, want 1", n)
	}
	syscall.Kill(workers[0], syscall.SIGKILL)
	g.waitLog("worker ready", 3, 30*time.Second)
	deadline = time.Now().Add(10 * time.Second)
	for {
		if m := askMold(t, g); m.ImportedIn == again {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no worker forked from the new mold %d", again)
		}
	}
}

// TestPreloadRespawnIsFast: a worker SIGKILLed is replaced from the mold within
// milliseconds (bench/preload.sh measures it; this bound is loose for a shared machine).
func TestPreloadRespawnIsFast(t *testing.T) {
	g := startGorn(t, gornOpts{preload: true}, "-w", "2", "app:app")
	var took []time.Duration
	for i := 0; i < 5; i++ {
		time.Sleep(300 * time.Millisecond)
		n := g.logs.count("worker ready")
		start := time.Now()
		syscall.Kill(g.workerPids()[0], syscall.SIGKILL)
		g.waitLog("worker ready", n+1, 10*time.Second)
		took = append(took, time.Since(start))
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	if took[2] > 500*time.Millisecond {
		t.Errorf("kill to ready %v (median %v): want milliseconds", took, took[2])
	}
	t.Logf("kill to ready: %v", took)
}

// TestPreloadWorkerDyingAtFork: a worker that exits at once (its post_fork ends the
// process) may be reaped before the mold has told the master its pid; either way the
// exit is its spawn's, a boot failure, never an unknown orphan, and gorn ends with exit 3
// as without --preload.
func TestPreloadWorkerDyingAtFork(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "moldapp.py"), moldApp)
	writeFile(t, filepath.Join(dir, "gorn.conf.py"), "import os\ndef post_fork(server, worker):\n    os._exit(3)\n")
	for i := 0; i < 3; i++ {
		g := startGorn(t, gornOpts{dir: dir, preload: true, noWait: true}, "--log-level", "debug", "-w", "2", "moldapp:application")
		if code := g.wait(60 * time.Second); code != 3 {
			t.Fatalf("exit code %d, want 3", code)
		}
		if n := g.logs.count("worker failed to boot"); n == 0 {
			t.Errorf("the workers' deaths are not their spawns' boot failures:\n%s", g.logs.String())
		}
		if g.logs.count("reaped orphan") != 0 || g.logs.count(`"msg":"worker spawned"`) == 0 {
			t.Errorf("a worker's exit was taken for an orphan's")
		}
	}
}

// TestPreloadConfigFileReadOnce: with --preload the workers inherit the config file as the
// mold executed it (gunicorn's workers inherit their master's) instead of executing it
// again, and its worker hooks still run in each worker.
func TestPreloadConfigFileReadOnce(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "executions")
	writeFile(t, filepath.Join(dir, "moldapp.py"), moldApp)
	writeFile(t, filepath.Join(dir, "gorn.conf.py"), fmt.Sprintf(`import os
with open(%[1]q, "a") as f:
    f.write(f"exec {os.getpid()}\n")
def post_fork(server, worker):
    with open(%[1]q, "a") as f:
        f.write(f"post_fork {os.getpid()}\n")
`, log))
	g := startGorn(t, gornOpts{dir: dir, preload: true}, "-w", "2", "moldapp:application")
	mold := g.hookHostPid()
	workers := g.workerPids()
	if len(workers) != 2 {
		t.Fatalf("workers %v, want 2", workers)
	}
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for _, w := range workers {
		if !slices.Contains(lines, fmt.Sprintf("post_fork %d", w)) {
			t.Errorf("post_fork did not run in worker %d: %q", w, lines)
		}
		if slices.Contains(lines, fmt.Sprintf("exec %d", w)) {
			t.Errorf("worker %d executed the config file again: %q", w, lines)
		}
	}
	if !slices.Contains(lines, fmt.Sprintf("exec %d", mold)) {
		t.Errorf("the mold %d did not execute the config file: %q", mold, lines)
	}
}

// TestPreloadMoldDyingBeforeAnswer: a mold killed after forking a worker but before its
// answer reached the master (here: at its wait for the middle process) leaves a worker
// whose pid the master never learns; it exits instead of serving unsupervised, and the
// master ends up with exactly the workers it spawned.
func TestPreloadMoldDyingBeforeAnswer(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "killed-once")
	writeFile(t, filepath.Join(dir, "moldapp.py"), moldApp)
	writeFile(t, filepath.Join(dir, "gorn.conf.py"), fmt.Sprintf(`import os, signal
def pre_fork(server, worker):
    if not os.path.exists(%[1]q):
        open(%[1]q, "w").close()
        os.waitpid = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
`, marker))
	g := startGorn(t, gornOpts{dir: dir, preload: true}, "--log-level", "debug", "-w", "2", "moldapp:application")
	g.waitLog("reaped orphan", 1, 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var workers []int
		for _, pid := range childPids(g.cmd.Process.Pid) {
			if processTitle(pid) == "worker" {
				workers = append(workers, pid)
			}
		}
		spawned := g.logs.count(`"msg":"worker spawned"`)
		if len(workers) == 2 && g.logs.count("worker ready") >= 2 {
			if spawned != 2 {
				t.Errorf("%d spawns logged, want 2", spawned)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("workers %v (want the 2 spawned), %d spawns logged:\n%s", workers, spawned, g.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the mold was not killed at its first fork: %v", err)
	}
}
