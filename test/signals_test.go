package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/cgroup/cgrouptest"
	"github.com/gornhq/gorn/internal/testenv"
)

// USR1 reopens the log files in the master and the workers (logrotate's convention).
func TestUSR1ReopensLogs(t *testing.T) { eachMode(t, testUSR1ReopensLogs) }

func testUSR1ReopensLogs(t *testing.T, o gornOpts) {
	dir := t.TempDir()
	access, errlog := filepath.Join(dir, "access.log"), filepath.Join(dir, "error.log")
	g := startGorn(t, gornOpts{noWait: true, preload: o.preload}, "-w", "1", "--access-logfile", access, "--error-logfile", errlog, "app:app")
	waitFile := func(path, substr string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			b, _ := os.ReadFile(path)
			if strings.Contains(string(b), substr) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never contained %q; it has:\n%s", path, substr, b)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFile(errlog, "worker ready")
	var addr string
	for _, line := range strings.Split(readFile(t, errlog), "\n") {
		if i := strings.Index(line, `"address":"`); i >= 0 {
			addr = strings.SplitN(line[i+len(`"address":"`):], `"`, 2)[0]
		}
	}
	g.addr = addr
	get(t, g.url("/?before"))
	waitFile(access, "GET /?before")
	for _, p := range []string{access, errlog} {
		if err := os.Rename(p, p+".1"); err != nil {
			t.Fatal(err)
		}
	}
	g.signal(syscall.SIGUSR1)
	waitFile(errlog, "log files reopened")
	deadline := time.Now().Add(10 * time.Second)
	for {
		get(t, g.url("/?after"))
		if b, _ := os.ReadFile(access); strings.Contains(string(b), "GET /?after") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker did not reopen its access log")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(readFile(t, access+".1"), "/?after") {
		t.Error("requests after USR1 still went to the rotated file")
	}
}

func readFile(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// WINCH stops every worker but keeps the master and its sockets; TTIN brings one back.
func TestWINCHStopsWorkersKeepsMaster(t *testing.T) { eachMode(t, testWINCHStopsWorkersKeepsMaster) }

func testWINCHStopsWorkersKeepsMaster(t *testing.T, o gornOpts) {
	g := startGorn(t, gornOpts{preload: o.preload}, "-w", "2", "app:app")
	g.signal(syscall.SIGWINCH)
	waitWorkers(t, g, 0, 20*time.Second)
	g.signal(syscall.SIGTTIN)
	g.waitLog("worker ready", 3, 20*time.Second)
	if code, _ := get(t, g.url("/")); code != 200 {
		t.Errorf("after WINCH and TTIN: %d", code)
	}
}

func TestCheckConfig(t *testing.T) {
	py := python(t)
	dir := filepath.Join(repoRoot, "examples", "flask")
	for _, tc := range []struct {
		app  string
		code int
	}{{"app:app", 0}, {"app:create_app()", 0}, {"app:nothing_here", 4}, {"no_such_module", 4}} {
		cmd := exec.Command(gornBin, "--python", py, "--check-config", tc.app)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code {
			t.Errorf("--check-config %s: exit %d, want %d\n%s", tc.app, code, tc.code, out)
		}
	}
}

// A worker killed by the kernel's OOM killer is reported as such, not as a crash or as
// gorn's own kill, and is replaced.
func TestOOMKillIsRecognised(t *testing.T) {
	mem := cgrouptest.NewV1(t, "memory", fmt.Sprintf("gorn-test-oom-%d", os.Getpid()))
	mem.SetMemoryLimit(150 << 20)
	if b, err := os.ReadFile("/proc/sys/vm/overcommit_memory"); err == nil && strings.TrimSpace(string(b)) == "2" {
		testenv.Missing(t, "vm.overcommit_memory=2: allocations fail instead of invoking the OOM killer")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "greedy.py"), []byte(`hoard = []

def application(environ, start_response):
    if environ["PATH_INFO"] == "/eat":
        while True:
            hoard.append(b"x" * (16 << 20))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
`), 0o644)
	g := startGorn(t, gornOpts{dir: dir, wrap: inGroups(mem.Dir())}, "-w", "1", "greedy")
	resp, err := client().Get(g.url("/eat"))
	if err == nil {
		resp.Body.Close()
	}
	g.waitLog("OOM killer", 1, 20*time.Second)
	g.waitLog("worker ready", 2, 20*time.Second)
	if code, _ := get(t, g.url("/")); code != 200 {
		t.Errorf("after the OOM kill: %d", code)
	}
	if !strings.Contains(g.logs.String(), `"reason":"oom"`) && g.logs.count("OOM killer") == 0 {
		t.Error("exit not classified as oom")
	}
	// The line names the request the worker was serving, and how long it had run.
	named := false
	for _, rec := range g.logLines() {
		if msg, _ := rec["msg"].(string); strings.Contains(msg, "OOM killer") {
			secs, _ := rec["request_seconds"].(float64)
			named = strings.Contains(msg, `while serving "GET /eat" for `) && rec["request"] == "GET /eat" && secs > 0 && secs < 20
			if !named {
				t.Errorf("OOM line does not name the request in flight: %v", rec)
			}
		}
	}
	if !named {
		t.Error("no OOM line")
	}
}

// Workers must not outlive a master that dies without cleaning up (SIGKILL): Pdeathsig and
// the lifeline pipe both see to it.
func TestWorkersExitWhenMasterDies(t *testing.T) { eachMode(t, testWorkersExitWhenMasterDies) }

func testWorkersExitWhenMasterDies(t *testing.T, o gornOpts) {
	g := startGorn(t, gornOpts{preload: o.preload}, "-w", "2", "-n", "titletest", "app:app")
	pids := g.workerPids()
	if len(pids) != 2 {
		t.Fatalf("workers %v", pids)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pids[0]))
	if !strings.Contains(string(cmdline), "gorn: worker [titletest]") {
		t.Errorf("worker command line %q lacks its title", cmdline)
	}
	// The master names itself with prctl(PR_SET_NAME); its command line stays the real one.
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", g.cmd.Process.Pid))
	if got := strings.TrimSpace(string(comm)); got != "gorn: master" {
		t.Errorf("master process name %q, want %q", got, "gorn: master")
	}
	g.signal(syscall.SIGKILL)
	g.wait(10 * time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil {
			if time.Now().After(deadline) {
				t.Fatalf("worker %d outlived its master", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
