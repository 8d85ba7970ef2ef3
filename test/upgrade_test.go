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

	"github.com/gornhq/gorn/internal/loadgen"
	"github.com/gornhq/gorn/internal/testenv"
)

// needPID1 fails or skips (testenv) unless gorn can run as PID 1 of a new PID namespace.
func needPID1(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t, "unshare --pid runs gorn as PID 1")
	if err := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "true").Run(); err != nil {
		testenv.Missing(t, "unshare --pid unavailable: %v", err)
	}
}

// buildGorn builds gorn with the given build tags and version into path.
func buildGorn(t *testing.T, path, version string, tags ...string) {
	t.Helper()
	args := []string{"build", "-ldflags", "-X main.version=" + version}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	build := exec.Command("go", append(args, "-o", path, "./cmd/gorn")...)
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", path, err, out)
	}
}

// startAsPID1 runs a copy of the gorn under test as PID 1 of a new PID namespace, from a
// path a test may replace (as a package upgrade would) before sending USR2.
func startAsPID1(t *testing.T, extra ...string) (g *gorn, bin string, pid1 int) {
	t.Helper()
	needPID1(t)
	bin = filepath.Join(t.TempDir(), "gorn")
	copyFile(t, gornBin, bin)
	g = startGornBinary(t, bin, append(extra, "-w", "2", "app:app")...)
	return g, bin, g.innerPid(t)
}

// replaceBinary builds gorn (version, build tags) and moves it over bin.
func replaceBinary(t *testing.T, bin, version string, tags ...string) {
	t.Helper()
	buildGorn(t, bin+".new", version, tags...)
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}
}

