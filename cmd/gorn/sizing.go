package main

import (
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/gornhq/gorn/config"
	"github.com/gornhq/gorn/internal/cgroup"
	"github.com/gornhq/gorn/internal/scoreboard"
	"github.com/gornhq/gorn/internal/sizing"
	"github.com/gornhq/gorn/metrics"
)

// sizer answers "how many workers?" from flags or the container's limits, at start and
// whenever the master asks again (first worker ready, then every --resize-interval).
type sizer struct {
	cfg    *config.Config
	log    *zap.Logger
	opts   cgroup.Options
	limits cgroup.Limits // latest detection, for metrics
	plan   sizing.Plan   // latest decision
	latest atomic.Pointer[metrics.Limits]

	// Load adaptation (sync workers): the counters at the last resize, and how many
	// workers the load added above the CPU rule's count.
	samples   map[uint64]workerSample
	sampledAt time.Time
	extra     int
}

// workerSample is one worker's counters at a resize: time spent serving requests (from
// the scoreboard) and CPU time (from /proc).
type workerSample struct {
	busyMicros uint64
	cpu        time.Duration
}

func newSizer(cfg *config.Config, log *zap.Logger) *sizer { return &sizer{cfg: cfg, log: log} }

func (s *sizer) decide(workerBytes int64) (sizing.Plan, error) {
	s.limits = cgroup.Detect(s.opts)
	master, _ := sizing.ReadRSS("", 0)
	in := sizing.Input{
		Class: s.cfg.WorkerClass, Workers: s.cfg.Workers, WorkersFrom: s.cfg.WorkersSource,
		CPUs: s.cfg.CPUs, CPUsFrom: s.cfg.CPUsSource, MaxWorkers: s.cfg.MaxWorkers,
		Limits: s.limits, MasterBytes: master, WorkerBytes: workerBytes,
	}
	p, err := sizing.Decide(in)
	if err == nil {
		s.plan = p
	}
	s.publish(p, err)
	return p, err
}

// initial is the count to start with and the log line that explains it. Under a memory
// limit, an automatic count starts with one worker: its measured footprint decides how
// many fit before more are started (starting the CPU count blind could OOM the pod).
func (s *sizer) initial() (int, string) {
	p, err := s.decide(0)
	for _, n := range s.limits.Notes {
		s.log.Debug("cgroup detection", zap.String("note", n))
	}
	if err != nil {
		s.log.Warn("sizing from limits failed; running 1 worker", zap.Error(err))
		return 1, "workers=1 (fallback)"
	}
	why := p.Explanation
	if s.cfg.Workers == 0 && s.limits.MemoryLimit != nil && p.Workers > 1 {
		return 1, why + fmt.Sprintf("; starting 1 worker to measure its memory before scaling to %d", p.Workers)
	}
	return p.Workers, why
}

// resize re-reads the limits and measures the ready workers: their footprint (the
// largest PSS) for the memory cap and, for sync workers, their load since the last call,
// which moves the count one worker at a time above the CPU rule's (sizing.Adapt).
func (s *sizer) resize(ready []scoreboard.Slot) (int, string, bool) {
	if s.cfg.Workers > 0 {
		return 0, "", false
	}
	var pss int64
	for _, w := range ready {
		if v, err := sizing.ReadPSS("", int(w.PID)); err == nil && v > pss {
			pss = v
		}
	}
	p, err := s.decide(pss)
	if err != nil {
		s.log.Warn("re-reading limits", zap.Error(err))
		return 0, "", false
	}
	load := s.measure(ready)
	if s.cfg.WorkerClass != "sync" {
		return p.Workers, p.Explanation, true
	}
	ceiling := sizing.SyncCeiling(p.CPUs)
	if p.MemoryWorkers > 0 {
		ceiling = min(ceiling, p.MemoryWorkers)
	}
	if s.cfg.MaxWorkers > 0 {
		ceiling = min(ceiling, s.cfg.MaxWorkers)
	}
	ceiling = max(ceiling, p.Workers)
	current := min(p.Workers+s.extra, ceiling)
	n, why := sizing.Adapt(current, p.Workers, ceiling, p.CPUs, load)
	s.extra = n - p.Workers
	if why == "" {
		why = p.Explanation
	}
	return n, why, true
}

// measure returns the ready workers' load since the previous call (workers seen both
// times) and keeps this call's counters for the next.
func (s *sizer) measure(ready []scoreboard.Slot) sizing.Load {
	now := time.Now()
	next := make(map[uint64]workerSample, len(ready))
	load := sizing.Load{Interval: now.Sub(s.sampledAt)}
	for _, w := range ready {
		cpu, err := sizing.ReadCPUTime("", int(w.PID))
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

// oomKills is the memory cgroup's OOM-kill counter.
func (s *sizer) oomKills() (uint64, bool) {
	c, err := cgroup.OOMKills(s.opts)
	if err != nil || c.Kills < 0 {
		return 0, false
	}
	return uint64(c.Kills), true
}

// memoryCeiling is how many workers the last measurement fits in memory (0: unknown).
func (s *sizer) memoryCeiling() int { return s.plan.MemoryWorkers }
