package cgroup

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func fakeAffinity(n int) func(int) (int, error) {
	return func(int) (int, error) { return n, nil }
}

// TestDetect runs Detect over the fixture trees in testdata/<name>/, each a miniature
// root holding proc/self/cgroup, proc/self/mountinfo and sys/fs/cgroup/... files.
func TestDetect(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		name     string
		pid      int
		affinity int
		cpu      Controller
		quota    *CPUQuota
		memory   Controller
		limit    *MemoryLimit
		cpus     float64
		notes    []string // substrings, each expected in some note; nil means no notes
	}{
		{
			name: "v2_limited",
			cpu:  Controller{V2, "/system.slice/app.service", "/sys/fs/cgroup", "/sys/fs/cgroup/system.slice/app.service"},
			quota: &CPUQuota{150000, 100000, V2,
				"/sys/fs/cgroup/system.slice/app.service/cpu.max"},
			memory: Controller{V2, "/system.slice/app.service", "/sys/fs/cgroup", "/sys/fs/cgroup/system.slice/app.service"},
			limit:  &MemoryLimit{512 << 20, V2, "/sys/fs/cgroup/system.slice/app.service/memory.max"},
			cpus:   1.5,
		},
		{
			name:   "v2_max",
			cpu:    Controller{V2, "/user.slice", "/sys/fs/cgroup", "/sys/fs/cgroup/user.slice"},
			memory: Controller{V2, "/user.slice", "/sys/fs/cgroup", "/sys/fs/cgroup/user.slice"},
			cpus:   4,
		},
		{
			name:   "v1_limited",
			cpu:    Controller{V1, "/docker/abc", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/docker/abc"},
			quota:  &CPUQuota{50000, 100000, V1, "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us"},
			memory: Controller{V1, "/docker/abc", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory/docker/abc"},
			limit:  &MemoryLimit{256 << 20, V1, "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes"},
			cpus:   0.5,
		},
		{
			name:   "v1_unlimited",
			cpu:    Controller{V1, "/docker/abc", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/docker/abc"},
			memory: Controller{V1, "/docker/abc", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory/docker/abc"},
			cpus:   4,
		},
		{
			name:   "hybrid",
			cpu:    Controller{V1, "/svc", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/svc"},
			quota:  &CPUQuota{200000, 100000, V1, "/sys/fs/cgroup/cpu,cpuacct/svc/cpu.cfs_quota_us"},
			memory: Controller{V1, "/svc", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory/svc"},
			limit:  &MemoryLimit{gib, V1, "/sys/fs/cgroup/memory/svc/memory.limit_in_bytes"},
			cpus:   2,
		},
		{
			name:   "hybrid_memory_v2",
			cpu:    Controller{V1, "/svc", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/svc"},
			memory: Controller{V2, "/svc", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/unified/svc"},
			limit:  &MemoryLimit{768 << 20, V2, "/sys/fs/cgroup/unified/svc/memory.high"},
			cpus:   4,
		},
		{
			name:   "parent_tighter_v1",
			cpu:    Controller{V1, "/kubepods/pod1/c1", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1"},
			quota:  &CPUQuota{150000, 100000, V1, "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us"},
			memory: Controller{V1, "/kubepods/pod1/c1", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory/kubepods/pod1/c1"},
			limit:  &MemoryLimit{512 << 20, V1, "/sys/fs/cgroup/memory/kubepods/pod1/memory.limit_in_bytes"},
			cpus:   1.5,
		},
		{
			name:   "parent_tighter_v2",
			cpu:    Controller{V2, "/kubepods/pod1/c1", "/sys/fs/cgroup", "/sys/fs/cgroup/kubepods/pod1/c1"},
			quota:  &CPUQuota{75000, 50000, V2, "/sys/fs/cgroup/kubepods/pod1/cpu.max"},
			memory: Controller{V2, "/kubepods/pod1/c1", "/sys/fs/cgroup", "/sys/fs/cgroup/kubepods/pod1/c1"},
			limit:  &MemoryLimit{256 << 20, V2, "/sys/fs/cgroup/kubepods/pod1/memory.high"},
			cpus:   1.5,
		},
		{
			name:   "namespaced",
			cpu:    Controller{V2, "/", "/sys/fs/cgroup", "/sys/fs/cgroup"},
			quota:  &CPUQuota{50000, 100000, V2, "/sys/fs/cgroup/cpu.max"},
			memory: Controller{V2, "/", "/sys/fs/cgroup", "/sys/fs/cgroup"},
			limit:  &MemoryLimit{128 << 20, V2, "/sys/fs/cgroup/memory.max"},
			cpus:   0.5,
		},
		{
			name:   "not_namespaced_v1",
			cpu:    Controller{V1, "/kubepods/burstable/pod1/c1", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct"},
			quota:  &CPUQuota{250000, 100000, V1, "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us"},
			memory: Controller{V1, "/kubepods/burstable/pod1/c1", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory"},
			limit:  &MemoryLimit{384 << 20, V1, "/sys/fs/cgroup/memory/memory.stat"},
			cpus:   2.5,
		},
		{
			name:   "not_namespaced_v2",
			cpu:    Controller{V2, "/kubepods.slice/pod1.slice/cri-c1.scope", "/sys/fs/cgroup", "/sys/fs/cgroup"},
			quota:  &CPUQuota{100000, 100000, V2, "/sys/fs/cgroup/cpu.max"},
			memory: Controller{V2, "/kubepods.slice/pod1.slice/cri-c1.scope", "/sys/fs/cgroup", "/sys/fs/cgroup"},
			limit:  &MemoryLimit{256 << 20, V2, "/sys/fs/cgroup/memory.max"},
			cpus:   1,
		},
		{
			name:   "outside_namespace",
			cpu:    Controller{Version: V2, Path: "/../sibling"},
			memory: Controller{Version: V2, Path: "/../sibling"},
			cpus:   4,
			notes:  []string{"cpu cgroup /../sibling is outside this cgroup namespace", "memory cgroup /../sibling is outside"},
		},
		{
			name:     "cpuset_smaller",
			affinity: 2,
			cpu:      Controller{V2, "/app", "/sys/fs/cgroup", "/sys/fs/cgroup/app"},
			quota:    &CPUQuota{400000, 100000, V2, "/sys/fs/cgroup/app/cpu.max"},
			memory:   Controller{V2, "/app", "/sys/fs/cgroup", "/sys/fs/cgroup/app"},
			cpus:     2,
		},
		{
			name:   "unreadable",
			cpu:    Controller{V1, "/app", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/app"},
			memory: Controller{V1, "/app", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory/app"},
			cpus:   4,
			notes: []string{
				"reading /sys/fs/cgroup/cpu,cpuacct/app/cpu.cfs_quota_us: ",
				"reading /sys/fs/cgroup/memory/app/memory.limit_in_bytes: ",
			},
		},
		{
			name:   "malformed",
			cpu:    Controller{V2, "/app/leaf", "/sys/fs/cgroup", "/sys/fs/cgroup/app/leaf"},
			quota:  &CPUQuota{300000, 100000, V2, "/sys/fs/cgroup/app/cpu.max"},
			memory: Controller{V2, "/app/leaf", "/sys/fs/cgroup", "/sys/fs/cgroup/app/leaf"},
			limit:  &MemoryLimit{gib, V2, "/sys/fs/cgroup/app/memory.max"},
			cpus:   3,
			notes: []string{
				`/proc/self/cgroup: parsing cgroup line "garbage"`,
				`/proc/self/mountinfo: parsing mountinfo line "this is not a mountinfo line"`,
				`ignoring /sys/fs/cgroup/app/leaf/cpu.max: parsing "abc"`,
				`ignoring /sys/fs/cgroup/app/leaf/memory.max: parsing "lots"`,
				`ignoring /sys/fs/cgroup/app/leaf/memory.high: negative limit -5`,
			},
		},
		{
			name:   "malformed_v1",
			cpu:    Controller{V1, "/app/leaf", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/app/leaf"},
			memory: Controller{V1, "/app/leaf", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory/app/leaf"},
			cpus:   4,
			notes: []string{
				"ignoring /sys/fs/cgroup/cpu,cpuacct/app/leaf/cpu.cfs_period_us: period 0 is not positive",
				"ignoring /sys/fs/cgroup/cpu,cpuacct/app/cpu.cfs_quota_us: quota 100000 without a readable",
				`ignoring /sys/fs/cgroup/memory/app/leaf/memory.limit_in_bytes: parsing "12abc"`,
			},
		},
		{
			name:  "missing",
			cpus:  4,
			notes: []string{"reading /proc/self/cgroup: ", "reading /proc/self/mountinfo: "},
		},
		{
			name:   "other_pid",
			pid:    4242,
			cpu:    Controller{V2, "/workers/w1", "/sys/fs/cgroup", "/sys/fs/cgroup/workers/w1"},
			quota:  &CPUQuota{50000, 100000, V2, "/sys/fs/cgroup/workers/w1/cpu.max"},
			memory: Controller{V2, "/workers/w1", "/sys/fs/cgroup", "/sys/fs/cgroup/workers/w1"},
			limit:  &MemoryLimit{100 << 20, V2, "/sys/fs/cgroup/workers/memory.max"},
			cpus:   0.5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			aff := tt.affinity
			if aff == 0 {
				aff = 4
			}
			got := Detect(Options{Root: filepath.Join("testdata", tt.name), PID: tt.pid, Affinity: fakeAffinity(aff)})
			if got.Affinity != aff {
				t.Errorf("Affinity = %d, want %d", got.Affinity, aff)
			}
			if got.CPU != tt.cpu {
				t.Errorf("CPU = %+v, want %+v", got.CPU, tt.cpu)
			}
			if !equalPtr(got.CPUQuota, tt.quota) {
				t.Errorf("CPUQuota = %s, want %s", str(got.CPUQuota), str(tt.quota))
			}
			if got.Memory != tt.memory {
				t.Errorf("Memory = %+v, want %+v", got.Memory, tt.memory)
			}
			if !equalPtr(got.MemoryLimit, tt.limit) {
				t.Errorf("MemoryLimit = %s, want %s", str(got.MemoryLimit), str(tt.limit))
			}
			if c := got.CPUs(); c != tt.cpus {
				t.Errorf("CPUs() = %v, want %v", c, tt.cpus)
			}
			checkNotes(t, got.Notes, tt.notes)
		})
	}
}

func checkNotes(t *testing.T, got, want []string) {
	t.Helper()
	if len(want) == 0 && len(got) > 0 {
		t.Errorf("unexpected notes:\n%s", strings.Join(got, "\n"))
	}
	for _, w := range want {
		found := false
		for _, n := range got {
			found = found || strings.Contains(n, w)
		}
		if !found {
			t.Errorf("no note contains %q; notes:\n%s", w, strings.Join(got, "\n"))
		}
	}
}

func equalPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func str[T interface{ String() string }](p *T) string {
	if p == nil {
		return "none"
	}
	return (*p).String()
}

func TestDetectAffinityFailure(t *testing.T) {
	fail := func(int) (int, error) { return 0, errors.New("boom") }
	got := Detect(Options{Root: filepath.Join("testdata", "v2_max"), Affinity: fail})
	if got.Affinity <= 0 {
		t.Errorf("Affinity = %d, want the runtime.NumCPU fallback", got.Affinity)
	}
	checkNotes(t, got.Notes, []string{"reading CPU affinity: boom; using runtime.NumCPU()"})
}

func TestOOMKills(t *testing.T) {
	tests := []struct {
		name  string
		want  OOMCount
		noCtr bool // want ErrNoOOMCounter
		err   string
	}{
		{name: "v2_limited", want: OOMCount{3, "/sys/fs/cgroup/system.slice/app.service/memory.events"}},
		{name: "v1_limited", want: OOMCount{1, "/sys/fs/cgroup/memory/docker/abc/memory.oom_control"}},
		{name: "namespaced", want: OOMCount{0, "/sys/fs/cgroup/memory.events"}},
		{name: "v2_max", noCtr: true},              // no memory.events file
		{name: "malformed_v1", noCtr: true},        // memory.oom_control without oom_kill (kernel < 4.13)
		{name: "unreadable", noCtr: true},          // memory.oom_control is unreadable
		{name: "outside_namespace", noCtr: true},   // cgroup not visible
		{name: "missing", noCtr: true},             // no /proc
		{name: "malformed", err: `parsing "many"`}, // oom_kill is garbage
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := OOMKills(Options{Root: filepath.Join("testdata", tt.name)})
			switch {
			case tt.noCtr:
				if !errors.Is(err, ErrNoOOMCounter) {
					t.Errorf("err = %v, want ErrNoOOMCounter", err)
				}
			case tt.err != "":
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("err = %v, want one containing %q", err, tt.err)
				}
			case err != nil:
				t.Errorf("err = %v", err)
			case got != tt.want:
				t.Errorf("OOMKills = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseMountinfo(t *testing.T) {
	tests := []struct {
		line string
		want mount
		ok   bool
		err  bool
	}{
		{
			line: `32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct`,
			want: mount{"/", "/sys/fs/cgroup/cpu,cpuacct", "cgroup", []string{"rw", "cpu", "cpuacct"}},
			ok:   true,
		},
		{ // no optional fields
			line: `41 31 0:38 /a\040b /mnt/my\134dir rw - cgroup2 cgroup2 rw`,
			want: mount{"/a b", `/mnt/my\dir`, "cgroup2", []string{"rw"}},
			ok:   true,
		},
		{ // several optional fields
			line: `41 31 0:38 / /x rw shared:1 master:2 propagate_from:3 - cgroup2 none rw`,
			want: mount{"/", "/x", "cgroup2", []string{"rw"}},
			ok:   true,
		},
		{line: `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw`},
		{line: ``},
		{line: `22 1 8:1 / / rw - cgroup`, err: true},
		{line: `a - b c d`, err: true},
	}
	for _, tt := range tests {
		got, ok, err := parseMountinfo(tt.line)
		if (err != nil) != tt.err || ok != tt.ok {
			t.Errorf("parseMountinfo(%q): ok=%v err=%v, want ok=%v err=%v", tt.line, ok, err, tt.ok, tt.err)
			continue
		}
		if ok && (got.root != tt.want.root || got.point != tt.want.point || got.fstype != tt.want.fstype ||
			strings.Join(got.superOpts, ",") != strings.Join(tt.want.superOpts, ",")) {
			t.Errorf("parseMountinfo(%q) = %+v, want %+v", tt.line, got, tt.want)
		}
	}
}

func TestParseMembership(t *testing.T) {
	tests := []struct {
		line        string
		controllers string
		path        string
		err         bool
	}{
		{line: "4:cpu,cpuacct:/docker/abc", controllers: "cpu,cpuacct", path: "/docker/abc"},
		{line: "0::/", path: "/"},
		{line: "1:name=systemd:/a:b", controllers: "name=systemd", path: "/a:b"},
		{line: "0::/gone (deleted)", path: "/gone"},
		{line: "garbage", err: true},
		{line: "0::relative", err: true},
		{line: ":cpu:/x", err: true},
	}
	for _, tt := range tests {
		got, err := parseMembership(tt.line)
		if (err != nil) != tt.err {
			t.Errorf("parseMembership(%q) err = %v, want error %v", tt.line, err, tt.err)
			continue
		}
		if !tt.err && (strings.Join(got.controllers, ",") != tt.controllers || got.path != tt.path) {
			t.Errorf("parseMembership(%q) = %+v", tt.line, got)
		}
	}
}
