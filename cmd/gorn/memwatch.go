package main

import (
	"context"
	"time"

	"github.com/gornhq/gorn/internal/sizing"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/metrics"
)

// memorySampleInterval is how often the workers' memory is sampled for
// --max-worker-memory. Reading smaps_rollup walks a process's page tables (about 0.3 ms
// for a small worker), so it is done only while the limit is set.
const memorySampleInterval = time.Second

// watchMemory samples the workers' unique memory (USS) off the master loop and sends each
// sample to the loop as a message (master.Inputs.Memory), until ctx ends. Each round asks
// the loop for the worker pids and the limit; with no limit it reads nothing. A sample
// the loop has not taken yet is not queued behind: the next round's is fresher.
func watchMemory(ctx context.Context, src metrics.Source, procRoot string, interval time.Duration, out chan<- master.MemorySample) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		q, cancel := context.WithTimeout(ctx, interval)
		snap, err := src.Snapshot(q)
		cancel()
		if err != nil || snap.MaxWorkerMemory <= 0 {
			continue
		}
		sample := make(master.MemorySample, len(snap.Workers))
		for _, w := range snap.Workers {
			if w.Pid <= 0 {
				continue
			}
			if fp, err := sizing.ReadFootprint(procRoot, w.Pid); err == nil {
				sample[w.Pid] = fp.USS
			}
		}
		select {
		case out <- sample:
		default:
		}
	}
}
