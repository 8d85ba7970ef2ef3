package sizing

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/gornhq/gorn/internal/cgroup"
	"github.com/gornhq/gorn/internal/scoreboard"
)

// Settings are the configuration's sizing inputs; they may change on HUP.
type Settings struct {
	Class       string
	Workers     int // -w; 0: sized from the limits
	WorkersFrom string
	CPUs        float64
	CPUsFrom    string
	MaxWorkers  int
}

// Probes are the Sizer's reads of the system; tests replace them.
type Probes struct {
	Limits    func() cgroup.Limits
	MasterRSS func() (int64, error)
	Footprint func(pid int) (Footprint, error)
	// Others returns the pids of gorn's processes besides the master and the workers (the
	// hook host, a preload mold), whose PSS the memory cap counts; nil: none.
	Others   func() []int
	CPUTime  func(pid int) (time.Duration, error)
	OOMKills func() (cgroup.OOMCount, error)
}

// SystemProbes read this process's cgroups (as opts chooses) and /proc.
func SystemProbes(opts cgroup.Options) Probes {
	return Probes{
		Limits:    func() cgroup.Limits { return cgroup.Detect(opts) },
		MasterRSS: func() (int64, error) { return ReadRSS("", 0) },
		Footprint: func(pid int) (Footprint, error) { return ReadFootprint("", pid) },
		CPUTime:   func(pid int) (time.Duration, error) { return ReadCPUTime("", pid) },
		OOMKills:  func() (cgroup.OOMCount, error) { return cgroup.OOMKills(opts) },
	}
}

// Sizer answers "how many workers?" from the settings or the container's limits, at start
// and whenever the master asks again (first worker ready, then every resize interval).
// Its methods run on the master loop's goroutine.
type Sizer struct {
	settings Settings
	probes   Probes
	log      *zap.Logger
	// decided is told every decision (for the metrics); nil: nobody.
	decided func(Settings, Plan, cgroup.Limits, error)

	limits cgroup.Limits // latest detection
	plan   Plan          // latest decision

	// Load adaptation (sync workers): the counters at the last resize, and how many
	// workers the load added above the CPU rule's count.
	samples   map[uint64]workerSample
	sampledAt time.Duration // the master's clock
	extra     int
}

// workerSample is one worker's counters at a resize: time spent serving requests (from
// the scoreboard) and CPU time (from /proc).
type workerSample struct {
	busyMicros uint64
	cpu        time.Duration
}

// NewSizer returns a Sizer; decided, if not nil, is told every decision and the settings
// it was made with.
func NewSizer(s Settings, p Probes, log *zap.Logger, decided func(Settings, Plan, cgroup.Limits, error)) *Sizer {
	return &Sizer{settings: s, probes: p, log: log, decided: decided}
}

// SetOthers sets the Others probe: gorn's processes besides the master and the workers.
// Call it before the master loop runs.
func (s *Sizer) SetOthers(others func() []int) { s.probes.Others = others }

// SetSettings takes the settings of a reloaded configuration; they apply at the next
// resize.
func (s *Sizer) SetSettings(set Settings) { s.settings = set }

func (s *Sizer) decide(mem Memory) (Plan, error) {
	s.limits = s.probes.Limits()
	mem.Master, _ = s.probes.MasterRSS()
	in := Input{
		Class: s.settings.Class, Workers: s.settings.Workers, WorkersFrom: s.settings.WorkersFrom,
		CPUs: s.settings.CPUs, CPUsFrom: s.settings.CPUsFrom, MaxWorkers: s.settings.MaxWorkers,
		Limits: s.limits, Memory: mem,
	}
	p, err := Decide(in)
	if err == nil {
		s.plan = p
	}
	if s.decided != nil {
		s.decided(s.settings, p, s.limits, err)
	}
	return p, err
}

