package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/gornhq/gorn/internal/scoreboard"
	"github.com/gornhq/gorn/internal/sizing"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/socket"
)

const namespace = "gorn"

func newDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

// The metrics; README.md ("Metrics, health and logs") lists them.
var (
	descBuildInfo = newDesc("build_info", "gorn's version and the Go version it was built with; always 1.", "version", "goversion")

	descWorkers    = newDesc("workers", "Worker processes by state: booting (not ready yet), ready (idle), busy (serving a request), draining (stopping).", "state")
	descDesired    = newDesc("workers_desired", "Number of workers the master aims to run.")
	descReady      = newDesc("ready", "1 when /readyz passes: serving, not shutting down, and at least --min-ready workers ready.")
	descGeneration = newDesc("generation", "Reload generation new workers start with: 1, plus one per reload (HUP).")
	descSpawns     = newDesc("worker_spawns_total", "Worker processes started.")
	descExits      = newDesc("worker_exits_total", "Worker processes exited, by reason.", "reason")

	descRequests = newDesc("requests_total", "Requests answered, by method and status class.", "method", "status_class")
	descDuration = newDesc("request_duration_seconds", "Request duration measured by the worker, from the request head parsed to the response finished.")
	descInFlight = newDesc("requests_in_flight", "Requests being served now: one per busy sync worker, the in-progress count of a threaded one.")
	descBytes    = newDesc("response_body_bytes_total", "Response body bytes written.")
	descPaths    = newDesc("workers_request_path", "Live workers by the request path they run: native (the C accelerator) or python (its pure-Python twin); see GORN_NATIVE.", "path")
	descConns    = newDesc("connections_open", "Client connections the workers hold open: running a request, waiting for a request head, or kept alive between requests. A worker holding connections is busy only while it runs the app.")

	descQueue   = newDesc("listen_queue_length", "Connections waiting in the listen queue for a worker to accept them (TCP listeners).", "listener")
	descBacklog = newDesc("listen_backlog", "Listen queue limit: the listen(2) backlog capped at net.core.somaxconn; connections beyond backlog+1 are dropped.", "listener")

	descRSS = newDesc("worker_rss_bytes", "Resident set size of each live worker, by scoreboard slot.", "slot")
	descPSS = newDesc("worker_pss_bytes", "Proportional set size of each live worker (shared pages divided among their sharers), by scoreboard slot.", "slot")
	descUSS = newDesc("worker_uss_bytes", "Unique set size of each live worker, by scoreboard slot: the pages only it maps, which its exit frees; the memory one more worker costs.", "slot")

	descProcPSS = newDesc("process_pss_bytes", "Proportional set size of gorn's processes other than the workers: the master, and the hook host or preload mold when there is one.", "process")
	descProcUSS = newDesc("process_uss_bytes", "Unique set size of gorn's processes other than the workers.", "process")
	descTreePSS = newDesc("memory_pss_bytes", "Memory of the whole process tree (master, hook host or mold, workers): the sum of their PSS, in which a page shared by several of them counts once.")

	descCPUs        = newDesc("cpus", "CPUs the worker count is sized for.")
	descMemoryLimit = newDesc("memory_limit_bytes", "Memory limit of the cgroup; absent when there is none.")
	descSizingInfo  = newDesc("sizing_info", "Where the worker count and the CPU count came from; always 1.", "workers_source", "cpus_source")

	descCgroupUsage         = newDesc("cgroup_cpu_usage_seconds_total", "CPU time used by gorn's CPU cgroup (the master, its workers and anything else in the group).")
	descCgroupPeriods       = newDesc("cgroup_cpu_periods_total", "CFS enforcement periods of gorn's CPU cgroup in which it ran under a quota.")
	descCgroupThrottled     = newDesc("cgroup_cpu_throttled_periods_total", "CFS periods in which gorn's CPU cgroup used up its quota and was throttled.")
	descCgroupThrottledTime = newDesc("cgroup_cpu_throttled_seconds_total", "Time gorn's CPU cgroup was throttled, summed over its threads' run queues.")
	descHookRestarts        = newDesc("hook_host_restarts_total", "Times the hook host (the config file's master-side server hooks) died or was killed as hung and was started again; absent without one.")

	descScrapeSuccess  = newDesc("scrape_collector_success", "1 if this part of the scrape succeeded.", "collector")
	descScrapeDuration = newDesc("scrape_collector_duration_seconds", "Time this part of the scrape took.", "collector")

	allDescs = []*prometheus.Desc{
		descBuildInfo, descWorkers, descDesired, descReady, descGeneration, descSpawns, descExits,
		descRequests, descDuration, descInFlight, descBytes, descConns, descPaths, descQueue, descBacklog,
		descRSS, descPSS, descUSS, descProcPSS, descProcUSS, descTreePSS,
		descCPUs, descMemoryLimit, descSizingInfo, descHookRestarts,
		descCgroupUsage, descCgroupPeriods, descCgroupThrottled, descCgroupThrottledTime, descScrapeSuccess, descScrapeDuration,
	}
)

