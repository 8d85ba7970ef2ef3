package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/testenv"
)

// fixture lays out a fake root with /proc/self/{cgroup,mountinfo} and a cgroup mount.
func fixture(t *testing.T, cgroupLine, mountLine, mount string, files map[string]string) string {
	root := t.TempDir()
	write := func(p, s string) {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("proc/self/cgroup", cgroupLine+"\n")
	write("proc/self/mountinfo", mountLine+"\n")
	os.MkdirAll(filepath.Join(root, mount), 0o755)
	for p, s := range files {
		write(filepath.Join(mount, p), s)
	}
	return root
}

func read(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestCgroupV2Limit(t *testing.T) {
	root := fixture(t, "0::/", "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw", "/sys/fs/cgroup",
		map[string]string{"cgroup.controllers": "cpuset cpu io memory", "cgroup.subtree_control": "memory"})
	g, err := newCgroupLimit(root, 1.5)
	if err != nil {
		t.Fatal(err)
	}
	if g.version != 2 || !strings.HasPrefix(g.dir, filepath.Join(root, "sys/fs/cgroup/gorn-bench-")) {
		t.Errorf("version %d dir %s", g.version, g.dir)
	}
	if got := read(t, filepath.Join(g.dir, "cpu.max")); got != "150000 100000" {
		t.Errorf("cpu.max %q", got)
	}
	if got := read(t, filepath.Join(root, "sys/fs/cgroup/cgroup.subtree_control")); got != "+cpu" {
		t.Errorf("the cpu controller was not enabled for children: %q", got)
	}
	os.WriteFile(filepath.Join(g.dir, "cpu.stat"), []byte("usage_usec 2500000\nuser_usec 2000000\nnr_periods 40\nnr_throttled 7\nthrottled_usec 123000\n"), 0o644)
	u := g.usage()
	if !u.cpuOK || u.cpu != 2500*time.Millisecond || u.periods != 40 || u.throttled != 7 || u.throttledNs != 123e6 || !u.throttleOK {
		t.Errorf("usage %+v", u)
	}
	os.WriteFile(filepath.Join(g.dir, "cgroup.procs"), []byte("12\n34\n"), 0o644)
	if p := g.pids(); len(p) != 2 || p[1] != 34 {
		t.Errorf("pids %v", p)
	}
	if g.budget() != 1.5 || !strings.Contains(g.describe(), "cgroup v2 CPU quota") {
		t.Errorf("budget %v, %s", g.budget(), g.describe())
	}
}

func TestCgroupV2WithoutCPU(t *testing.T) {
	root := fixture(t, "0::/", "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw", "/sys/fs/cgroup",
		map[string]string{"cgroup.controllers": "memory pids"})
	if _, err := newCgroupLimit(root, 1); err == nil || !strings.Contains(err.Error(), "no cpu controller") {
		t.Errorf("want a clear error, got %v", err)
	}
}

func TestCgroupV1Limit(t *testing.T) {
	root := fixture(t, "3:cpu,cpuacct:/user\n0::/", "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
		"/sys/fs/cgroup/cpu,cpuacct", map[string]string{"user/tasks": ""})
	stale := filepath.Join(root, "sys/fs/cgroup/cpu,cpuacct/gorn-bench-run-1")
	recent := filepath.Join(root, "sys/fs/cgroup/cpu,cpuacct/gorn-bench-run-2")
	os.Mkdir(stale, 0o755)
	os.Mkdir(recent, 0o755)
	os.Chtimes(stale, time.Now().Add(-2*time.Hour), time.Now().Add(-2*time.Hour))
	g, err := newCgroupLimit(root, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("a group left behind an hour ago is still there: %v", err)
	}
	if _, err := os.Stat(recent); err != nil {
		t.Errorf("a recent group was removed: %v", err)
	}
	if g.version != 1 || g.home != filepath.Join(root, "sys/fs/cgroup/cpu,cpuacct/user/tasks") {
		t.Errorf("version %d home %s", g.version, g.home)
	}
	if q, p := read(t, filepath.Join(g.dir, "cpu.cfs_quota_us")), read(t, filepath.Join(g.dir, "cpu.cfs_period_us")); q != "50000" || p != "100000" {
		t.Errorf("quota %s period %s", q, p)
	}
	os.WriteFile(filepath.Join(g.dir, "cpu.stat"), []byte("nr_periods 10\nnr_throttled 3\nthrottled_time 4000000\n"), 0o644)
	os.WriteFile(filepath.Join(g.dir, "cpuacct.usage"), []byte("900000000\n"), 0o644)
	u := g.usage()
	if !u.cpuOK || u.cpu != 900*time.Millisecond || u.periods != 10 || u.throttled != 3 || u.throttledNs != 4e6 {
		t.Errorf("usage %+v", u)
	}
	os.Remove(filepath.Join(g.dir, "cpuacct.usage"))
	if u := g.usage(); u.cpuOK {
		t.Errorf("no cpuacct.usage, yet CPU time %v", u.cpu)
	}
	for _, f := range []string{"cpu.stat", "cpu.cfs_quota_us", "cpu.cfs_period_us"} {
		os.Remove(filepath.Join(g.dir, f))
	}
	if err := g.close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if _, err := os.Stat(g.dir); !os.IsNotExist(err) {
		t.Errorf("%s is still there", g.dir)
	}
}

func TestNoCgroupHierarchy(t *testing.T) {
	root := fixture(t, "0::/", "20 1 0:5 / /proc rw - proc proc rw", "/sys", nil)
	if _, err := newCgroupLimit(root, 1); err == nil || !strings.Contains(err.Error(), "cpu controller") {
		t.Errorf("want a clear error, got %v", err)
	}
}

func TestAffinityPodsGetTheirOwnCPUs(t *testing.T) {
	n := Machine()
	if n < 2 {
		testenv.Missing(t, "one CPU: two pods cannot have CPUs of their own")
	}
	a, err := newAffinityLimit(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newAffinityLimit(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.cpus) != 1 || len(b.cpus) != 1 || a.cpus[0] == b.cpus[0] {
		t.Errorf("two 1-CPU pods share CPUs: %v and %v", a.cpus, b.cpus)
	}
	c, err := newAffinityLimit(1.5, 0)
	if err != nil || len(c.cpus) != 2 || c.budget() != 2 || !strings.Contains(c.describe(), "weaker") {
		t.Errorf("1.5 CPUs: %v %v", c, err)
	}
	if _, err := newAffinityLimit(float64(n+1), 0); !IsUsage(err) {
		t.Errorf("more CPUs than the machine: %v", err)
	}
}
