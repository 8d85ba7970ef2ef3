package sizing

import (
	"errors"
	"os/exec"
	"testing"

	"github.com/gornhq/gorn/internal/cgroup"
	"github.com/gornhq/gorn/internal/testenv"
)

const mib = 1 << 20

func TestDecide(t *testing.T) {
	v1Quota := &cgroup.CPUQuota{Quota: 150000, Period: 100000, Version: cgroup.V1,
		File: "/sys/fs/cgroup/cpu/pod/cpu.cfs_quota_us"}
	withQuota := cgroup.Limits{Affinity: 2, CPUQuota: v1Quota}
	noQuota := cgroup.Limits{Affinity: 64, CPU: cgroup.Controller{Version: cgroup.V2, Dir: "/sys/fs/cgroup"}}
	mem512 := cgroup.Limits{Affinity: 2, CPUQuota: v1Quota,
		MemoryLimit: &cgroup.MemoryLimit{Bytes: 512 * mib, Version: cgroup.V1, File: "/sys/fs/cgroup/memory/pod/memory.limit_in_bytes"}}

	tests := []struct {
		name    string
		in      Input
		workers int
		cpus    float64
		source  string // Plan.CPUSource
		memory  int    // Plan.MemoryWorkers
		explain string
	}{
		{
			name:    "sync on a quota of 1.5",
			source:  "quota",
			in:      Input{Limits: withQuota},
			workers: 4, cpus: 1.5,
			explain: "workers=4 (sync: 2*1.5+1; cpu quota 150000/100000 from cgroup v1 /sys/fs/cgroup/cpu/pod/cpu.cfs_quota_us, affinity 2)",
		},
		{
			name:    "gthread on a quota of 1.5",
			source:  "quota",
			in:      Input{Class: "gthread", Limits: withQuota},
			workers: 2, cpus: 1.5,
			explain: "workers=2 (gthread: ceil(1.5); cpu quota 150000/100000 from cgroup v1 /sys/fs/cgroup/cpu/pod/cpu.cfs_quota_us, affinity 2)",
		},
		{
			name:   "affinity tighter than the quota",
			source: "affinity",
			in: Input{Class: "asgi", Limits: cgroup.Limits{Affinity: 1,
				CPUQuota: &cgroup.CPUQuota{Quota: 400000, Period: 100000, Version: cgroup.V2, File: "/sys/fs/cgroup/cpu.max"}}},
			workers: 1, cpus: 1,
			explain: "workers=1 (asgi: ceil(1); affinity 1, cpu quota 400000/100000 from cgroup v2 /sys/fs/cgroup/cpu.max)",
		},
		{
			name:    "no quota: the node's CPUs, and how to pass the request",
			source:  "affinity",
			in:      Input{Limits: noQuota},
			workers: 129, cpus: 64,
			explain: "workers=129 (sync: 2*64+1; no cpu quota in cgroup v2 /sys/fs/cgroup: counting the node's 64 CPUs (affinity); " +
				"to size for the pod's CPU request pass --cpus or GORN_CPUS (Downward API resourceFieldRef requests.cpu, divisor 1m, given as e.g. 500m))",
		},
		{
			name:    "cpus override",
			source:  "GORN_CPUS",
			in:      Input{CPUs: 0.5, CPUsFrom: "GORN_CPUS", Limits: noQuota},
			workers: 2, cpus: 0.5,
			explain: "workers=2 (sync: 2*0.5+1; cpus 0.5 from GORN_CPUS)",
		},
		{
			name:    "sync rounds half up",
			source:  "--cpus",
			in:      Input{CPUs: 1.25, CPUsFrom: "--cpus"},
			workers: 4, cpus: 1.25,
			explain: "workers=4 (sync: 2*1.25+1; cpus 1.25 from --cpus)",
		},
		{
			name:    "sync at least 2",
			source:  "--cpus",
			in:      Input{CPUs: 0.1, CPUsFrom: "--cpus"},
			workers: 2, cpus: 0.1,
			explain: "workers=2 (sync: 2*0.1+1, at least 2; cpus 0.1 from --cpus)",
		},
		{
			name:    "eventlet at least 1",
			source:  "--cpus",
			in:      Input{Class: "eventlet", CPUs: 0.25, CPUsFrom: "--cpus"},
			workers: 1, cpus: 0.25,
			explain: "workers=1 (eventlet: ceil(0.25); cpus 0.25 from --cpus)",
		},
		{
			name:    "explicit count wins",
			source:  "quota",
			in:      Input{Workers: 7, WorkersFrom: "WEB_CONCURRENCY", Limits: withQuota},
			workers: 7, cpus: 1.5,
			explain: "workers=7 (from WEB_CONCURRENCY)",
		},
		{
			name:    "memory cap bites",
			source:  "quota",
			in:      Input{Limits: mem512, Memory: Memory{Master: 20 * mib, WorkerUSS: 180 * mib, WorkerPSS: 180 * mib, WorkerFrom: "measured"}},
			workers: 2, cpus: 1.5, memory: 2,
			explain: "workers=2 (sync: 2*1.5+1; cpu quota 150000/100000 from cgroup v1 /sys/fs/cgroup/cpu/pod/cpu.cfs_quota_us, affinity 2; " +
				"memory cap: 2 workers fit in 85% of 512MiB limit from cgroup v1 /sys/fs/cgroup/memory/pod/memory.limit_in_bytes (master 20MiB + shared 0B, then 180MiB per worker: its USS))",
		},
		{
			name:    "memory cap does not bite",
			source:  "quota",
			in:      Input{Limits: mem512, Memory: Memory{Master: 20 * mib, WorkerUSS: 50 * mib, WorkerPSS: 50 * mib, WorkerFrom: "measured"}},
			workers: 4, cpus: 1.5, memory: 8,
			explain: "workers=4 (sync: 2*1.5+1; cpu quota 150000/100000 from cgroup v1 /sys/fs/cgroup/cpu/pod/cpu.cfs_quota_us, affinity 2)",
		},
		{
			name:    "memory cap at least 1",
			source:  "quota",
			in:      Input{Limits: mem512, Memory: Memory{Master: 500 * mib, WorkerUSS: 180 * mib, WorkerPSS: 180 * mib, WorkerFrom: "measured"}},
			workers: 1, cpus: 1.5, memory: 1,
			explain: "workers=1 (sync: 2*1.5+1; cpu quota 150000/100000 from cgroup v1 /sys/fs/cgroup/cpu/pod/cpu.cfs_quota_us, affinity 2; " +
				"memory cap: 1 worker fits in 85% of 512MiB limit from cgroup v1 /sys/fs/cgroup/memory/pod/memory.limit_in_bytes (master 500MiB + shared 0B, then 180MiB per worker: its USS))",
		},
		{
			// Workers forked from a preloaded app: 150 MiB of PSS each, but 120 of it shared
			// (counted once): one more costs its 40 MiB of USS. By PSS only 2 would fit.
			name:   "preloaded workers share: the cap uses the marginal cost",
			source: "--cpus",
			in: Input{CPUs: 4, CPUsFrom: "--cpus", Limits: mem512,
				Memory: Memory{Master: 20 * mib, Others: 60 * mib, Shared: 100 * mib, WorkerUSS: 40 * mib, WorkerPSS: 150 * mib, WorkerFrom: "measured"}},
			workers: 6, cpus: 4, memory: 6,
			explain: "workers=6 (sync: 2*4+1; cpus 4 from --cpus; memory cap: 6 workers fit in 85% of 512MiB limit from cgroup v1 " +
				"/sys/fs/cgroup/memory/pod/memory.limit_in_bytes (master 20MiB + shared 160MiB, then 40MiB per worker: its USS))",
		},
		{
			name:    "worker not measured yet: no memory cap",
			source:  "quota",
			in:      Input{Limits: mem512, Memory: Memory{Master: 20 * mib}},
			workers: 4, cpus: 1.5,
			explain: "workers=4 (sync: 2*1.5+1; cpu quota 150000/100000 from cgroup v1 /sys/fs/cgroup/cpu/pod/cpu.cfs_quota_us, affinity 2)",
		},
		{
			name:    "explicit count above the memory fit: warned, not capped",
			source:  "quota",
			in:      Input{Workers: 8, WorkersFrom: "-w", Limits: mem512, Memory: Memory{Master: 20 * mib, WorkerUSS: 180 * mib, WorkerPSS: 180 * mib, WorkerFrom: "measured"}},
			workers: 8, cpus: 1.5, memory: 2,
			explain: "workers=8 (from -w; warning: only 2 workers fit in 85% of 512MiB limit from cgroup v1 " +
				"/sys/fs/cgroup/memory/pod/memory.limit_in_bytes (master 20MiB + shared 0B, then 180MiB per worker: its USS))",
		},
		{
			name:    "max-workers ceiling",
			source:  "quota",
			in:      Input{MaxWorkers: 3, Limits: withQuota},
			workers: 3, cpus: 1.5,
			explain: "workers=3 (sync: 2*1.5+1; cpu quota 150000/100000 from cgroup v1 /sys/fs/cgroup/cpu/pod/cpu.cfs_quota_us, affinity 2; capped by --max-workers 3)",
		},
		{
			name:    "max-workers above the count does nothing",
			source:  "quota",
			in:      Input{MaxWorkers: 10, Limits: withQuota},
			workers: 4, cpus: 1.5,
			explain: "workers=4 (sync: 2*1.5+1; cpu quota 150000/100000 from cgroup v1 /sys/fs/cgroup/cpu/pod/cpu.cfs_quota_us, affinity 2)",
		},
		{
			name:    "explicit count above max-workers: warned",
			source:  "affinity",
			in:      Input{Workers: 5, WorkersFrom: "-w", MaxWorkers: 3},
			workers: 5,
			explain: "workers=5 (from -w; warning: above --max-workers 3)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Decide(tt.in)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if p.Workers != tt.workers || p.CPUs != tt.cpus || p.CPUSource != tt.source || p.MemoryWorkers != tt.memory {
				t.Errorf("Decide = workers %d cpus %v from %q memory %d, want %d %v %q %d", p.Workers, p.CPUs, p.CPUSource,
					p.MemoryWorkers, tt.workers, tt.cpus, tt.source, tt.memory)
			}
			if p.Explanation != tt.explain {
				t.Errorf("Explanation:\n got %s\nwant %s", p.Explanation, tt.explain)
			}
		})
	}
}

func TestDecideErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      Input
		unknown bool
	}{
		{name: "unknown class", in: Input{Class: "tornado", CPUs: 1}, unknown: true},
		{name: "unknown class with explicit count", in: Input{Class: "uwsgi", Workers: 3}, unknown: true},
		{name: "no CPU count at all", in: Input{}},
		{name: "negative workers", in: Input{Workers: -1}},
		{name: "negative max-workers", in: Input{MaxWorkers: -1, CPUs: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decide(tt.in)
			if err == nil {
				t.Fatal("Decide succeeded, want an error")
			}
			if errors.Is(err, ErrUnknownClass) != tt.unknown {
				t.Errorf("errors.Is(%v, ErrUnknownClass) = %v, want %v", err, !tt.unknown, tt.unknown)
			}
		})
	}
}

func TestForCPUs(t *testing.T) {
	tests := []struct {
		class string
		cpus  float64
		want  int
	}{
		{"sync", 0.5, 2}, {"sync", 0.75, 3}, {"sync", 1, 3}, {"sync", 1.5, 4}, {"sync", 2, 5},
		{"sync", 2.25, 6}, {"sync", 4, 9}, {"sync", 0.001, 2},
		{"gthread", 0.5, 1}, {"gthread", 1, 1}, {"gthread", 1.0000000001, 1}, {"gthread", 1.01, 2},
		{"gevent", 2.5, 3}, {"eventlet", 3, 3}, {"asgi", 0.1, 1}, {"asgi", 16, 16},
	}
	for _, tt := range tests {
		got, _, err := ForCPUs(tt.class, tt.cpus)
		if err != nil || got != tt.want {
			t.Errorf("ForCPUs(%q, %v) = %d, %v; want %d", tt.class, tt.cpus, got, err, tt.want)
		}
	}
}

