// Package metrics serves gorn's observability endpoints from the Go master: Prometheus
// metrics on /metrics, liveness on /healthz and readiness on /readyz.
//
// Nothing here keeps counters of its own. At scrape time a Collector asks the master
// loop for one master.Snapshot (the pattern of client_golang's
// example_clustermanager_test.go), reads the listen queues of the TCP listeners with
// TCP_INFO and the processes' memory from /proc/PID/smaps_rollup, and emits const metrics.
// Memory is read at scrape time, on the scraping goroutine, never on the master loop: the
// values are as fresh as the scrape and cost nothing when nobody scrapes. (The master's
// own decisions, --max-worker-memory and the sizing, use samples taken off its loop too;
// see cmd/gorn/memwatch.go.)
//
// Request counters come from the workers' scoreboard slots plus the snapshot's Retired
// totals (the final counts of workers that have exited), so they never go backwards when
// workers are replaced.
//
// Everything is registered on a registry the caller passes in; the global registry is
// never touched.
package metrics

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/gornhq/gorn/internal/cgroup"
	"github.com/gornhq/gorn/master"
)

// DefaultTimeout is how long a scrape or a health check waits for the master loop.
const DefaultTimeout = time.Second

// Source answers snapshot queries; *master.Master is one.
type Source interface {
	Snapshot(ctx context.Context) (master.Snapshot, error)
}

// Listener is a listening socket whose accept queue is reported; *socket.Listener is one.
// Only TCP listeners are reported: TCP_INFO does not cover unix sockets.
type Listener interface {
	Fd() int
	String() string // the bound address, the value of the "listener" label
}

// Limits is what the worker count was sized from, for the sizing metrics.
type Limits struct {
	// CPUs is the CPU count the worker count is sized for (an override, or the smaller
	// of the affinity mask and the cgroup CPU quota); 0 = unknown, not reported.
	CPUs float64
	// CPUsSource says where CPUs came from: "quota", "affinity", "--cpus", "GORN_CPUS".
	CPUsSource string
	// MemoryLimitBytes is the cgroup memory limit; 0 = no limit, not reported.
	MemoryLimitBytes int64
	// WorkersSource says where the worker count came from: "auto" (sized from the CPU
	// and memory limits), "--workers" or "WEB_CONCURRENCY".
	WorkersSource string
}

// Options configure a Collector and the HTTP handler.
type Options struct {
	// Source is the master loop. Required.
	Source Source
	// Listeners are the sockets whose listen queues are reported.
	Listeners []Listener
	// Limits, if set, is called at each scrape for the sizing metrics.
	Limits func() Limits
	// CPUStat, if set, is called at each scrape for the CPU cgroup's usage and throttling
	// (cgroup.ReadCPUStat of the master's cgroup, which its workers share). An error
	// wrapping os.ErrNotExist means there is no such group: nothing is reported.
	CPUStat func() (cgroup.CPUStat, error)
	// HookHost, if set, returns how many times the hook host was restarted.
	HookHost func() uint64
	// MinReady is how many ready workers /readyz (and gorn_ready) requires; values
	// below 1 mean 1.
	MinReady int
	// Version is the gorn version in gorn_build_info.
	Version string
	// Timeout bounds each wait for the master loop; 0 means DefaultTimeout.
	Timeout time.Duration
	// Processes, if set, returns gorn's processes other than the workers by role
	// ("master", "hooks"), read at each scrape: their memory is reported and counted in
	// the tree's total. A preload mold is one of them, so the pages the workers share
	// with it count once.
	Processes func() map[string]int
	// ProcRoot is where /proc is read for worker memory; "" means "/proc".
	ProcRoot string
	// Log receives scrape failures; nil means no logging.
	Log *zap.Logger
}

func (o Options) timeout() time.Duration {
	if o.Timeout <= 0 {
		return DefaultTimeout
	}
	return o.Timeout
}

func (o Options) minReady() int { return max(o.MinReady, 1) }

func (o Options) log() *zap.Logger {
	if o.Log == nil {
		return zap.NewNop()
	}
	return o.Log
}