// workerStates are the values of the "state" label, as master.WorkerInfo.State has them.
var workerStates = []string{"booting", "ready", "busy", "draining"}

// exitReasons are the exit reasons always reported, zero or not.
var exitReasons = []string{
	master.ReasonCrash, master.ReasonTimeout, master.ReasonBoot, master.ReasonRecycled, master.ReasonReload,
	master.ReasonScaledDown, master.ReasonShutdown, master.ReasonSignal, master.ReasonOOM, master.ReasonMemory,
}

// statusClasses are the values of the "status_class" label, in scoreboard order.
var statusClasses = [scoreboard.Classes]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// Collector is a prometheus.Collector over the master: each Collect takes one snapshot
// of the master loop and emits const metrics from it. It is safe for concurrent use.
type Collector struct {
	opts      Options
	goVersion string           // runtime.Version(); fixed in golden tests
	now       func() time.Time // for the scrape durations; a fixed clock in golden tests
}

// NewCollector returns a Collector for opts; opts.Source is required.
func NewCollector(opts Options) *Collector {
	return &Collector{opts: opts, goVersion: runtime.Version(), now: time.Now}
}

// Describe sends the descriptors of every metric Collect may emit.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect takes one snapshot of the master loop, waiting at most Options.Timeout, and
// emits the metrics. When the master does not answer, it still reports the listen queues
// (the saturation signal matters most then) and gorn_scrape_collector_success{collector="master"} 0.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	emit(ch, descBuildInfo, prometheus.GaugeValue, 1, c.opts.Version, c.goVersion)
	if c.opts.HookHost != nil {
		ch <- prometheus.MustNewConstMetric(descHookRestarts, prometheus.CounterValue, float64(c.opts.HookHost()))
	}
	if c.opts.Limits != nil {
		collectLimits(ch, c.opts.Limits())
	}
	if c.opts.CPUStat != nil {
		start := c.now()
		c.scraped(ch, "cgroup", start, c.collectCPUStat(ch))
	}

	start := c.now()
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.timeout())
	snap, err := c.opts.Source.Snapshot(ctx)
	cancel()
	c.scraped(ch, "master", start, err == nil)
	if err != nil {
		c.opts.log().Warn("scrape: the master loop did not answer", zap.Error(err))
	} else {
		collectSnapshot(ch, snap, c.opts.minReady())
	}

	if len(c.opts.Listeners) > 0 {
		start = c.now()
		c.scraped(ch, "listeners", start, c.collectListeners(ch))
	}
	if err == nil && (len(snap.Workers) > 0 || c.opts.Processes != nil) {
		start = c.now()
		c.scraped(ch, "memory", start, c.collectMemory(ch, snap.Workers))
	}
}

func (c *Collector) scraped(ch chan<- prometheus.Metric, part string, start time.Time, ok bool) {
	emit(ch, descScrapeDuration, prometheus.GaugeValue, c.now().Sub(start).Seconds(), part)
	emit(ch, descScrapeSuccess, prometheus.GaugeValue, b2f(ok), part)
}

