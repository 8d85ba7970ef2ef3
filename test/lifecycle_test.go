package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/loadgen"
	"github.com/gornhq/gorn/internal/testenv"
)

// chaosPaths is the request mix of the load tests.
var chaosPaths = []string{"/", "/json", "/pid", "/slow?ms=5"}

// TestChaos: steady load while workers are recycled, reloaded, scaled, killed, and finally
// the master is stopped with connections queued. Nothing may fail but the one request
// inside the SIGKILLed worker.
func TestChaos(t *testing.T) {
	testenv.Short(t, "chaos test is long")
	for class, args := range workerClasses {
		t.Run(class, func(t *testing.T) { chaos(t, args) })
		t.Run(class+"/preload", func(t *testing.T) { chaos(t, append(args[:len(args):len(args)], "--preload")) })
	}
}

func chaos(t *testing.T, classArgs []string) {
	g := startGorn(t, gornOpts{}, append(classArgs, "-w", "3", "--max-requests", "300", "--max-requests-jitter", "100",
		"--graceful-timeout", "15", "app:app")...)
	l := loadgen.Start(g.addr, 6, chaosPaths...)
	step := func(name string, d time.Duration) {
		time.Sleep(d)
		t.Logf("%s: %s", name, l)
	}
	step("max-requests recycling", 3*time.Second)
	g.signal(syscall.SIGHUP)
	g.waitLog(`"reason":"reload"`, 3, 30*time.Second)
	step("first HUP", time.Second)
	g.signal(syscall.SIGHUP)
	g.waitLog(`"reason":"reload"`, 6, 30*time.Second)
	step("second HUP", time.Second)
	g.signal(syscall.SIGTTIN)
	g.waitLog(`"msg":"scaling up"`, 1, 5*time.Second)
	step("TTIN", 2*time.Second)
	g.signal(syscall.SIGTTOU)
	g.waitLog(`"reason":"scaled_down"`, 1, 30*time.Second)
	step("TTOU", time.Second)
	failsBeforeKill := len(l.Failures())
	g.killAWorker()
	step("SIGKILL", 2*time.Second)
	fails := l.Finish()
	t.Logf("load: %s; recycled=%d", l, g.logs.count(`"reason":"recycled"`))
	if failsBeforeKill > 0 || len(fails) > 1 {
		t.Errorf("%d failed requests (%d before the SIGKILL; one is allowed inside the killed worker):\n%s",
			len(fails), failsBeforeKill, strings.Join(fails, "\n"))
	}
	if l.OK.Load() < 1000 {
		t.Errorf("only %d requests succeeded", l.OK.Load())
	}
	if g.logs.count(`"reason":"recycled"`) == 0 {
		t.Error("no worker was recycled by --max-requests")
	}
	busy := 3 // every thread of every worker
	for i, a := range classArgs {
		if a == "--threads" {
			n, _ := strconv.Atoi(classArgs[i+1])
			busy *= n
		}
	}
	termWithQueuedConnections(t, g, busy)
}

// killAWorker SIGKILLs one worker and waits until the master reports the outside kill.
// Under --max-requests a worker may exit by itself just before the signal lands (the
// master then rightly logs a recycling), so it tries again with another worker.
func (g *gorn) killAWorker() {
	g.t.Helper()
	for try := 0; try < 5; try++ {
		pids := g.workerPids()
		if len(pids) == 0 {
			g.t.Fatal("no workers")
		}
		pid := pids[len(pids)-1]
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			continue // already reaped
		}
		exit := fmt.Sprintf(`"pid":%d,`, pid)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			for _, line := range strings.Split(g.logs.String(), "\n") {
				if !strings.Contains(line, exit) || !strings.Contains(line, `"status":`) {
					continue
				}
				if strings.Contains(line, "killed by a signal gorn did not send") {
					return
				}
				deadline = time.Time{} // it exited by itself: try another
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	g.t.Fatalf("no SIGKILLed worker was reported as killed by an outside signal:\n%s", g.logs.String())
}

// termWithQueuedConnections makes every worker busy (busy requests), queues more
// connections on the listener, sends TERM, and checks that every one of them is answered.
func termWithQueuedConnections(t *testing.T, g *gorn, busy int) {
	t.Helper()
	ok, fails := loadgen.QueuedAtStop(g.addr, busy, 12, "/slow?ms=1000", "/pid", func() { g.signal(syscall.SIGTERM) })
	if len(fails) > 0 || ok != busy+12 {
		t.Errorf("TERM with %d busy and 12 queued connections: %d answered, failures:\n%s", busy, ok, strings.Join(fails, "\n"))
	}
	if code := g.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d after TERM", code)
	}
}

