package sizing

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/gornhq/gorn/internal/cgroup"
	"github.com/gornhq/gorn/internal/scoreboard"
)

// fakeSystem is a container seen through Probes: limits, and per-pid footprints and CPU
// time.
type fakeSystem struct {
	limits cgroup.Limits
	mem    map[int]Footprint
	cpu    map[int]time.Duration
	ooms   int64
}

func (f *fakeSystem) probes() Probes {
	return Probes{
		Limits:    func() cgroup.Limits { return f.limits },
		MasterRSS: func() (int64, error) { return 20 << 20, nil },
		Footprint: func(pid int) (Footprint, error) {
			if v, ok := f.mem[pid]; ok {
				return v, nil
			}
			return Footprint{}, errors.New("no such process")
		},
		CPUTime: func(pid int) (time.Duration, error) { return f.cpu[pid], nil },
		OOMKills: func() (cgroup.OOMCount, error) {
			return cgroup.OOMCount{Kills: f.ooms}, nil
		},
	}
}

func oneCPU() cgroup.Limits {
	return cgroup.Limits{Affinity: 4, CPUQuota: &cgroup.CPUQuota{Quota: 100000, Period: 100000, Version: 2, File: "cpu.max"}}
}

func TestSizerInitial(t *testing.T) {
	sys := &fakeSystem{limits: oneCPU()}
	var seen []Settings
	s := NewSizer(Settings{Class: "sync"}, sys.probes(), zap.NewNop(), func(set Settings, p Plan, l cgroup.Limits, err error) { seen = append(seen, set) })
	if n, why := s.Initial(); n != 3 || !strings.Contains(why, "2*1+1") {
		t.Errorf("one CPU: %d %q, want 3 by the CPU rule", n, why)
	}
	sys.limits.MemoryLimit = &cgroup.MemoryLimit{Bytes: 1 << 30, Version: 2, File: "memory.max"}
	if n, why := s.Initial(); n != 1 || !strings.Contains(why, "starting 1 worker to measure its memory") {
		t.Errorf("under a memory limit: %d %q, want 1 to measure first", n, why)
	}
	s.SetSettings(Settings{Class: "sync", Workers: 7, WorkersFrom: "-w"})
	if n, _ := s.Initial(); n != 7 {
		t.Errorf("-w 7: %d", n)
	}
	if len(seen) != 3 || seen[2].Workers != 7 {
		t.Errorf("decisions reported with settings %+v", seen)
	}
}

func TestSizerResize(t *testing.T) {
	sys := &fakeSystem{limits: oneCPU(), mem: map[int]Footprint{}, cpu: map[int]time.Duration{}}
	s := NewSizer(Settings{Class: "sync"}, sys.probes(), zap.NewNop(), nil)
	s.Initial()
	var ready []scoreboard.Slot
	for pid := 100; pid < 103; pid++ {
		ready = append(ready, scoreboard.Slot{PID: uint64(pid)})
		sys.mem[pid] = Footprint{RSS: 100 << 20, PSS: 100 << 20, USS: 100 << 20}
	}
	now := 24 * time.Hour
	// step: the workers serve for busy of every interval and use cpu of it.
	step := func(busy, cpu float64) (int, string) {
		t.Helper()
		now += 10 * time.Second
		for i := range ready {
			ready[i].DurationSum += uint64(busy * 10e6) // microseconds
			sys.cpu[int(ready[i].PID)] += time.Duration(cpu * float64(10*time.Second))
		}
		n, why, ok := s.Resize(now, ready)
		if !ok {
			t.Fatal("an automatic count was not resized")
		}
		return n, why
	}
	if n, _ := step(0.95, 0.1); n != 3 {
		t.Fatalf("first resize (no previous sample): %d, want the rule's 3", n)
	}
	for want := 4; want <= 5; want++ {
		if n, why := step(0.95, 0.1); n != want || !strings.Contains(why, "wait on I/O") {
			t.Fatalf("busy waiting pool: %d %q, want %d", n, why, want)
		}
	}
	if n, _ := step(0.95, 0.1); n != 5 {
		t.Errorf("past the ceiling 4*1+1: %d", n)
	}
	if n, why := step(0.1, 0.01); n != 4 || !strings.Contains(why, "one worker fewer") {
		t.Errorf("idle pool: %d %q, want one fewer", n, why)
	}
	// A memory limit that fits two workers of 100 MiB (nothing shared) caps the count.
	sys.limits.MemoryLimit = &cgroup.MemoryLimit{Bytes: 270 << 20, Version: 2, File: "memory.max"}
	if n, _ := step(0.95, 0.1); n != 2 || s.MemoryCeiling() != 2 {
		t.Errorf("under 270 MiB with 100 MiB workers: %d workers, ceiling %d; want 2", n, s.MemoryCeiling())
	}
	// Workers that share 60 MiB (a preloaded app's pages, each charged a third of them in
	// its PSS, counted once in all) and have 20 MiB of their own: one more costs 20 MiB,
	// (229.5 - 20 master - 60 shared) / 20 = 7 fit, and the CPU rule's 3 run.
	for pid := 100; pid < 103; pid++ {
		sys.mem[pid] = Footprint{RSS: 80 << 20, PSS: 40 << 20, USS: 20 << 20}
	}
	if n, why := step(0.5, 0.5); n != 3 || s.MemoryCeiling() != 7 {
		t.Errorf("shared workers under 270 MiB: %d workers, ceiling %d %q; want 3, ceiling 7", n, s.MemoryCeiling(), why)
	}
	s.SetSettings(Settings{Class: "sync", Workers: 4, WorkersFrom: "-w"})
	if _, _, ok := s.Resize(now+time.Second, ready); ok {
		t.Error("a fixed count was resized")
	}
}

func TestSizerOOMKills(t *testing.T) {
	sys := &fakeSystem{limits: oneCPU(), ooms: 3}
	s := NewSizer(Settings{Class: "sync"}, sys.probes(), zap.NewNop(), nil)
	if n, ok := s.OOMKills(); !ok || n != 3 {
		t.Errorf("OOMKills = %d %v", n, ok)
	}
	sys.ooms = -1 // the counter is not there
	if _, ok := s.OOMKills(); ok {
		t.Error("a missing counter was reported")
	}
}