// Initial is the count to start with and the log line that explains it. Under a memory
// limit, an automatic count starts with one worker: its measured footprint decides how
// many fit before more are started (starting the CPU count blind could OOM the pod).
func (s *Sizer) Initial() (int, string) {
	p, err := s.decide(Memory{})
	for _, n := range s.limits.Notes {
		s.log.Debug("cgroup detection", zap.String("note", n))
	}
	if err != nil {
		s.log.Warn("sizing from limits failed; running 1 worker", zap.Error(err))
		return 1, "workers=1 (fallback)"
	}
	why := p.Explanation
	if s.settings.Workers == 0 && s.limits.MemoryLimit != nil && p.Workers > 1 {
		return 1, why + fmt.Sprintf("; starting 1 worker to measure its memory before scaling to %d", p.Workers)
	}
	return p.Workers, why
}

// Resize is the master's Resize hook: it re-reads the limits and measures the ready
// workers: their footprint for the memory cap (MeasureMemory) and, for sync workers,
// their load since the last call, which moves the count one worker at a time above the
// CPU rule's (Adapt). ok is false when the count is not sized automatically.
func (s *Sizer) Resize(now time.Duration, ready []scoreboard.Slot) (workers int, why string, ok bool) {
	if s.settings.Workers > 0 {
		return 0, "", false
	}
	p, err := s.decide(s.measureMemory(ready))
	if err != nil {
		s.log.Warn("re-reading limits", zap.Error(err))
		return 0, "", false
	}
	load := s.measure(now, ready)
	if s.settings.Class != "sync" && s.settings.Class != "" {
		return p.Workers, p.Explanation, true
	}
	ceiling := SyncCeiling(p.CPUs)
	if p.MemoryWorkers > 0 {
		ceiling = min(ceiling, p.MemoryWorkers)
	}
	if s.settings.MaxWorkers > 0 {
		ceiling = min(ceiling, s.settings.MaxWorkers)
	}
	ceiling = max(ceiling, p.Workers)
	current := min(p.Workers+s.extra, ceiling)
	n, why := Adapt(current, p.Workers, ceiling, p.CPUs, load)
	s.extra = n - p.Workers
	if why == "" {
		why = p.Explanation
	}
	return n, why, true
}

// measureMemory reads what the memory cap works from, for the ready workers and gorn's
// other processes.
func (s *Sizer) measureMemory(ready []scoreboard.Slot) Memory {
	pids := make([]int, len(ready))
	for i, w := range ready {
		pids[i] = int(w.PID)
	}
	var others []int
	if s.probes.Others != nil {
		others = s.probes.Others()
	}
	return MeasureMemory(s.probes.Footprint, pids, others)
}

// measure returns the ready workers' load since the previous call (workers seen both
// times) and keeps this call's counters for the next.
func (s *Sizer) measure(now time.Duration, ready []scoreboard.Slot) Load {
	next := make(map[uint64]workerSample, len(ready))
	load := Load{Interval: now - s.sampledAt}
	for _, w := range ready {
		cpu, err := s.probes.CPUTime(int(w.PID))
		if err != nil {
			continue
		}
		next[w.PID] = workerSample{busyMicros: w.DurationSum, cpu: cpu}
		if prev, ok := s.samples[w.PID]; ok && w.DurationSum >= prev.busyMicros && cpu >= prev.cpu {
			load.Workers++
			load.Busy += time.Duration(w.DurationSum-prev.busyMicros) * time.Microsecond
			load.CPU += cpu - prev.cpu
		}
	}
	s.samples, s.sampledAt = next, now
	return load
}

// OOMKills is the memory cgroup's OOM-kill counter (the master's OOMKills hook).
func (s *Sizer) OOMKills() (uint64, bool) {
	c, err := s.probes.OOMKills()
	if err != nil || c.Kills < 0 {
		return 0, false
	}
	return uint64(c.Kills), true
}

// MemoryCeiling is how many workers the last measurement fits in memory (0: unknown).
func (s *Sizer) MemoryCeiling() int { return s.plan.MemoryWorkers }
