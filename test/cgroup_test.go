package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/cgroup/cgrouptest"
	"github.com/gornhq/gorn/internal/loadgen"
)

// inGroups returns a command prefix that moves the shell into each cgroup dir, then execs
// gorn, so gorn is sized from those limits from its first instruction.
func inGroups(dirs ...string) []string {
	script := ""
	for _, d := range dirs {
		script += fmt.Sprintf("echo $$ > %s/cgroup.procs && ", d)
	}
	return []string{"sh", "-c", script + `exec "$0" "$@"`}
}

// waitWorkers waits until the master has exactly n worker children that stay put.
func waitWorkers(t *testing.T, g *gorn, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	stable := 0
	for {
		if len(g.workerPids()) == n {
			if stable++; stable >= 10 {
				return
			}
		} else {
			stable = 0
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %d workers, have %v:\n%s", n, g.workerPids(), g.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCgroupCPUQuotaSizesWorkers: without -w, the worker count follows the tightest CPU
// quota on the way up the cgroup tree, and the log says why.
func TestCgroupCPUQuotaSizesWorkers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		group   func(t *testing.T) string // the cgroup gorn runs in
		workers int
		why     string
	}{
		{"quota 1.5", func(t *testing.T) string {
			g := cgrouptest.NewV1(t, "cpu", fmt.Sprintf("gorn-test-quota-%d", os.Getpid()))
			g.SetCPUQuota(150000, 100000)
			return g.Dir()
		}, 4, "workers=4 (sync: 2*1.5+1; cpu quota 150000/100000 from cgroup v1"},
		{"parent quota binds a child without one", func(t *testing.T) string {
			parent := cgrouptest.NewV1(t, "cpu", fmt.Sprintf("gorn-test-parent-%d", os.Getpid()))
			parent.SetCPUQuota(100000, 100000)
			return parent.Child("leaf").Dir()
		}, 3, "workers=3 (sync: 2*1+1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := startGorn(t, gornOpts{wrap: inGroups(tc.group(t)), workers: tc.workers}, "app:app")
			waitWorkers(t, g, tc.workers, 30*time.Second)
			if !strings.Contains(g.logs.String(), tc.why) {
				t.Errorf("the log does not say why %d:\n%s", tc.workers, g.logs.String())
			}
		})
	}
}

