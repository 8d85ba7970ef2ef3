package bench

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/internal/cgroup"
	"github.com/gornhq/gorn/internal/sizing"
)

// Isolation modes (Options.Isolation).
const (
	IsolationAuto     = "auto"     // a cgroup when possible, else affinity
	IsolationCgroup   = "cgroup"   // a cgroup or an error
	IsolationAffinity = "affinity" // CPU affinity only
)

// period is the CFS period the bench's cgroups use: the kernel's default, as in pods.
const period = 100000

// limit holds a server tree to a CPU budget while it runs.
type limit interface {
	// describe says what the limit is, for the report.
	describe() string
	// budget is the CPUs the server may use: the quota, or the whole CPUs pinned to.
	budget() float64
	// start starts cmd inside the limit, so the server is limited from its first
	// instruction (it sizes itself from what it sees then).
	start(cmd *exec.Cmd) error
	// usage returns the cumulative counters; ok is false for a counter not kept.
	usage() usage
	// pids lists the processes inside (nil when the limit does not know them).
	pids() []int
	// close removes the limit, killing what is left inside.
	close() error
}

// usage is a limit's cumulative counters.
type usage struct {
	cpu         time.Duration
	cpuOK       bool
	periods     int64
	throttled   int64
	throttledNs int64
	throttleOK  bool
}

// cgroupLimit is a cgroup with a CFS quota, created for one server tree.
type cgroupLimit struct {
	version int
	dir     string
	cpus    float64
	// v1: the thread that forks the server joins the group for the fork (its "tasks"
	// file) and goes back to home afterwards; the rest of the bench stays outside.
	home string
}

// newLimit creates the CPU limit for cpus CPUs in the given mode for the pod-th server of
// a run; note says why a weaker mode was used.
func newLimit(mode string, cpus float64, pod int) (l limit, note string, err error) {
	if mode != IsolationAffinity {
		cg, err := newCgroupLimit("", cpus)
		if err == nil {
			return cg, "", nil
		}
		if mode == IsolationCgroup {
			return nil, "", err
		}
		note = fmt.Sprintf("no cgroup (%v): falling back to CPU affinity, which is weaker", err)
	}
	a, err := newAffinityLimit(cpus, pod)
	if err != nil {
		return nil, "", err
	}
	return a, note, nil
}

// newCgroupLimit creates a cgroup with a quota of cpus under the hierarchy that holds
// the cpu controller, as cgroup.Detect finds it (v1 wins on hybrid hosts, as for gorn's own
// sizing). root is "" except in tests, which pass a fixture tree.
func newCgroupLimit(root string, cpus float64) (*cgroupLimit, error) {
	if root == "" && os.Geteuid() != 0 {
		return nil, errors.New("creating a cgroup needs root")
	}
	l := cgroup.Detect(cgroup.Options{Root: root})
	c := l.CPU
	if c.Mount == "" {
		return nil, fmt.Errorf("finding the cpu controller: no visible cgroup hierarchy holds it (%s)", strings.Join(l.Notes, "; "))
	}
	mount := filepath.Join(root, c.Mount)
	quota := strconv.FormatInt(max(1000, int64(math.Round(cpus*period))), 10)
	g := &cgroupLimit{version: c.Version, cpus: cpus}
	if c.Version == cgroup.V2 {
		if err := enableCPU(mount); err != nil {
			return nil, err
		}
	} else {
		g.home = filepath.Join(root, c.Dir, "tasks")
	}
	removeStale(mount)
	dir, err := os.MkdirTemp(mount, "gorn-bench-run-")
	if err != nil {
		return nil, fmt.Errorf("creating a cgroup under %s: %w", mount, err)
	}
	g.dir = dir
	if c.Version == cgroup.V2 {
		err = writeFile(filepath.Join(dir, "cpu.max"), quota+" "+strconv.Itoa(period))
	} else {
		err = writeFile(filepath.Join(dir, "cpu.cfs_period_us"), strconv.Itoa(period))
		if err == nil {
			err = writeFile(filepath.Join(dir, "cpu.cfs_quota_us"), quota)
		}
	}
	if err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("setting the CPU quota of %s: %w", dir, err)
	}
	return g, nil
}

// staleAge is how old a bench's empty cgroup must be to count as left behind: a run lives
// minutes (--duration is at most 10), so no running bench still owns one this old.
const staleAge = time.Hour

// removeStale removes empty cgroups that a bench killed with SIGKILL left behind (its
// servers leave when it dies, their groups stay). rmdir fails on a group with processes,
// so a live run's group is never touched.
func removeStale(mount string) {
	old, _ := filepath.Glob(filepath.Join(mount, "gorn-bench-run-*"))
	for _, d := range old {
		if st, err := os.Stat(d); err == nil && time.Since(st.ModTime()) > staleAge {
			_ = os.Remove(d)
		}
	}
}

// enableCPU makes the cpu controller available to children of a v2 mount's root.
func enableCPU(mount string) error {
	b, err := os.ReadFile(filepath.Join(mount, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("reading the cgroup v2 controllers: %w", err)
	}
	if !containsWord(string(b), "cpu") {
		return fmt.Errorf("cgroup v2 at %s has no cpu controller (it is bound to a v1 hierarchy or not delegated)", mount)
	}
	sub := filepath.Join(mount, "cgroup.subtree_control")
	if b, err := os.ReadFile(sub); err == nil && containsWord(string(b), "cpu") {
		return nil
	}
	if err := writeFile(sub, "+cpu"); err != nil {
		return fmt.Errorf("enabling the cpu controller in %s: %w", sub, err)
	}
	return nil
}

func containsWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

func writeFile(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("writing %q to %s: %w", value, path, err)
	}
	return nil
}