func TestHungWorkerIsDumpedAndReplaced(t *testing.T) { eachMode(t, testHungWorkerIsDumpedAndReplaced) }

func testHungWorkerIsDumpedAndReplaced(t *testing.T, o gornOpts) {
	for class, args := range workerClasses {
		t.Run(class, func(t *testing.T) { hungWorkerIsDumpedAndReplaced(t, args) })
	}
}

func hungWorkerIsDumpedAndReplaced(t *testing.T, classArgs []string) {
	g := startGorn(t, gornOpts{}, append(classArgs, "-w", "2", "--timeout", "2", "app:app")...)
	go func() {
		resp, err := client().Get(g.url("/slow?ms=60000"))
		if err == nil {
			resp.Body.Close()
		}
	}()
	g.waitLog("WORKER TIMEOUT", 1, 15*time.Second)
	g.waitLog("worker ready", 3, 20*time.Second)
	for i := 0; i < 10; i++ {
		if code, _ := get(t, g.url("/")); code != 200 {
			t.Fatalf("request after the hang: %d", code)
		}
	}
	logs := g.logs.String()
	if !strings.Contains(logs, `request \"GET /slow\" running for`) {
		t.Errorf("the timeout log line does not name the request")
	}
	src, _ := os.ReadFile(filepath.Join(repoRoot, "examples", "flask", "app.py"))
	line := 0
	for i, l := range strings.Split(string(src), "\n") {
		if strings.Contains(l, "time.sleep(ms") {
			line = i + 1
		}
	}
	// Under --log-format json the dump is records like any other: one JSON object per
	// line, each naming the worker, none of faulthandler's raw text.
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		if !json.Valid([]byte(l)) {
			t.Errorf("a raw line in the JSON error log: %q", l)
		}
	}
	dumped := false
	for _, rec := range g.logLines() {
		if msg, _ := rec["msg"].(string); rec["logger"] == "worker.faulthandler" && strings.HasSuffix(msg, fmt.Sprintf(`app.py", line %d in slow`, line)) {
			dumped = true
			if pid, _ := rec["pid"].(float64); pid <= 0 || rec["slot"] == nil || rec["level"] != "error" {
				t.Errorf("stack record without its worker: %v", rec)
			}
		}
	}
	if !dumped {
		t.Errorf("no worker.faulthandler record names the sleeping line (app.py line %d)", line)
	}
	if !strings.Contains(logs, `"reason":"timeout"`) {
		t.Errorf("the exit is not attributed to the timeout")
	}
}

const reloadApp = `def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%s"]
`

func TestReloadWithBrokenCode(t *testing.T) { eachMode(t, testReloadWithBrokenCode) }