func TestMemoryFit(t *testing.T) {
	tests := []struct {
		limit, master, worker int64
		want                  int
	}{
		{512 * mib, 20 * mib, 180 * mib, 2},  // 435.2-20 = 415.2 -> 2.3
		{1024 * mib, 0, 100 * mib, 8},        // 870.4 -> 8.7
		{1024 * mib, 30 * mib, 120 * mib, 7}, // 840.4 -> 7.003
		{256 * mib, 300 * mib, 100 * mib, 1}, // master alone is over: still 1
		{64 << 30, 50 * mib, 1 * mib, 55655}, // 55705.6-50
	}
	for _, tt := range tests {
		if got := MemoryFit(tt.limit, tt.master, tt.worker); got != tt.want {
			t.Errorf("MemoryFit(%d, %d, %d) = %d, want %d", tt.limit, tt.master, tt.worker, got, tt.want)
		}
	}
}

func TestParseCPUs(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		err  bool
	}{
		{in: "1.5", want: 1.5}, {in: "2", want: 2}, {in: " 0.25\n", want: 0.25},
		{in: "500m", want: 0.5}, {in: "1500m", want: 1.5}, {in: "250m", want: 0.25},
		{in: "", err: true}, {in: "0", err: true}, {in: "-1", err: true}, {in: "m", err: true},
		{in: "two", err: true}, {in: "NaN", err: true}, {in: "Inf", err: true}, {in: "1.5 cpus", err: true},
	}
	for _, tt := range tests {
		got, err := ParseCPUs(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseCPUs(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{in: "0", want: 0}, {in: "536870912", want: 512 * mib}, {in: "512M", want: 512 * mib},
		{in: "512MiB", want: 512 * mib}, {in: "512Mi", want: 512 * mib}, {in: "512mb", want: 512 * mib},
		{in: " 1.5G\n", want: 1536 * mib}, {in: "1.5GiB", want: 1536 * mib}, {in: "64k", want: 64 * 1024},
		{in: "2T", want: 2 << 40}, {in: "100B", want: 100},
		{in: "", err: true}, {in: "M", err: true}, {in: "-1M", err: true}, {in: "lots", err: true},
		{in: "1.5 GB of RAM", err: true}, {in: "NaN", err: true}, {in: "Inf", err: true}, {in: "9999999T", err: true},
	}
	for _, tt := range tests {
		got, err := ParseBytes(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseBytes(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestFormat(t *testing.T) {
	bytes := map[int64]string{0: "0B", 1000: "1000B", 1024: "1KiB", 512 * mib: "512MiB", 1536 * mib: "1.5GiB",
		180*mib + 300*1024: "180.3MiB"}
	for n, want := range bytes {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
	cpus := map[float64]string{1.5: "1.5", 2: "2", 1.0 / 3: "0.333", 0.0005: "0.001"}
	for c, want := range cpus {
		if got := FormatCPUs(c); got != want {
			t.Errorf("FormatCPUs(%v) = %q, want %q", c, got, want)
		}
	}
}

func TestReadPSSAndRSS(t *testing.T) {
	tests := []struct {
		name string
		read func(string, int) (int64, error)
		pid  int
		want int64
		err  bool
	}{
		{name: "pss", read: ReadPSS, pid: 77, want: 184320 * 1024},
		{name: "rss of self", read: ReadRSS, pid: 0, want: 20 * mib},
		{name: "pss malformed", read: ReadPSS, pid: 78, err: true},
		{name: "pss missing", read: ReadPSS, pid: 79, err: true},
		{name: "no VmRSS line", read: ReadRSS, pid: 77, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.read("testdata/proc", tt.pid)
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("got %d, %v; want %d, error %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestReadFootprint(t *testing.T) {
	got, err := ReadFootprint("testdata/proc", 77)
	want := Footprint{RSS: 204800 * 1024, PSS: 184320 * 1024, USS: (3800 + 160000) * 1024}
	if err != nil || got != want {
		t.Errorf("got %+v, %v; want %+v", got, err, want)
	}
	for _, pid := range []int{78, 79} { // malformed, missing
		if got, err := ReadFootprint("testdata/proc", pid); err == nil {
			t.Errorf("pid %d: got %+v, want an error", pid, got)
		}
	}
}

// TestReadFootprintReal reads this process's footprint and another's from the real /proc.
func TestReadFootprintReal(t *testing.T) {
	before, err := ReadFootprint("", 0)
	if err != nil {
		testenv.Missing(t, "no smaps_rollup here: %v", err)
	}
	if before.USS <= 0 || before.USS > before.PSS || before.PSS > before.RSS {
		t.Fatalf("want 0 < USS <= PSS <= RSS, got %+v", before)
	}
	sleep := exec.Command("sleep", "30")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sleep.Process.Kill(); _ = sleep.Wait() }()
	child, err := ReadFootprint("", sleep.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if child.RSS <= 0 || child.USS > child.PSS || child.PSS > child.RSS {
		t.Errorf("a sleep's footprint %+v: want USS <= PSS <= RSS, RSS > 0", child)
	}
}

// TestReadRealProc reads this test process's own footprint from the real /proc.
func TestReadRealProc(t *testing.T) {
	rss, err := ReadRSS("", 0)
	if err != nil {
		testenv.Missing(t, "no /proc here: %v", err)
	}
	pss, err := ReadPSS("", 0)
	if err != nil {
		testenv.Missing(t, "no smaps_rollup here: %v", err)
	}
	if rss <= 0 || pss <= 0 {
		t.Errorf("rss %d, pss %d: want both positive", rss, pss)
	}
}

func TestMeasureMemory(t *testing.T) {
	fps := map[int]Footprint{
		1: {RSS: 90 * mib, PSS: 40 * mib, USS: 20 * mib},
		2: {RSS: 95 * mib, PSS: 45 * mib, USS: 25 * mib},
		9: {RSS: 70 * mib, PSS: 30 * mib, USS: 5 * mib}, // the mold
	}
	read := func(pid int) (Footprint, error) {
		if fp, ok := fps[pid]; ok {
			return fp, nil
		}
		return Footprint{}, errors.New("exited")
	}
	got := MeasureMemory(read, []int{1, 2, 3}, []int{9})
	want := Memory{Others: 30 * mib, Shared: 40 * mib, WorkerUSS: 25 * mib, WorkerPSS: 45 * mib, WorkerFrom: "measured"}
	if got != want {
		t.Errorf("MeasureMemory = %+v, want %+v", got, want)
	}
	if got := MeasureMemory(read, []int{3}, []int{9}); got != (Memory{}) {
		t.Errorf("no worker readable: %+v, want nothing measured", got)
	}
}

// TestCapByPSSBeside: the plan also says how many would fit if nothing were shared.
func TestCapByPSSBeside(t *testing.T) {
	lim := cgroup.Limits{Affinity: 8, MemoryLimit: &cgroup.MemoryLimit{Bytes: 512 * mib, Version: 2, File: "memory.max"}}
	p, err := Decide(Input{Limits: lim, Memory: Memory{Master: 20 * mib, Others: 60 * mib, Shared: 100 * mib, WorkerUSS: 40 * mib, WorkerPSS: 150 * mib, WorkerFrom: "measured"}})
	if err != nil {
		t.Fatal(err)
	}
	// (435.2 - 180) / 40 = 6.4 by USS; (435.2 - 80) / 150 = 2.4 by PSS.
	if p.MemoryWorkers != 6 || p.MemoryWorkersByPSS != 2 || p.Workers != 6 {
		t.Errorf("plan %+v: want 6 by USS, 2 by PSS, 6 workers", p)
	}
}