// ballastApp writes hungry.py, an app holding 100 MiB from its import on, into a new
// directory, and makes a cgroup v1 memory group named after group with a 320 MiB limit.
func ballastApp(t *testing.T, group string) (string, *cgrouptest.Group) {
	mem := cgrouptest.NewV1(t, "memory", fmt.Sprintf("%s-%d", group, os.Getpid()))
	mem.SetMemoryLimit(320 << 20)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hungry.py"), []byte(`BALLAST = b"x" * (100 << 20)

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
`), 0o644)
	return dir, mem
}

func TestCgroupMemoryLimitCapsWorkers(t *testing.T) {
	// Each worker holds ~100 MiB; 85% of 320 MiB minus the master fits two, while the two
	// CPUs of this machine alone would call for 5 sync workers.
	dir, mem := ballastApp(t, "gorn-test-mem")
	g := startGorn(t, gornOpts{dir: dir, wrap: inGroups(mem.Dir()), workers: 1}, "--cpus", "2", "hungry")
	waitWorkers(t, g, 2, 30*time.Second)
	if !strings.Contains(g.logs.String(), "memory cap: 2 workers fit") {
		t.Errorf("the log does not explain the memory cap:\n%s", g.logs.String())
	}
	g.signal(syscall.SIGTTIN) // no room for a third
	g.waitLog("TTIN refused", 1, 10*time.Second)
	waitWorkers(t, g, 2, 10*time.Second)
	if code, _ := get(t, g.url("/")); code != 200 {
		t.Errorf("status %d", code)
	}
}

// startInOneCPU starts the example, sized automatically and re-sized every second, in a
// new cgroup with a quota of one CPU (3 sync workers).
func startInOneCPU(t *testing.T, name string) (*cgrouptest.Group, *gorn) {
	cpu := cgrouptest.NewV1(t, "cpu", fmt.Sprintf("gorn-test-%s-%d", name, os.Getpid()))
	cpu.SetCPUQuota(100000, 100000)
	g := startGorn(t, gornOpts{wrap: inGroups(cpu.Dir()), workers: 3}, "--resize-interval", "1", "app:app")
	waitWorkers(t, g, 3, 30*time.Second)
	return cpu, g
}

func TestCgroupQuotaChangeIsFollowed(t *testing.T) {
	cpu, g := startInOneCPU(t, "resize")
	cpu.SetCPUQuota(200000, 100000) // in-place pod resize: 2 CPUs -> 5 sync workers
	waitWorkers(t, g, 5, 30*time.Second)
	cpu.SetCPUQuota(50000, 100000) // 0.5 CPU -> 2*0.5+1 = 2
	waitWorkers(t, g, 2, 30*time.Second)
	if code, _ := get(t, g.url("/")); code != 200 {
		t.Errorf("status %d", code)
	}
}

// TestCgroupWaitingLoadAddsWorkers: sync workers that are always busy but use little of
// the CPU quota (requests wait on a backend) get company one worker at a time, up to
// 4*cpus+1; once the load is gone the pool steps back to the CPU rule's count.
func TestCgroupWaitingLoadAddsWorkers(t *testing.T) {
	_, g := startInOneCPU(t, "adapt")
	l := loadgen.Start(g.addr, 24, "/work?cpu_ms=1&io_ms=20")
	g.waitLog("requests wait on I/O; one more worker", 1, 30*time.Second)
	waitWorkers(t, g, 5, 60*time.Second) // 4*1+1
	if fails := l.Finish(); len(fails) > 0 {
		t.Errorf("%d failed requests while the pool grew:\n%s", len(fails), strings.Join(fails, "\n"))
	}
	g.waitLog("one worker fewer, toward the CPU rule's 3", 1, 30*time.Second)
	waitWorkers(t, g, 3, 60*time.Second)
}

// sharingApp maps a file read-only and reads every page at import: each worker maps the
// same 100 MiB of page cache, which is in its PSS (a share of it) but not in its USS once
// a second worker maps it too.
const sharingApp = `import mmap, os
with open(os.environ["SHARED_FILE"], "rb") as f:
    SHARED = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
TOTAL = sum(SHARED[i] for i in range(0, len(SHARED), 4096))

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d" % TOTAL]
`

// TestCgroupMemoryCapCountsSharedPagesOnce: workers that share most of their memory are
// capped by what one more costs (its USS), not by their PSS. Under 320 MiB, the first
// worker alone holds the 100 MiB it maps (2 fit); once two share it, one more costs only
// its own pages and the count goes straight to the CPU rule's 5, where a cap by PSS
// (about 60 MiB each with two sharing) would stop at 4.
func TestCgroupMemoryCapCountsSharedPagesOnce(t *testing.T) {
	mem := cgrouptest.NewV1(t, "memory", fmt.Sprintf("gorn-test-shared-%d", os.Getpid()))
	mem.SetMemoryLimit(320 << 20)
	dir := t.TempDir()
	shared := filepath.Join(dir, "shared.bin")
	if err := os.WriteFile(shared, []byte(strings.Repeat("\x01", 100<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "sharing.py"), []byte(sharingApp), 0o644)
	g := startGorn(t, gornOpts{dir: dir, env: []string{"SHARED_FILE=" + shared}, wrap: inGroups(mem.Dir()), workers: 1},
		"--cpus", "2", "--resize-interval", "1", "sharing")
	waitWorkers(t, g, 5, 60*time.Second)
	logs := g.logs.String()
	if !strings.Contains(logs, `"msg":"resizing","from":2,"to":5`) {
		t.Errorf("the count did not go from 2 straight to 5 once two workers shared the file:\n%s", logs)
	}
	if code, body := get(t, g.url("/")); code != 200 || body != fmt.Sprint(100<<20/4096) {
		t.Errorf("status %d %q", code, body)
	}
}

// TestCgroupMemoryLimitWithPreload: the app of TestCgroupMemoryLimitCapsWorkers (100 MiB of
// ballast at import) under the same 320 MiB, with --preload: the mold holds the ballast and
// the workers share it, so one more worker costs only its own pages and the CPU rule's 5
// fit at the first measurement, where each worker importing the app itself fits 2.
func TestCgroupMemoryLimitWithPreload(t *testing.T) {
	dir, mem := ballastApp(t, "gorn-test-preload")
	g := startGorn(t, gornOpts{dir: dir, wrap: inGroups(mem.Dir()), workers: 1}, "--preload", "--cpus", "2", "--resize-interval", "1", "hungry")
	waitWorkers(t, g, 5, 60*time.Second)
	if logs := g.logs.String(); !strings.Contains(logs, `"msg":"resizing","from":1,"to":5`) {
		t.Errorf("the count did not go from the measured worker straight to 5:\n%s", logs)
	}
	if code, _ := get(t, g.url("/")); code != 200 {
		t.Errorf("status %d", code)
	}
}
