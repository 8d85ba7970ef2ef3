package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/testenv"
)

// hookRecorder is a config file prelude: record(name, **fields) appends one JSON line to
// $HOOK_EVENTS with the hook's name, the recording process and whether the worker's pid
// still exists in /proc (a zombie does: false means reaped).
const hookRecorder = `import json, os, sys, time
def record(hook, server=None, worker=None, **kw):
    ev = dict(hook=hook, by=os.getpid(), **kw)
    if server is not None:
        ev.update(server_pid=server.pid, num_workers=server.num_workers,
                  workers=sorted(getattr(server, "WORKERS", {}) or []),
                  address=[str(l) for l in getattr(server, "LISTENERS", [])])
    if worker is not None:
        ev.update(pid=worker.pid, age=worker.age, ppid=worker.ppid)
        if isinstance(worker.pid, int):
            ev["in_proc"] = os.path.exists("/proc/%d" % worker.pid)
    with open(os.environ["HOOK_EVENTS"], "a") as f:
        f.write(json.dumps(ev) + "\n")
`

// allHooks defines every master-side hook and post_fork, each recording its call.
const allHooks = `
def on_starting(server): record("on_starting", server)
def when_ready(server): record("when_ready", server)
def pre_fork(server, worker): record("pre_fork", server, worker)
def post_fork(server, worker): record("post_fork", None, worker)
def child_exit(server, worker): record("child_exit", server, worker)
def nworkers_changed(server, new, old): record("nworkers_changed", server, new=new, old=old)
def on_reload(server): record("on_reload", server, marker=MARKER)
def on_exit(server): record("on_exit", server)
`

type hookEvent struct {
	Hook       string   `json:"hook"`
	By         int      `json:"by"`
	ServerPid  int      `json:"server_pid"`
	NumWorkers *int     `json:"num_workers"`
	Workers    []int    `json:"workers"`
	Address    []string `json:"address"`
	Pid        any      `json:"pid"`
	Age        int      `json:"age"`
	Ppid       int      `json:"ppid"`
	InProc     *bool    `json:"in_proc"`
	New        *int     `json:"new"`
	Old        *int     `json:"old"`
	Marker     int      `json:"marker"`
}

func (e hookEvent) pid() int {
	f, _ := e.Pid.(float64)
	return int(f)
}

