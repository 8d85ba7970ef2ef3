package main

import (
	"sync/atomic"

	"github.com/gornhq/gorn/config"
	"github.com/gornhq/gorn/internal/cgroup"
	"github.com/gornhq/gorn/internal/sizing"
	"github.com/gornhq/gorn/metrics"
)

// sizingSettings are the configuration's inputs to the sizer (internal/sizing).
func sizingSettings(cfg *config.Config) sizing.Settings {
	return sizing.Settings{
		Class: cfg.WorkerClass, Workers: cfg.Workers, WorkersFrom: cfg.WorkersSource,
		CPUs: cfg.CPUs, CPUsFrom: cfg.CPUsSource, MaxWorkers: cfg.MaxWorkers,
	}
}

// sizingInfo is what the worker count is sized from, for the sizing metrics: the latest
// decision, published on the master loop's goroutine for scrapes on others.
type sizingInfo struct {
	latest atomic.Pointer[metrics.Limits]
}

// decided is the sizer's report of a decision.
func (i *sizingInfo) decided(set sizing.Settings, p sizing.Plan, l cgroup.Limits, err error) {
	out := metrics.Limits{WorkersSource: "auto"}
	if set.Workers > 0 {
		out.WorkersSource = set.WorkersFrom
	}
	if err == nil {
		out.CPUs, out.CPUsSource = p.CPUs, p.CPUSource
	}
	if l.MemoryLimit != nil {
		out.MemoryLimitBytes = l.MemoryLimit.Bytes
	}
	i.latest.Store(&out)
}

// info is the metrics' Limits source.
func (i *sizingInfo) info() metrics.Limits {
	if l := i.latest.Load(); l != nil {
		return *l
	}
	return metrics.Limits{WorkersSource: "auto"}
}
