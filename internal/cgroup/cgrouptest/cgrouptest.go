// Package cgrouptest creates real cgroup v1 groups for integration tests: a group with a
// CPU quota or a memory limit, processes moved into it, nested children, and cleanup that
// moves the processes back out and removes the directories when the test ends.
//
// It needs root, a cgroup v1 hierarchy for the controller (a v1-only or hybrid host) and a
// writable cgroupfs; otherwise NewV1 skips the test (fails it under GORN_TEST_STRICT=1) and
// says which of those is missing.
// Groups are created directly under the hierarchy's mount point, with a random suffix so
// that concurrent test runs do not collide.
package cgrouptest

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/cgroup"
	"github.com/gornhq/gorn/internal/testenv"
)

// Group is a cgroup v1 directory created for a test.
type Group struct {
	t          testing.TB
	controller string
	dir        string
}

// NewV1 creates a cgroup named name plus a random suffix under the v1 mount of controller
// ("cpu" or "memory"), found through /proc/self/mountinfo, and removes it when the test
// ends. It skips the test (testenv.Missing) when not root, when the controller is not on cgroup v1, or when
// the hierarchy is not writable.
func NewV1(t testing.TB, controller, name string) *Group {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "cgrouptest: creating cgroups needs root")
	}
	var c cgroup.Controller
	switch l := cgroup.Detect(cgroup.Options{}); controller {
	case "cpu":
		c = l.CPU
	case "memory":
		c = l.Memory
	default:
		t.Fatalf("cgrouptest: controller %q: want cpu or memory", controller)
	}
	if c.Version != cgroup.V1 || c.Mount == "" {
		testenv.Missing(t, "cgrouptest: the %s controller is not on a visible cgroup v1 hierarchy (found v%d %q)",
			controller, c.Version, c.Mount)
	}
	dir, err := os.MkdirTemp(c.Mount, name+"-")
	if err != nil {
		testenv.Missing(t, "cgrouptest: cgroup v1 %s hierarchy at %s is not writable: %v", controller, c.Mount, err)
	}
	return newGroup(t, controller, dir)
}

func newGroup(t testing.TB, controller, dir string) *Group {
	g := &Group{t: t, controller: controller, dir: dir}
	t.Cleanup(g.remove)
	if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
		t.Fatalf("cgrouptest: %s is not a cgroup directory: %v", dir, err)
	}
	return g
}

// Dir returns the group's directory, e.g. /sys/fs/cgroup/cpu/gorn-test-123.
func (g *Group) Dir() string { return g.dir }

// Child creates a nested group named name inside g; it is removed before g.
func (g *Group) Child(name string) *Group {
	g.t.Helper()
	dir := filepath.Join(g.dir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		g.t.Fatalf("cgrouptest: creating %s: %v", dir, err)
	}
	return newGroup(g.t, g.controller, dir)
}

// SetCPUQuota sets cpu.cfs_period_us to period and cpu.cfs_quota_us to quota
// (microseconds; a quota of -1 removes the limit).
func (g *Group) SetCPUQuota(quota, period int64) {
	g.t.Helper()
	g.write("cpu.cfs_period_us", strconv.FormatInt(period, 10))
	g.write("cpu.cfs_quota_us", strconv.FormatInt(quota, 10))
}

// SetMemoryLimit sets memory.limit_in_bytes (-1 removes the limit).
func (g *Group) SetMemoryLimit(bytes int64) {
	g.t.Helper()
	g.write("memory.limit_in_bytes", strconv.FormatInt(bytes, 10))
}

// AddProc moves process pid (all its threads) into the group.
func (g *Group) AddProc(pid int) {
	g.t.Helper()
	g.write("cgroup.procs", strconv.Itoa(pid))
}

func (g *Group) write(file, value string) {
	g.t.Helper()
	f := filepath.Join(g.dir, file)
	if err := os.WriteFile(f, []byte(value), 0); err != nil {
		g.t.Fatalf("cgrouptest: writing %q to %s: %v", value, f, err)
	}
}

// remove moves the group's processes to its parent and removes the directory. Processes
// that exit meanwhile are no obstacle; an empty v1 group can be removed at once, but the
// kernel may briefly report EBUSY while exiting tasks leave, hence the retries.
func (g *Group) remove() {
	parent := filepath.Join(filepath.Dir(g.dir), "cgroup.procs")
	deadline := time.Now().Add(2 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(g.dir, "cgroup.procs"))
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		for _, pid := range strings.Fields(string(b)) {
			if err := os.WriteFile(parent, []byte(pid), 0); err != nil && !errors.Is(err, syscall.ESRCH) {
				g.t.Errorf("cgrouptest: moving pid %s out of %s: %v", pid, g.dir, err)
			}
		}
		err = os.Remove(g.dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			g.t.Errorf("cgrouptest: removing %s: %v", g.dir, err)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