func readHookEvents(t *testing.T, path string) []hookEvent {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var evs []hookEvent
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e hookEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("event %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs
}

// waitHookEvent waits for the n-th (1-based) event matching ok and returns its index.
func waitHookEvent(t *testing.T, path string, what string, n int, ok func(hookEvent) bool) (int, []hookEvent) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs := readHookEvents(t, path)
		seen := 0
		for i, e := range evs {
			if ok(e) {
				if seen++; seen == n {
					return i, evs
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event (#%d); events: %+v", what, n, evs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hookNamed(name string) func(hookEvent) bool {
	return func(e hookEvent) bool { return e.Hook == name }
}

func hookApp(t *testing.T, conf string) (dir, events string) {
	t.Helper()
	dir = t.TempDir()
	writeFile(t, filepath.Join(dir, "app.py"), `import os, time
def application(environ, start_response):
    if environ["PATH_INFO"] == "/sleep":
        time.sleep(30)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
`)
	writeFile(t, filepath.Join(dir, "gorn.conf.py"), hookRecorder+conf)
	return dir, filepath.Join(dir, "events.jsonl")
}

// TestServerHooks: every master-side hook runs in one hook host with gunicorn's arguments
// and timing: on_starting, nworkers_changed(n, None) and when_ready (bound, no workers)
// before the first pre_fork; pre_fork before its worker exists, with pid "[booting]" and
// gunicorn's per-spawn age, which post_fork in the worker sees too; child_exit once the
// worker is reaped; TTIN's nworkers_changed; HUP re-reads the file before on_reload;
// on_exit last, after every worker is gone.
func TestServerHooks(t *testing.T) { eachMode(t, testServerHooks) }

func testServerHooks(t *testing.T, o gornOpts) {
	dir, events := hookApp(t, "wsgi_app = 'app:application'\nworkers = 2\nMARKER = 1\n"+allHooks)
	g := startGorn(t, gornOpts{dir: dir, env: []string{"HOOK_EVENTS=" + events}, workers: 2, preload: o.preload})
	master := g.cmd.Process.Pid
	host := g.hookHostPid()
	if host == 0 {
		t.Fatal("no hook host child")
	}
	_, evs := waitHookEvent(t, events, "post_fork", 2, hookNamed("post_fork"))

	// Start-up order, all in the host.
	var order []string
	for _, e := range evs {
		if e.Hook != "post_fork" {
			order = append(order, e.Hook)
			if e.By != host || e.ServerPid != master {
				t.Errorf("%s ran in %d with server.pid %d; want the host %d and the master %d", e.Hook, e.By, e.ServerPid, host, master)
			}
		}
	}
	if want := []string{"on_starting", "nworkers_changed", "when_ready", "pre_fork", "pre_fork"}; !slices.Equal(order, want) {
		t.Fatalf("start-up hooks %q, want %q", order, want)
	}
	if e := evs[1]; *e.New != 2 || e.Old != nil {
		t.Errorf("nworkers_changed(%v, %v) at start, want (2, None)", *e.New, e.Old)
	}
	if e := evs[2]; len(e.Workers) != 0 || len(e.Address) != 1 || e.Address[0] != "http://"+g.addr || *e.NumWorkers != 2 {
		t.Errorf("when_ready saw workers %v, LISTENERS %v, num_workers %v; want none, [http://%s], 2", e.Workers, e.Address, *e.NumWorkers, g.addr)
	}
	ages := map[int]int{} // pid -> age, from post_fork
	for _, e := range evs {
		switch e.Hook {
		case "pre_fork":
			if e.Pid != "[booting]" || e.Ppid != master {
				t.Errorf("pre_fork worker.pid %v ppid %d, want [booting] and %d", e.Pid, e.Ppid, master)
			}
		case "post_fork":
			ages[e.pid()] = e.Age
		}
	}
	if got := slices.Sorted(maps.Values(ages)); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("worker ages %v, want 1 and 2 (gunicorn's spawn counter)", got)
	}
	if pids := g.workerPids(); !slices.Equal(pids, slices.Sorted(maps.Keys(ages))) {
		t.Errorf("workers %v, post_fork ran in %v", pids, ages)
	}

	// A killed worker: child_exit after the reap, then pre_fork of age 3.
	victim := g.workerPids()[0]
	syscall.Kill(victim, syscall.SIGKILL)
	i, evs := waitHookEvent(t, events, "child_exit", 1, hookNamed("child_exit"))
	if e := evs[i]; e.pid() != victim || e.Age != ages[victim] || *e.InProc || slices.Contains(e.Workers, victim) {
		t.Errorf("child_exit saw pid %v age %d in /proc %v WORKERS %v; want %d, age %d, reaped and gone from WORKERS", e.Pid, e.Age, *e.InProc, e.Workers, victim, ages[victim])
	}
	_, evs = waitHookEvent(t, events, "post_fork of the replacement", 3, hookNamed("post_fork"))
	if e := evs[len(evs)-1]; e.Age != 3 {
		t.Errorf("replacement age %d, want 3", e.Age)
	}
	g.waitLog("worker ready", 3, 20*time.Second)

	g.signal(syscall.SIGTTIN)
	i, evs = waitHookEvent(t, events, "nworkers_changed", 2, hookNamed("nworkers_changed"))
	if e := evs[i]; *e.New != 3 || *e.Old != 2 || *e.NumWorkers != 3 {
		t.Errorf("TTIN: nworkers_changed(%v, %v), num_workers %v; want (3, 2), 3", *e.New, *e.Old, *e.NumWorkers)
	}
	g.waitLog("worker ready", 4, 20*time.Second)

	writeFile(t, filepath.Join(dir, "gorn.conf.py"), hookRecorder+"wsgi_app = 'app:application'\nworkers = 3\nMARKER = 2\n"+allHooks)
	g.signal(syscall.SIGHUP)
	i, evs = waitHookEvent(t, events, "on_reload", 1, hookNamed("on_reload"))
	if e := evs[i]; e.Marker != 2 || len(e.Workers) != 3 {
		t.Errorf("on_reload saw MARKER=%d and WORKERS %v; want the re-read file's 2 and the 3 workers", e.Marker, e.Workers)
	}
	g.waitLog(`"reason":"reload"`, 3, 30*time.Second)

	g.signal(syscall.SIGTERM)
	if code := g.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	evs = readHookEvents(t, events)
	last := evs[len(evs)-1]
	if last.Hook != "on_exit" || len(last.Workers) != 0 {
		t.Errorf("last hook %s with WORKERS %v, want on_exit with none", last.Hook, last.Workers)
	}
	exits, forks := 0, 0
	for _, e := range evs {
		switch e.Hook {
		case "child_exit":
			exits++
		case "pre_fork":
			forks++
		}
	}
	if exits != forks {
		t.Errorf("%d pre_fork, %d child_exit: every worker's exit is reported once", forks, exits)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", host)); err == nil {
		t.Errorf("the hook host %d outlived gorn", host)
	}
}

// TestServerHookFailures: a hook that raises is logged with its traceback and gorn serves
// on; a hook that hangs past --timeout gets the host killed and restarted (the worker
// spawns anyway); a host that is killed is restarted, told the live workers and runs
// when_ready again; both count in gorn_hook_host_restarts_total.
func TestServerHookFailures(t *testing.T) { eachMode(t, testServerHookFailures) }

func testServerHookFailures(t *testing.T, o gornOpts) {
	dir, events := hookApp(t, `
wsgi_app = 'app:application'
workers = 1
def when_ready(server):
    record("when_ready", server)
    raise ValueError("when_ready went wrong")
def pre_fork(server, worker):
    record("pre_fork", server, worker)
    if worker.age == 2:
        time.sleep(3600)
def child_exit(server, worker):
    record("child_exit", server, worker)
    raise RuntimeError("child_exit went wrong")
def nworkers_changed(server, new, old): record("nworkers_changed", server, new=new, old=old)
`)
	g := startGorn(t, gornOpts{dir: dir, env: []string{"HOOK_EVENTS=" + events}, preload: o.preload}, "--timeout", "2", "--metrics-bind", "127.0.0.1:0")
	maddr := g.metricsAddr()
	if !strings.Contains(g.logs.String(), "when_ready hook failed") || !strings.Contains(g.logs.String(), "ValueError: when_ready went wrong") {
		t.Fatalf("the raising when_ready is not logged with its traceback:\n%s", g.logs.String())
	}
	if code, _ := get(t, g.url("/")); code != 200 {
		t.Fatalf("GET / = %d after a raising when_ready", code)
	}
	host := g.hookHostPid()

	// TTIN: pre_fork of age 2 hangs; the host is killed after --timeout, the worker spawns.
	g.signal(syscall.SIGTTIN)
	g.waitLog("a server hook did not return in time", 1, 20*time.Second)
	g.waitLog("worker ready", 2, 20*time.Second)
	waitHookEvent(t, events, "when_ready after the restart", 2, hookNamed("when_ready"))
	restarted := g.hookHostPid()
	if restarted == 0 || restarted == host {
		t.Fatalf("hook host %d after the hung hook, was %d: want a new one", restarted, host)
	}
	if n := scrape(t, maddr)["gorn_hook_host_restarts_total"]; n != 1 {
		t.Errorf("gorn_hook_host_restarts_total %v after a hung hook, want 1", n)
	}

	// The host dies: it is restarted and knows the workers.
	syscall.Kill(restarted, syscall.SIGKILL)
	g.waitLog("the hook host exited unexpectedly", 1, 20*time.Second)
	waitHookEvent(t, events, "when_ready after the crash", 3, hookNamed("when_ready"))
	if n := scrape(t, maddr)["gorn_hook_host_restarts_total"]; n != 2 {
		t.Errorf("gorn_hook_host_restarts_total %v after a crash, want 2", n)
	}
	pids := g.workerPids()
	syscall.Kill(pids[0], syscall.SIGKILL)
	i, evs := waitHookEvent(t, events, "child_exit", 1, hookNamed("child_exit"))
	if e := evs[i]; e.pid() != pids[0] || !slices.Equal(e.Workers, pids[1:]) {
		t.Errorf("child_exit after a host restart: pid %v WORKERS %v; want %d and %v", e.Pid, e.Workers, pids[0], pids[1:])
	}
	g.waitLog("child_exit hook failed", 1, 10*time.Second)
	// The raising child_exit did not stop the host: the next hook runs.
	g.signal(syscall.SIGTTOU)
	waitHookEvent(t, events, "nworkers_changed after a raising hook", 3, hookNamed("nworkers_changed"))
	if code, _ := get(t, g.url("/")); code != 200 {
		t.Fatalf("GET / = %d", code)
	}
}

// TestWorkerAbortHook: a worker aborted for --timeout runs the config file's worker_abort
// (in the worker, as gunicorn does) after its stack is dumped, then exits 1.
func TestWorkerAbortHook(t *testing.T) {
	dir, events := hookApp(t, `
wsgi_app = 'app:application'
workers = 1
def worker_abort(worker): record("worker_abort", None, worker)
`)
	g := startGorn(t, gornOpts{dir: dir, env: []string{"HOOK_EVENTS=" + events}}, "--timeout", "1")
	pid := g.workerPids()[0]
	go client().Get(g.url("/sleep"))
	i, evs := waitHookEvent(t, events, "worker_abort", 1, hookNamed("worker_abort"))
	if e := evs[i]; e.pid() != pid || e.By != pid || e.Age != 1 {
		t.Errorf("worker_abort ran in %d for %v (age %d), want the worker %d (age 1)", e.By, e.Pid, e.Age, pid)
	}
	g.waitLog(`"status":"exit 1"`, 1, 10*time.Second)
	if !strings.Contains(g.logs.String(), "time.sleep(30)") && !strings.Contains(g.logs.String(), "in application") {
		t.Errorf("no stack dump of the aborted worker:\n%s", g.logs.String())
	}
	if g.hookHostPid() != 0 {
		t.Errorf("a hook host runs for a file with worker-side hooks only")
	}
}

// TestPrometheusMultiprocessChildExit: prometheus_client's multiprocess mode wired as its
// documentation says for gunicorn: child_exit calls mark_process_dead(worker.pid). A killed
// worker's live-gauge files go, its counter files and the survivor's files stay.
func TestPrometheusMultiprocessChildExit(t *testing.T) {
	eachMode(t, testPrometheusMultiprocessChildExit)
}

func testPrometheusMultiprocessChildExit(t *testing.T, o gornOpts) {
	py := python(t)
	if err := exec.Command(py, "-c", "import prometheus_client.multiprocess").Run(); err != nil {
		testenv.Missing(t, "prometheus_client is not installed (%v): pip install -r worker/pyworker/requirements-test.txt", err)
	}
	dir := t.TempDir()
	metricsDir := filepath.Join(dir, "prom")
	if err := os.Mkdir(metricsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "app.py"), `import os
from prometheus_client import Counter, Gauge
REQUESTS = Counter("app_requests", "requests")
LIVE = Gauge("app_live", "live workers", multiprocess_mode="livesum")
def application(environ, start_response):
    LIVE.set(1)  # in the worker: with --preload, import time is the mold's
    REQUESTS.inc()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
`)
	writeFile(t, filepath.Join(dir, "gunicorn.conf.py"), `from prometheus_client import multiprocess
wsgi_app = "app:application"
workers = 2
def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
`)
	g := startGorn(t, gornOpts{dir: dir, env: []string{"PROMETHEUS_MULTIPROC_DIR=" + metricsDir}, workers: 2, preload: o.preload})
	pids := g.workerPids()
	seen := map[string]bool{}
	for i := 0; i < 200 && len(seen) < 2; i++ {
		_, body := get(t, g.url("/"))
		seen[body] = true
	}
	files := func() []string {
		names, _ := filepath.Glob(filepath.Join(metricsDir, "*.db"))
		for i, n := range names {
			names[i] = filepath.Base(n)
		}
		slices.Sort(names)
		return names
	}
	for _, pid := range pids {
		for _, f := range []string{fmt.Sprintf("gauge_livesum_%d.db", pid), fmt.Sprintf("counter_%d.db", pid)} {
			if !slices.Contains(files(), f) {
				t.Fatalf("no %s among %v", f, files())
			}
		}
	}
	syscall.Kill(pids[0], syscall.SIGKILL)
	dead := fmt.Sprintf("gauge_livesum_%d.db", pids[0])
	deadline := time.Now().Add(20 * time.Second)
	for slices.Contains(files(), dead) {
		if time.Now().After(deadline) {
			t.Fatalf("%s is still there: child_exit did not mark the worker dead (%v)", dead, files())
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := files()
	for _, f := range []string{fmt.Sprintf("counter_%d.db", pids[0]), fmt.Sprintf("counter_%d.db", pids[1]), fmt.Sprintf("gauge_livesum_%d.db", pids[1])} {
		if !slices.Contains(got, f) {
			t.Errorf("%s is gone (%v): mark_process_dead removes only the dead pid's live gauges", f, got)
		}
	}
}