func testReloadWithBrokenCode(t *testing.T, o gornOpts) {
	dir := t.TempDir()
	appFile := filepath.Join(dir, "reloadable.py")
	write := func(src string) {
		if err := os.WriteFile(appFile, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(fmt.Sprintf(reloadApp, "v1"))
	g := startGorn(t, gornOpts{dir: dir, preload: o.preload}, "-w", "2", "reloadable")
	if _, body := get(t, g.url("/")); body != "v1" {
		t.Fatalf("got %q", body)
	}
	write("def application(:\n")
	g.signal(syscall.SIGHUP)
	g.waitLog("reload failed", 1, 20*time.Second)
	for i := 0; i < 10; i++ {
		if code, body := get(t, g.url("/")); code != 200 || body != "v1" {
			t.Fatalf("after a broken reload: %d %q", code, body)
		}
	}
	if !strings.Contains(g.logs.String(), "SyntaxError") {
		t.Errorf("the Python error is not logged")
	}
	write(fmt.Sprintf(reloadApp, "v2"))
	g.signal(syscall.SIGHUP)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, a := get(t, g.url("/"))
		_, b := get(t, g.url("/"))
		if a == "v2" && b == "v2" && g.logs.count(`"reason":"reload"`) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still serving %q/%q after fixing the code", a, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestUpgradeAsPID1 runs gorn as PID 1 of a new PID namespace, replaces its binary, sends
// USR2, and checks that the PID is kept, the new binary serves, and no request fails.
func TestUpgradeAsPID1(t *testing.T) { eachMode(t, testUpgradeAsPID1) }

func testUpgradeAsPID1(t *testing.T, o gornOpts) {
	var extra []string
	if o.preload { // the mold's workers are re-parented to PID 1, the master
		extra = append(extra, "--preload")
	}
	g, bin, pid1 := startAsPID1(t, extra...)
	l := loadgen.Start(g.addr, 4, chaosPaths...)
	time.Sleep(time.Second)
	replaceBinary(t, bin, "9.9.9-upgraded")
	fdsBefore, _ := masterUsage(t, pid1)
	syscall.Kill(pid1, syscall.SIGUSR2)
	g.waitLog("binary upgrade: adopted", 1, 20*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client().Get(g.url("/"))
		if err == nil {
			resp.Body.Close()
			if resp.Header.Get("Server") == "gorn/9.9.9-upgraded" && g.logs.count(`"reason":"reload"`) >= 2 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new binary's workers never served")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	fails := l.Finish()
	t.Logf("load across the upgrade: %s", l)
	if len(fails) > 0 {
		t.Errorf("failed requests across the upgrade:\n%s", strings.Join(fails, "\n"))
	}
	if got := g.innerPid(t); got != pid1 {
		t.Errorf("master pid changed from %d to %d", pid1, got)
	}
	// The adopted workers are replaced and reaped: their pidfds, the way back to the old
	// binary and its handover duplicates are all closed.
	fdsAfter, _ := masterUsage(t, pid1)
	t.Logf("master fds: %d before the upgrade, %d after", fdsBefore, fdsAfter)
	if fdsAfter > fdsBefore {
		t.Errorf("the master holds %d fds after the upgrade, %d before", fdsAfter, fdsBefore)
	}
	syscall.Kill(pid1, syscall.SIGTERM)
	if code := g.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// startGornBinary runs bin as PID 1 of a new PID namespace.
func startGornBinary(t *testing.T, bin string, args ...string) *gorn {
	g := startGornWith(t, gornOpts{wrap: []string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child"}}, bin, args...)
	return g
}

// innerPid is the master's pid as seen from outside the namespace (unshare's child).
func (g *gorn) innerPid(t *testing.T) int {
	kids := childPids(g.cmd.Process.Pid)
	if len(kids) != 1 {
		t.Fatalf("unshare has children %v", kids)
	}
	return kids[0]
}

func copyFile(t *testing.T, from, to string) {
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestPID1ReapsOrphans: as PID 1, orphaned grandchildren are reaped (no zombies), and the
// exit code is right.
func TestPID1ReapsOrphans(t *testing.T) {
	needPID1(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "orphans.py"), []byte(`import subprocess
def application(environ, start_response):
    # sh exits at once; its background sleep is orphaned and re-parented to PID 1.
    subprocess.run(["sh", "-c", "sleep 0.2 &"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
`), 0o644)
	g := startGornWith(t, gornOpts{dir: dir, wrap: []string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child"}}, gornBin, "-w", "1", "--log-level", "debug", "orphans")
	pid1 := g.innerPid(t)
	for i := 0; i < 5; i++ {
		if code, _ := get(t, g.url("/")); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	time.Sleep(time.Second)
	zombies := 0
	for _, kid := range childPids(pid1) {
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", kid))
		if f := strings.Fields(string(st)); len(f) > 2 && f[2] == "Z" {
			zombies++
		}
	}
	if zombies > 0 {
		t.Errorf("%d zombies under PID 1", zombies)
	}
	if g.logs.count("reaped orphan") < 5 {
		t.Errorf("orphans not reaped: %d", g.logs.count("reaped orphan"))
	}
	syscall.Kill(pid1, syscall.SIGTERM)
	if code := g.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d as PID 1", code)
	}
}

// TestConfigFileAndReload serves with settings from ./gunicorn.conf.py (app, workers,
// environment, a worker hook), then changes the file and sends HUP: the new settings roll out; a broken
// file keeps everything as it was.
func TestConfigFileAndReload(t *testing.T) {
	dir := t.TempDir()
	app := `import os
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [os.environ.get("GREETING", "unset").encode()]
`
	writeFile(t, filepath.Join(dir, "greet.py"), app)
	conf := filepath.Join(dir, "gunicorn.conf.py")
	writeFile(t, conf, "wsgi_app = 'greet:application'\nworkers = 2\nraw_env = ['GREETING=one']\n"+
		"def post_fork(server, worker):\n    worker.log.info('post_fork hook in %d', worker.pid)\n")
	g := startGorn(t, gornOpts{dir: dir, workers: 2})
	for _, pid := range g.workerPids() {
		if g.logs.count(fmt.Sprintf("post_fork hook in %d", pid)) != 1 {
			t.Errorf("worker %d did not run the config file's post_fork hook", pid)
		}
	}
	if _, body := get(t, g.url("/")); body != "one" {
		t.Fatalf("got %q, want the config file's environment", body)
	}
	if n := len(g.workerPids()); n != 2 {
		t.Fatalf("%d workers, want the config file's 2", n)
	}

	writeFile(t, conf, "wsgi_app = 'greet:application'\nworkers = 3\nraw_env = ['GREETING=two']\nworker_tmp_dir = '/dev/shm'\n")
	g.signal(syscall.SIGHUP)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, a := get(t, g.url("/"))
		_, b := get(t, g.url("/"))
		if a == "two" && b == "two" && len(g.workerPids()) == 3 && g.logs.count(`"reason":"reload"`) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after HUP: serving %q/%q with %d workers; want the new file's environment and 3 workers", a, b, len(g.workerPids()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if g.logs.count("worker_tmp_dir is a gunicorn setting gorn does not implement") != 1 {
		t.Errorf("no warning about the unsupported setting")
	}

	writeFile(t, conf, "workers = (\n")
	g.signal(syscall.SIGHUP)
	g.waitLog("reload aborted", 1, 20*time.Second)
	if !strings.Contains(g.logs.String(), "SyntaxError") {
		t.Errorf("the config file's error is not logged")
	}
	for i := 0; i < 5; i++ {
		if code, body := get(t, g.url("/")); code != 200 || body != "two" {
			t.Fatalf("after a broken config file: %d %q", code, body)
		}
	}
	if n := len(g.workerPids()); n != 3 {
		t.Errorf("%d workers after a broken config file, want 3", n)
	}
}

// TestReloadOnSourceChange: with --reload, saving the app's file rolls out the new code;
// a save that does not import keeps the old code serving; the fix rolls out again.
func TestReloadOnSourceChange(t *testing.T) { eachMode(t, testReloadOnSourceChange) }

func testReloadOnSourceChange(t *testing.T, o gornOpts) {
	dir := t.TempDir()
	appFile := filepath.Join(dir, "reloadable.py")
	save := func(src string) {
		writeFile(t, appFile, src)
		later := time.Now().Add(time.Duration(len(src)) * time.Millisecond) // a distinct mtime per save
		if err := os.Chtimes(appFile, later, later); err != nil {
			t.Fatal(err)
		}
	}
	var g *gorn
	serving := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, a := get(t, g.url("/"))
			_, b := get(t, g.url("/"))
			if a == want && b == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("serving %q/%q, want %q", a, b, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	save(fmt.Sprintf(reloadApp, "v1"))
	g = startGorn(t, gornOpts{dir: dir, preload: o.preload}, "-w", "2", "--reload", "reloadable")
	time.Sleep(1500 * time.Millisecond) // the watchers' first look
	save(fmt.Sprintf(reloadApp, "v2-longer"))
	serving("v2-longer")
	save("def application(:\n")
	g.waitLog("reload failed", 1, 30*time.Second)
	serving("v2-longer")
	time.Sleep(1500 * time.Millisecond)
	save(fmt.Sprintf(reloadApp, "v3-even-longer"))
	serving("v3-even-longer")
	if n := g.logs.count("source files changed (--reload): reloading"); n != 3 {
		t.Errorf("%d reloads for three saves", n)
	}
}

// An app whose import hangs has its stack dumped at the boot timeout, and an app that
// never boots (hanging, or crashing at import) ends gorn with exit 3 after a few attempts
// instead of being respawned forever.
func TestBootThatNeverSucceedsExits3(t *testing.T) {
	for name, tc := range map[string]struct {
		src, frame string
		args       []string
	}{
		"hanging import":  {"import time\n\ntime.sleep(3600)\n", `never.py", line 3 in <module>`, []string{"--boot-timeout", "1"}},
		"crashing import": {"import os\n\nos.abort()\n", `never.py", line 3 in <module>`, nil},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "never.py"), tc.src)
			start := time.Now()
			g := startGorn(t, gornOpts{dir: dir, noWait: true}, append(tc.args, "-w", "1", "never:app")...)
			if code := g.wait(60 * time.Second); code != 3 {
				t.Fatalf("exit %d, want 3", code)
			}
			t.Logf("gave up after %s", time.Since(start).Round(time.Millisecond))
			if g.logs.count("no worker has ever booted; giving up") != 1 {
				t.Error("no giving-up line")
			}
			dumps := 0
			for _, rec := range g.logLines() {
				if msg, _ := rec["msg"].(string); rec["logger"] == "worker.faulthandler" && strings.HasSuffix(msg, tc.frame) && rec["pid"] != nil {
					dumps++
				}
			}
			if dumps < 2 {
				t.Errorf("%d stack records point at the import's line (%s), want one per attempt", dumps, tc.frame)
			}
		})
	}
}