func (g *cgroupLimit) describe() string {
	return fmt.Sprintf("cgroup v%d CPU quota, a new group for each server under %s", g.version, filepath.Dir(g.dir))
}

func (g *cgroupLimit) budget() float64 { return g.cpus }

func (g *cgroupLimit) start(cmd *exec.Cmd) error {
	if g.version == cgroup.V2 {
		// clone3(CLONE_INTO_CGROUP): the child is born inside the group.
		fd, err := unix.Open(g.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening %s: %w", g.dir, err)
		}
		defer unix.Close(fd)
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting %s in %s: %w", cmd.Path, g.dir, err)
		}
		return nil
	}
	return onThread(func(tid int) error {
		return writeFile(filepath.Join(g.dir, "tasks"), strconv.Itoa(tid))
	}, func(tid int) error {
		return writeFile(g.home, strconv.Itoa(tid))
	}, cmd)
}

// onThread starts cmd from a locked OS thread after enter(tid) and calls leave(tid)
// after: a forked child inherits its thread's cgroup and CPU affinity. If leave fails the
// thread stays locked, so it ends with its goroutine instead of running Go code inside the
// limit.
func onThread(enter, leave func(tid int) error, cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		tid := unix.Gettid()
		if err := enter(tid); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err := cmd.Start()
		if lerr := leave(tid); lerr != nil {
			if err == nil {
				_ = cmd.Process.Kill()
				_, _ = cmd.Process.Wait()
			}
			errc <- errors.Join(err, lerr)
			return
		}
		runtime.UnlockOSThread()
		if err != nil {
			err = fmt.Errorf("starting %s: %w", cmd.Path, err)
		}
		errc <- err
	}()
	return <-errc
}

func (g *cgroupLimit) usage() usage {
	s, err := cgroup.ReadCPUStat(g.version, g.dir, g.dir)
	if err != nil {
		return usage{}
	}
	return usage{
		cpu: s.Usage, cpuOK: s.UsageOK,
		periods: s.Periods, throttled: s.Throttled, throttledNs: s.ThrottledTime.Nanoseconds(), throttleOK: s.Throttling,
	}
}

func (g *cgroupLimit) pids() []int {
	b, err := os.ReadFile(filepath.Join(g.dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// close kills what is left in the group and removes it; the kernel may report EBUSY for a
// moment while killed tasks leave.
func (g *cgroupLimit) close() error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, pid := range g.pids() {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		err := os.Remove(g.dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("removing the cgroup %s: %w", g.dir, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// affinityLimit pins the server tree to whole CPUs with sched_setaffinity: the
// unprivileged fallback. It is weaker than a quota: 1.5 CPUs become 2 whole ones, there is
// no throttling to read, and the load generator may still run on the same CPUs.
type affinityLimit struct {
	set  unix.CPUSet
	cpus []int
}

func newAffinityLimit(cpus float64, pod int) (*affinityLimit, error) {
	var mine unix.CPUSet
	if err := unix.SchedGetaffinity(0, &mine); err != nil {
		return nil, fmt.Errorf("reading the CPU affinity: %w", err)
	}
	var all []int
	for i := 0; i < len(mine)*64; i++ {
		if mine.IsSet(i) {
			all = append(all, i)
		}
	}
	k := int(math.Ceil(cpus - 1e-9))
	if k > len(all) {
		return nil, usagef("--cpus %s: this process may run on %d CPUs only", sizing.FormatCPUs(cpus), len(all))
	}
	// From the last CPU down, the pod-th block of k: the generator tends to start on CPU 0,
	// and pods of a layout get CPUs of their own while there are enough.
	a := &affinityLimit{}
	for i := range k {
		c := all[(len(all)-1-pod*k-i+len(all)*(pod+1)*k)%len(all)]
		a.cpus = append(a.cpus, c)
		a.set.Set(c)
	}
	slices.Sort(a.cpus)
	return a, nil
}

func (a *affinityLimit) describe() string {
	return fmt.Sprintf("CPU affinity %v (fallback, weaker than a cgroup quota: whole CPUs only, no throttling counters, "+
		"and the load generator may share these CPUs)", a.cpus)
}

func (a *affinityLimit) start(cmd *exec.Cmd) error {
	var saved unix.CPUSet
	return onThread(func(int) error {
		if err := unix.SchedGetaffinity(0, &saved); err != nil {
			return fmt.Errorf("reading the CPU affinity: %w", err)
		}
		if err := unix.SchedSetaffinity(0, &a.set); err != nil {
			return fmt.Errorf("setting the CPU affinity: %w", err)
		}
		return nil
	}, func(int) error {
		if err := unix.SchedSetaffinity(0, &saved); err != nil {
			return fmt.Errorf("restoring the CPU affinity: %w", err)
		}
		return nil
	}, cmd)
}

func (a *affinityLimit) budget() float64 { return float64(len(a.cpus)) }
func (a *affinityLimit) usage() usage    { return usage{} }
func (a *affinityLimit) pids() []int     { return nil }
func (a *affinityLimit) close() error    { return nil }
