package cgroup_test

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/cgroup"
	"github.com/gornhq/gorn/internal/cgroup/cgrouptest"
	"github.com/gornhq/gorn/internal/testenv"
)

// These tests use real cgroup v1 groups (root, a writable v1 hierarchy; otherwise they
// skip) and detect the limits of a child process placed in them, through Options.PID.

// sleeper starts a process that lives until the test ends.
func sleeper(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sleep: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd.Process.Pid
}

func TestRealV1CPUQuota(t *testing.T) {
	g := cgrouptest.NewV1(t, "cpu", "gorn-test")
	g.SetCPUQuota(150000, 100000)
	pid := sleeper(t)
	g.AddProc(pid)

	l := cgroup.Detect(cgroup.Options{PID: pid})
	want := cgroup.CPUQuota{Quota: 150000, Period: 100000, Version: cgroup.V1, File: filepath.Join(g.Dir(), "cpu.cfs_quota_us")}
	if l.CPUQuota == nil || *l.CPUQuota != want {
		t.Fatalf("CPUQuota = %v, want %v (notes %q)", l.CPUQuota, want, l.Notes)
	}
	if got, want := l.CPUs(), min(1.5, float64(l.Affinity)); got != want {
		t.Errorf("CPUs() = %v, want %v", got, want)
	}
	if l.CPU.Dir != g.Dir() {
		t.Errorf("CPU.Dir = %q, want %q", l.CPU.Dir, g.Dir())
	}
}

func TestRealV1NestedCPUQuota(t *testing.T) {
	parent := cgrouptest.NewV1(t, "cpu", "gorn-test")
	parent.SetCPUQuota(100000, 100000)
	leaf := parent.Child("leaf") // no quota of its own: -1
	pid := sleeper(t)
	leaf.AddProc(pid)

	l := cgroup.Detect(cgroup.Options{PID: pid})
	want := cgroup.CPUQuota{Quota: 100000, Period: 100000, Version: cgroup.V1, File: filepath.Join(parent.Dir(), "cpu.cfs_quota_us")}
	if l.CPUQuota == nil || *l.CPUQuota != want {
		t.Fatalf("CPUQuota = %v, want %v (notes %q)", l.CPUQuota, want, l.Notes)
	}
	if got := l.CPUs(); got != 1 {
		t.Errorf("CPUs() = %v, want 1", got)
	}
}

func TestRealV1Memory(t *testing.T) {
	g := cgrouptest.NewV1(t, "memory", "gorn-test")
	g.SetMemoryLimit(64 << 20)
	pid := sleeper(t)
	g.AddProc(pid)

	l := cgroup.Detect(cgroup.Options{PID: pid})
	want := cgroup.MemoryLimit{Bytes: 64 << 20, Version: cgroup.V1, File: filepath.Join(g.Dir(), "memory.limit_in_bytes")}
	if l.MemoryLimit == nil || *l.MemoryLimit != want {
		t.Fatalf("MemoryLimit = %v, want %v (notes %q)", l.MemoryLimit, want, l.Notes)
	}
	oom, err := cgroup.OOMKills(cgroup.Options{PID: pid})
	if err != nil || oom.Kills != 0 {
		t.Fatalf("OOMKills = %+v, %v; want 0 kills in a new group", oom, err)
	}
}

// TestRealV1OOMKill has the kernel OOM-kill a process in a 16MiB group and checks that
// OOMKills, read through a bystander in the same group, counts it.
func TestRealV1OOMKill(t *testing.T) {
	if _, err := exec.LookPath("dd"); err != nil {
		testenv.Missing(t, "needs dd")
	}
	if b, _ := os.ReadFile("/proc/sys/vm/overcommit_memory"); strings.TrimSpace(string(b)) == "2" {
		testenv.Missing(t, "vm.overcommit_memory=2: allocations fail with ENOMEM instead of reaching the OOM killer")
	}
	g := cgrouptest.NewV1(t, "memory", "gorn-test")
	g.SetMemoryLimit(16 << 20)
	bystander := sleeper(t)
	g.AddProc(bystander)

	// The shell waits for a line so it can be moved into the group before dd allocates.
	hog := exec.Command("sh", "-c", "read _ && exec dd if=/dev/zero of=/dev/null bs=64M count=1")
	stdin, err := hog.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := hog.Start(); err != nil {
		t.Fatalf("starting sh: %v", err)
	}
	g.AddProc(hog.Process.Pid)
	_, _ = io.WriteString(stdin, "go\n")
	done := make(chan error, 1)
	go func() { done <- hog.Wait() }()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		_ = hog.Process.Kill()
		t.Fatalf("dd was not OOM-killed within 10s: %v", <-done)
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("dd ended with %v, want SIGKILL", err)
	}

	oom, err := cgroup.OOMKills(cgroup.Options{PID: bystander})
	want := cgroup.OOMCount{Kills: 1, File: filepath.Join(g.Dir(), "memory.oom_control")}
	if err != nil || oom != want {
		t.Errorf("OOMKills = %+v, %v; want %+v", oom, err, want)
	}
}

// TestRealV1CPUStatCountsThrottling: a process that spins under a quota of a tenth of a CPU
// is throttled in most periods, and ReadCPUStat sees it.
func TestRealV1CPUStatCountsThrottling(t *testing.T) {
	g := cgrouptest.NewV1(t, "cpu", "gorn-test-stat")
	g.SetCPUQuota(10000, 100000)
	spin := exec.Command("sh", "-c", "while :; do :; done")
	if err := spin.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = spin.Process.Kill()
		_ = spin.Wait()
	})
	g.AddProc(spin.Process.Pid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := cgroup.ReadCPUStat(cgroup.V1, g.Dir(), "")
		if err != nil {
			t.Fatal(err)
		}
		if s.Throttling && s.Throttled >= 3 && s.ThrottledTime > 0 && s.Periods >= s.Throttled && (!s.UsageOK || s.Usage > 0) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no throttling counted after 10 s under a 0.1 CPU quota: %+v", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