// TestFailedUpgradeKeepsTheOldBinary runs gorn as PID 1, replaces its binary with one
// that fails, and sends USR2 under load: the old code keeps serving, the PID and the
// workers stay, no request fails, the log says why, and the master still supervises.
func TestFailedUpgradeKeepsTheOldBinary(t *testing.T) {
	cases := []struct {
		name    string
		install func(t *testing.T, bin string)
		log     string // the line that says what happened
		why     string // and why
	}{
		{"pre-flight fails", func(t *testing.T, bin string) {
			writeFile(t, bin+".new", "#!/bin/sh\necho 'this build rejects its arguments' >&2\nexit 2\n")
			os.Chmod(bin+".new", 0o755)
		}, "binary upgrade refused", "this build rejects its arguments"},
		{"exits after exec", func(t *testing.T, bin string) {
			buildGorn(t, bin+".new", "9.9.9-exits", "gorn_fault_exit")
		}, "binary upgrade rolled back", "exited with code 1"},
		{"hangs after exec", func(t *testing.T, bin string) {
			buildGorn(t, bin+".new", "9.9.9-hangs", "gorn_fault_hang")
		}, "binary upgrade rolled back", "was not running 10s after exec"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, bin, pid1 := startAsPID1(t)
			resp, err := client().Get(g.url("/"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			oldServer := resp.Header.Get("Server")
			workers := childPids(pid1)
			tc.install(t, bin)
			if err := os.Rename(bin+".new", bin); err != nil {
				t.Fatal(err)
			}
			l := loadgen.Start(g.addr, 4, chaosPaths...)
			time.Sleep(500 * time.Millisecond)
			syscall.Kill(pid1, syscall.SIGUSR2)
			g.waitLog(tc.log, 1, 60*time.Second)
			time.Sleep(time.Second)
			fails := l.Finish()
			t.Logf("load across the failed upgrade: %s", l)
			if len(fails) > 0 {
				t.Errorf("%d failed requests:\n%s", len(fails), strings.Join(fails, "\n"))
			}
			var line string
			for _, s := range strings.Split(g.logs.String(), "\n") {
				if strings.Contains(s, tc.log) {
					line = s
				}
			}
			t.Logf("log: %s", line)
			if !strings.Contains(line, tc.why) {
				t.Errorf("the log does not say why (%q): %s", tc.why, line)
			}
			if got := g.innerPid(t); got != pid1 {
				t.Errorf("master pid changed from %d to %d", pid1, got)
			}
			if got := childPids(pid1); !slicesEqual(got, workers) {
				t.Errorf("workers %v, want the old ones %v serving on", got, workers)
			}
			for i := 0; i < 5; i++ {
				resp, err := client().Get(g.url("/"))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if s := resp.Header.Get("Server"); s != oldServer {
					t.Fatalf("served by %q, want the old binary's %q", s, oldServer)
				}
			}
			// The master supervises again: one more worker on TTIN, a clean exit on TERM.
			ready := g.logs.count("worker ready")
			syscall.Kill(pid1, syscall.SIGTTIN)
			g.waitLog("worker ready", ready+1, 30*time.Second)
			syscall.Kill(pid1, syscall.SIGTERM)
			if code := g.wait(30 * time.Second); code != 0 {
				t.Errorf("exit code %d", code)
			}
		})
	}
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestWorkerLostDuringAFailedUpgrade: a worker that dies while a new binary hangs is
// reaped by that binary, so no exit will ever reach the restored one; it must not keep
// the dead worker in its table, but replace it.
func TestWorkerLostDuringAFailedUpgrade(t *testing.T) {
	g, bin, pid1 := startAsPID1(t)
	replaceBinary(t, bin, "9.9.9-hangs", "gorn_fault_hang")
	workers := childPids(pid1)
	ready := g.logs.count("worker ready")
	syscall.Kill(pid1, syscall.SIGUSR2)
	g.waitExec(pid1)
	syscall.Kill(workers[0], syscall.SIGKILL)
	g.waitLog("binary upgrade rolled back", 1, 30*time.Second)
	g.waitLog("handed-over workers are gone", 1, 5*time.Second)
	g.waitLog("worker ready", ready+1, 30*time.Second)
	if got := childPids(pid1); len(got) != 2 || slicesEqual(got, workers) {
		t.Errorf("workers %v after losing one of %v, want it replaced", got, workers)
	}
}

// waitExec waits until pid runs the binary that replaced its own on disk: the running
// one's exe link says "(deleted)" until then.
func (g *gorn) waitExec(pid int) {
	g.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); strings.HasSuffix(exe, "(deleted)"); exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)) {
		if time.Now().After(deadline) {
			g.t.Fatalf("the new binary was not exec'd:\n%s", g.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStopDuringAFailedUpgrade: a TERM that reaches a new binary hanging before its loop
// runs (as PID 1, which ignores a signal it has no handler for) is not lost: the restored
// binary shuts down gracefully.
func TestStopDuringAFailedUpgrade(t *testing.T) {
	g, bin, pid1 := startAsPID1(t)
	replaceBinary(t, bin, "9.9.9-hangs", "gorn_fault_hang")
	syscall.Kill(pid1, syscall.SIGUSR2)
	g.waitExec(pid1)
	// Go's runtime handles SIGTERM from its first instruction (exit 2, as PID 1, until
	// signal.Notify); the new image asks for it first thing in main, well within a second,
	// and then hangs for the 10 s of the rollback guard.
	time.Sleep(time.Second)
	syscall.Kill(pid1, syscall.SIGTERM)
	g.waitLog("binary upgrade rolled back", 1, 30*time.Second)
	if code := g.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
	if g.logs.count(`"reason":"shutdown"`) != 2 {
		t.Errorf("the workers were not stopped gracefully:\n%s", g.logs.String())
	}
}

// TestDumpOfAnAdoptedWorker: the stack-dump pipes go along with a USR2 upgrade, so a
// worker the new binary adopted is still dumped as records naming it when it crashes.
func TestDumpOfAnAdoptedWorker(t *testing.T) {
	dir := t.TempDir()
	// A slow import keeps the adopted worker in place while its replacement boots.
	writeFile(t, filepath.Join(dir, "slowboot.py"), "import time\n\ntime.sleep(3)\n\n\ndef application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n")
	g := startGorn(t, gornOpts{dir: dir}, "-w", "1", "slowboot")
	old := g.workerPids()
	if len(old) != 1 {
		t.Fatalf("workers %v, want one", old)
	}
	g.signal(syscall.SIGUSR2)
	g.waitLog("binary upgrade: adopted", 1, 60*time.Second)
	if err := syscall.Kill(old[0], syscall.SIGSEGV); err != nil {
		t.Fatalf("the adopted worker is gone already: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, rec := range g.logLines() {
			msg, _ := rec["msg"].(string)
			if rec["logger"] == "worker.faulthandler" && rec["pid"] == float64(old[0]) && strings.Contains(msg, "Segmentation fault") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stack-dump record of the adopted worker %d:\n%s", old[0], g.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