func collectLimits(ch chan<- prometheus.Metric, l Limits) {
	if l.CPUs > 0 {
		emit(ch, descCPUs, prometheus.GaugeValue, l.CPUs)
	}
	if l.MemoryLimitBytes > 0 {
		emit(ch, descMemoryLimit, prometheus.GaugeValue, float64(l.MemoryLimitBytes))
	}
	emit(ch, descSizingInfo, prometheus.GaugeValue, 1, orUnknown(l.WorkersSource), orUnknown(l.CPUsSource))
}

func collectSnapshot(ch chan<- prometheus.Metric, s master.Snapshot, minReady int) {
	states := make(map[string]int, len(workerStates))
	inFlight, conns := 0, uint64(0)
	var native, python int
	total := s.Retired
	for _, w := range s.Workers {
		states[w.State]++
		switch {
		case w.Status.InFlight > 0:
			inFlight += int(w.Status.InFlight)
		case w.Status.BusySince != 0:
			inFlight++
		}
		conns += w.Status.Connections
		switch w.Status.RequestPath {
		case scoreboard.RequestPathNative:
			native++
		case scoreboard.RequestPathPython:
			python++
		}
		total.Add(w.Status)
	}
	for _, st := range workerStates {
		emit(ch, descWorkers, prometheus.GaugeValue, float64(states[st]), st)
	}
	emit(ch, descDesired, prometheus.GaugeValue, float64(s.Desired))
	emit(ch, descReady, prometheus.GaugeValue, b2f(ready(s, minReady) == ""))
	emit(ch, descGeneration, prometheus.GaugeValue, float64(s.Generation))

	emit(ch, descSpawns, prometheus.CounterValue, float64(s.Spawns))
	for _, r := range exitReasons {
		emit(ch, descExits, prometheus.CounterValue, float64(s.Exits[r]), r)
	}
	var other []string // reasons a newer master may add
	for r := range s.Exits {
		if !slices.Contains(exitReasons, r) {
			other = append(other, r)
		}
	}
	sort.Strings(other)
	for _, r := range other {
		emit(ch, descExits, prometheus.CounterValue, float64(s.Exits[r]), r)
	}

	for m, method := range scoreboard.MethodNames {
		for cl, class := range statusClasses {
			emit(ch, descRequests, prometheus.CounterValue, float64(total.Counters[m][cl]), method, class)
		}
	}
	emitHistogram(ch, total)
	emit(ch, descInFlight, prometheus.GaugeValue, float64(inFlight))
	emit(ch, descConns, prometheus.GaugeValue, float64(conns))
	emit(ch, descPaths, prometheus.GaugeValue, float64(native), "native")
	emit(ch, descPaths, prometheus.GaugeValue, float64(python), "python")
	emit(ch, descBytes, prometheus.CounterValue, float64(total.BytesSent))
}

// emitHistogram turns the scoreboard's non-cumulative bucket counts into Prometheus's
// cumulative ones; the last scoreboard bucket is +Inf, which is the count.
func emitHistogram(ch chan<- prometheus.Metric, s scoreboard.Slot) {
	buckets := make(map[float64]uint64, len(scoreboard.BucketBounds))
	var cum uint64
	for i, le := range scoreboard.BucketBounds {
		cum += s.Histogram[i]
		buckets[le] = cum
	}
	cum += s.Histogram[scoreboard.Buckets-1]
	sum := float64(s.DurationSum) / 1e6
	m, err := prometheus.NewConstHistogram(descDuration, cum, sum, buckets)
	if err != nil {
		m = prometheus.NewInvalidMetric(descDuration, err)
	}
	ch <- m
}

// collectCPUStat reports the CPU cgroup's usage and throttling counters, those it keeps.
// It returns false if the counters could not be read (a missing group is no failure).
func (c *Collector) collectCPUStat(ch chan<- prometheus.Metric) bool {
	s, err := c.opts.CPUStat()
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	if err != nil {
		c.opts.log().Warn("scrape: reading the CPU cgroup's counters", zap.Error(err))
		return false
	}
	if s.UsageOK {
		emit(ch, descCgroupUsage, prometheus.CounterValue, s.Usage.Seconds())
	}
	if s.Throttling {
		emit(ch, descCgroupPeriods, prometheus.CounterValue, float64(s.Periods))
		emit(ch, descCgroupThrottled, prometheus.CounterValue, float64(s.Throttled))
		emit(ch, descCgroupThrottledTime, prometheus.CounterValue, s.ThrottledTime.Seconds())
	}
	return true
}

// collectListeners reports the accept queue of each TCP listener; unix listeners are
// skipped. It returns false if a TCP listener could not be read.
func (c *Collector) collectListeners(ch chan<- prometheus.Metric) bool {
	ok := true
	for _, l := range c.opts.Listeners {
		queued, backlog, err := socket.QueueDepth(l.Fd())
		if errors.Is(err, errors.ErrUnsupported) {
			continue
		}
		if err != nil {
			ok = false
			c.opts.log().Warn("scrape: reading the listen queue", zap.String("listener", l.String()), zap.Error(err))
			continue
		}
		emit(ch, descQueue, prometheus.GaugeValue, float64(queued), l.String())
		emit(ch, descBacklog, prometheus.GaugeValue, float64(backlog), l.String())
	}
	return ok
}

// collectMemory reports each worker's RSS, PSS and USS, the other processes' PSS and USS,
// and the tree's total PSS. A process that exited since the snapshot is skipped; any other
// read failure makes the part fail (and leaves the total out: it would be too small).
func (c *Collector) collectMemory(ch chan<- prometheus.Metric, workers []master.WorkerInfo) bool {
	ok := true
	var total int64
	read := func(pid int) (sizing.Footprint, bool) {
		fp, err := sizing.ReadFootprint(c.opts.ProcRoot, pid)
		if err != nil {
			if !exited(c.opts.ProcRoot, pid) {
				ok = false
				c.opts.log().Warn("scrape: reading process memory", zap.Int("pid", pid), zap.Error(err))
			}
			return fp, false
		}
		total += fp.PSS
		return fp, true
	}
	for _, w := range workers {
		if w.Pid <= 0 {
			continue
		}
		if fp, found := read(w.Pid); found {
			slot := strconv.Itoa(w.Slot)
			emit(ch, descRSS, prometheus.GaugeValue, float64(fp.RSS), slot)
			emit(ch, descPSS, prometheus.GaugeValue, float64(fp.PSS), slot)
			emit(ch, descUSS, prometheus.GaugeValue, float64(fp.USS), slot)
		}
	}
	if c.opts.Processes != nil {
		procs := c.opts.Processes()
		roles := make([]string, 0, len(procs))
		for role := range procs {
			roles = append(roles, role)
		}
		sort.Strings(roles)
		for _, role := range roles {
			if fp, found := read(procs[role]); found {
				emit(ch, descProcPSS, prometheus.GaugeValue, float64(fp.PSS), role)
				emit(ch, descProcUSS, prometheus.GaugeValue, float64(fp.USS), role)
			}
		}
	}
	if ok {
		emit(ch, descTreePSS, prometheus.GaugeValue, float64(total))
	}
	return ok
}

// exited reports whether process pid is gone or a zombie (its memory files are then
// missing or empty): a worker that exited after the snapshot, not a scrape failure.
func exited(procRoot string, pid int) bool {
	if procRoot == "" {
		procRoot = "/proc"
	}
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH)
	}
	// "pid (comm) S ...": the state follows the last ')', as comm may hold one.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] == 'Z' || b[i+2] == 'X'
}

// ready returns "" when the master is ready with at least minReady workers, else why not.
func ready(s master.Snapshot, minReady int) string {
	switch {
	case !s.Ready && s.ReadyCount > 0:
		return "shutting down"
	case s.ReadyCount < minReady:
		return fmt.Sprintf("%d of %d workers ready, need %d", s.ReadyCount, s.Desired, minReady)
	case !s.Ready:
		return "not serving"
	}
	return ""
}

func emit(ch chan<- prometheus.Metric, d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	ch <- m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
