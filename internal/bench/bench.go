// Package bench measures how many workers (and which pod layout) an app should run: it
// starts gorn itself on 127.0.0.1 inside a CPU limit it creates (a cgroup quota, or CPU
// affinity as a weaker unprivileged fallback), drives it with internal/loadgen from
// outside the limit, and reports throughput, latency percentiles, CPU use and throttling,
// and memory for each worker count or layout, with a recommendation.
//
// The policy (Recommend, GeneratorBound) and the input parsers are pure and unit-tested;
// Sweep does the processes, cgroups and sockets.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/internal/loadgen"
	"github.com/gornhq/gorn/internal/sizing"
)

// Options is one `gorn bench` invocation.
type Options struct {
	Exe     string   // the gorn binary to serve with
	Dir     string   // working directory for the servers ("" = the current one)
	Module  string   // MODULE:APP
	AppArgs []string // serving flags passed through (--chdir, --python, ...)
	Env     []string // the servers' environment (nil = this process's)

	Classes []string // worker classes to sweep; default sync
	Threads int      // --threads for threaded classes; 0 = gorn's default
	Workers []int    // worker counts; nil = around gorn's own choice
	Layouts []Layout // pod layouts instead of a worker sweep

	CPUs      float64 // the CPU limit of a run (worker sweep)
	Isolation string  // IsolationAuto, IsolationCgroup or IsolationAffinity

	Requests    []loadgen.Request
	Connections int
	Rate        float64
	KeepAlive   bool
	MaxRequests int64 // per run
	Warmup      time.Duration
	Duration    time.Duration
	Repeats     int

	MachineCPUs int       // CPUs this process may use (0 = detect)
	Progress    io.Writer // a terminal for live progress; nil for none
}

// Bounds that keep a bench from running away.
const (
	MaxDuration    = 10 * time.Minute
	MaxRepeats     = 10
	MaxConnections = 10000
	MaxRate        = 1e6
	// DefaultMaxRequests bounds each run's requests when none is given.
	DefaultMaxRequests = 10_000_000
)

// Pick is the count gorn would choose by itself for a class on the run's CPUs.
type Pick struct {
	Class   string  `json:"class"`
	CPUs    float64 `json:"cpus"` // of a run, or of one pod of a layout
	Workers int     `json:"workers"`
	Formula string  `json:"formula"`
}

// Report is the outcome of a bench.
type Report struct {
	Module         string         `json:"module"`
	MachineCPUs    int            `json:"machine_cpus"`
	CPUs           float64        `json:"cpus"` // per run (sweep), or per layout in all
	Isolation      string         `json:"isolation"`
	IsolationNote  string         `json:"isolation_note,omitempty"`
	Load           string         `json:"load"`
	Runs           []Run          `json:"runs"`
	GornPicks      []Pick         `json:"gorn_picks"`
	Recommendation Recommendation `json:"recommendation"`
	Interrupted    bool           `json:"interrupted,omitempty"`
}

// Machine returns how many CPUs this process may run on.
func Machine() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil || set.Count() == 0 {
		return 1
	}
	return set.Count()
}

// Validate checks the options and fills in defaults; its errors wrap ErrUsage.
func (o *Options) Validate() error {
	if o.Module == "" {
		return usagef("no MODULE:APP given")
	}
	if o.MachineCPUs == 0 {
		o.MachineCPUs = Machine()
	}
	if len(o.Classes) == 0 {
		o.Classes = []string{"sync"}
	}
	for _, c := range o.Classes {
		if _, _, err := sizing.ForCPUs(c, 1); err != nil {
			return usagef("worker class %q: want sync, gthread, gevent, eventlet or asgi", c)
		}
	}
	machine := float64(o.MachineCPUs)
	if len(o.Layouts) == 0 {
		if o.CPUs <= 0 || o.CPUs > machine {
			return usagef("--cpus %s: want more than 0 and at most this machine's %d CPUs", sizing.FormatCPUs(o.CPUs), o.MachineCPUs)
		}
	}
	for _, l := range o.Layouts {
		if l.Total() > machine+1e-9 {
			return usagef("layout %s takes %s CPUs: above this machine's %d", l, sizing.FormatCPUs(l.Total()), o.MachineCPUs)
		}
	}
	for _, w := range o.Workers {
		if w < 1 || w > maxWorkers {
			return usagef("%d workers: want 1..%d", w, maxWorkers)
		}
	}
	switch o.Isolation {
	case "":
		o.Isolation = IsolationAuto
	case IsolationAuto, IsolationCgroup, IsolationAffinity:
	default:
		return usagef("--isolation %q: want auto, cgroup or affinity", o.Isolation)
	}
	switch {
	case o.Duration <= 0 || o.Duration > MaxDuration:
		return usagef("--duration %s: want more than 0 and at most %s", o.Duration, MaxDuration)
	case o.Warmup < 0 || o.Warmup > MaxDuration:
		return usagef("--warmup %s: want 0 to %s", o.Warmup, MaxDuration)
	case o.Connections < 1 || o.Connections > MaxConnections:
		return usagef("--connections %d: want 1..%d", o.Connections, MaxConnections)
	case o.Rate < 0 || o.Rate > MaxRate:
		return usagef("--rate %v: want 0 (closed loop) up to %g requests/s", o.Rate, MaxRate)
	case o.Repeats < 0 || o.Repeats > MaxRepeats:
		return usagef("--repeats %d: want 1..%d", o.Repeats, MaxRepeats)
	case o.MaxRequests < 0:
		return usagef("--request-limit %d: want >= 0", o.MaxRequests)
	}
	if o.Repeats == 0 {
		o.Repeats = 1
	}
	if o.MaxRequests == 0 {
		o.MaxRequests = DefaultMaxRequests
	}
	if o.Env == nil {
		o.Env = os.Environ()
	}
	return nil
}

// DefaultWorkers is the sweep around gorn's own choice for class on cpus: two fewer to
// two more, at least 1.
func DefaultWorkers(class string, cpus float64) []int {
	n, _, _ := sizing.ForCPUs(class, cpus)
	var out []int
	for w := max(1, n-2); w <= n+2; w++ {
		out = append(out, w)
	}
	return out
}

// plan is one run to do.
type plan struct {
	class   string
	workers int    // 0 in a layout: each pod sizes itself
	layout  Layout // Pods 0 in a worker sweep
	repeat  int
}

func (o *Options) plans() []plan {
	var out []plan
	for _, class := range o.Classes {
		if len(o.Layouts) > 0 {
			for _, l := range o.Layouts {
				for r := 1; r <= o.Repeats; r++ {
					out = append(out, plan{class: class, layout: l, repeat: r})
				}
			}
			continue
		}
		ws := o.Workers
		if ws == nil {
			ws = DefaultWorkers(class, o.CPUs)
		}
		for _, w := range ws {
			for r := 1; r <= o.Repeats; r++ {
				out = append(out, plan{class: class, workers: w, repeat: r})
			}
		}
	}
	return out
}

// Sweep runs every planned measurement in turn. When ctx ends (Ctrl-C) it stops the
// current run, cleans up, and returns what was measured so far with Interrupted set.
func Sweep(ctx context.Context, o Options) (Report, error) {
	if err := o.Validate(); err != nil {
		return Report{}, err
	}
	rep := Report{Module: o.Module, MachineCPUs: o.MachineCPUs, CPUs: o.CPUs, Load: o.describeLoad()}
	if len(o.Layouts) > 0 {
		rep.CPUs = o.Layouts[0].Total()
	}
	cpus := []float64{o.CPUs}
	if len(o.Layouts) > 0 {
		cpus = nil
		for _, l := range o.Layouts {
			if !slices.Contains(cpus, l.CPUs) {
				cpus = append(cpus, l.CPUs) // what each pod picks
			}
		}
	}
	for _, c := range o.Classes {
		for _, n := range cpus {
			w, formula, _ := sizing.ForCPUs(c, n)
			rep.GornPicks = append(rep.GornPicks, Pick{Class: c, CPUs: n, Workers: w, Formula: formula})
		}
	}
	plans := o.plans()
	prog := newProgress(o.Progress, len(plans), o.Warmup+o.Duration)
	defer prog.finish()
	for i, p := range plans {
		r, err := o.measure(ctx, p, &rep, prog.start(i, p))
		if ctx.Err() != nil {
			rep.Interrupted = true
			break
		}
		if err != nil {
			return rep, err
		}
		rep.Runs = append(rep.Runs, r)
	}
	rep.Recommendation = RecommendMedians(rep.Runs)
	return rep, nil
}

func (o *Options) describeLoad() string {
	var parts []string
	if o.Rate > 0 {
		parts = append(parts, fmt.Sprintf("open loop at %g req/s over up to %d connections", o.Rate, o.Connections))
	} else {
		parts = append(parts, fmt.Sprintf("%d connections (closed loop)", o.Connections))
	}
	if o.KeepAlive {
		parts = append(parts, "keep-alive")
	} else {
		parts = append(parts, "Connection: close")
	}
	switch n := len(o.Requests); n {
	case 0:
		parts = append(parts, "GET /")
	case 1:
		parts = append(parts, method(o.Requests[0])+" "+o.Requests[0].Path)
	default:
		parts = append(parts, fmt.Sprintf("a mix of %d requests", n))
	}
	parts = append(parts, fmt.Sprintf("%s per run after %s warm-up", o.Duration, o.Warmup))
	return strings.Join(parts, ", ")
}

func method(r loadgen.Request) string {
	if r.Method == "" {
		return "GET"
	}
	return r.Method
}

// pod is one server and its limit.
type pod struct {
	lim limit
	srv *server
}

// measure does one run: start the pods, warm up, measure, stop.
func (o *Options) measure(ctx context.Context, p plan, rep *Report, live func(*loadgen.Runner)) (Run, error) {
	run := Run{Class: p.class, Workers: p.workers, Pods: 1}
	if o.Repeats > 1 {
		run.Repeat = p.repeat
	}
	if p.class != "sync" && o.Threads > 0 {
		run.Threads = o.Threads
	}
	podCPUs, nPods := o.CPUs, 1
	if p.layout.Pods > 0 {
		podCPUs, nPods = p.layout.CPUs, p.layout.Pods
		run.Layout, run.Pods = p.layout.String(), p.layout.Pods
	}
	args := append([]string{}, o.AppArgs...)
	args = append(args, "-k", p.class)
	if run.Threads > 0 {
		args = append(args, "--threads", strconv.Itoa(run.Threads))
	}
	if p.workers > 0 {
		args = append(args, "-w", strconv.Itoa(p.workers))
	}
	args = append(args, o.Module)

	var pods []pod
	defer func() {
		for _, pd := range pods {
			if pd.srv != nil {
				pd.srv.stop()
			}
			_ = pd.lim.close()
		}
	}()
	var addrs []string
	for i := range nPods {
		lim, note, err := newLimit(o.Isolation, podCPUs, i)
		if err != nil {
			return run, fmt.Errorf("creating the CPU limit: %w", err)
		}
		pods = append(pods, pod{lim: lim})
		rep.Isolation, rep.IsolationNote = lim.describe(), note
		env := serverEnv(o.Env, lim, podCPUs)
		srv, err := startServer(ctx, o.Exe, o.Dir, env, args, lim, p.workers)
		if err != nil {
			return run, err
		}
		pods[len(pods)-1].srv = srv
		addrs = append(addrs, srv.address())
		run.CPULimit += lim.budget()
	}
	if p.layout.Pods > 0 {
		run.Workers = 0
		for _, pd := range pods {
			run.Workers += len(pd.srv.pids()) - 1 // less the master
		}
	}

	var before counters
	cfg := loadgen.Config{
		Addrs: addrs, Requests: o.Requests, Connections: o.Connections, Rate: o.Rate,
		KeepAlive: o.KeepAlive, MaxRequests: o.MaxRequests, Warmup: o.Warmup, Duration: o.Duration,
		OnMeasure: func() { before = o.sample(pods) },
	}
	runner, err := loadgen.NewRunner(cfg)
	if err != nil {
		return run, fmt.Errorf("preparing the load: %w", err)
	}
	live(runner)
	res := runner.Run(ctx)
	after := o.sample(pods)
	live(nil)
	if before.at.IsZero() { // interrupted during the warm-up
		return run, ctx.Err()
	}

	elapsed := after.at.Sub(before.at).Seconds()
	run.Requests, run.Errors, run.RPS = res.Answered, res.Errors, res.RPS()
	ms := func(q float64) float64 { return float64(res.Latency.Quantile(q)) / 1e6 }
	run.P50, run.P90, run.P99 = ms(0.5), ms(0.9), ms(0.99)
	run.Max = float64(res.Latency.Max()) / 1e6
	run.ErrorSamples = res.Samples
	run.CPUUsed = (after.server - before.server).Seconds() / elapsed
	run.GeneratorCPU = (after.generator - before.generator).Seconds() / elapsed
	run.Periods, run.Throttled = after.periods-before.periods, after.throttled-before.throttled
	run.ThrottledMs = float64(after.throttledNs-before.throttledNs) / 1e6
	if !after.throttleOK {
		run.Periods, run.Throttled, run.ThrottledMs = -1, -1, -1
	}
	for _, pd := range pods {
		run.PSSBytes += treePSS(pd.srv.pids())
		select {
		case <-pd.srv.done:
			run.addNote(errExited.Error())
		default:
		}
	}
	run.OtherCPU = max(0, (after.machine-before.machine).Seconds()/elapsed-run.CPUUsed-run.GeneratorCPU)
	if run.OtherCPU > busyOthers*float64(o.MachineCPUs) {
		run.Noisy = true
		run.addNote(fmt.Sprintf("noisy: other processes on the machine used %.2f CPUs during this run", run.OtherCPU))
	}
	if bound, why := GeneratorBound(run.GeneratorCPU, run.CPUUsed, run.CPULimit, float64(o.MachineCPUs)); bound {
		run.GeneratorBound = true
		run.addNote(why)
	}
	return run, nil
}

// serverEnv is the servers' environment: without sizing overrides, so a pod sizes itself
// from its limit, except under the affinity fallback, where gorn would see whole CPUs and
// is told the pod's CPUs instead.
func serverEnv(base []string, lim limit, cpus float64) []string {
	var env []string
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if k == "WEB_CONCURRENCY" || k == "GORN_CPUS" {
			continue
		}
		env = append(env, kv)
	}
	if _, ok := lim.(*affinityLimit); ok {
		env = append(env, "GORN_CPUS="+sizing.FormatCPUs(cpus))
	}
	return env
}

// counters is one snapshot of what a run is measured by.
type counters struct {
	at          time.Time
	server      time.Duration // CPU time of the server trees
	generator   time.Duration // CPU time of this process
	periods     int64
	throttled   int64
	throttledNs int64
	throttleOK  bool
	machine     time.Duration // busy time of all the machine's CPUs
}

func (o *Options) sample(pods []pod) counters {
	c := counters{throttleOK: true}
	for _, pd := range pods {
		u := pd.lim.usage()
		if u.cpuOK {
			c.server += u.cpu
		} else {
			c.server += treeCPU(pd.srv.pids())
		}
		c.periods += u.periods
		c.throttled += u.throttled
		c.throttledNs += u.throttledNs
		c.throttleOK = c.throttleOK && u.throttleOK
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		c.generator = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	c.machine = machineBusyTime()
	c.at = time.Now()
	return c
}

// IsUsage reports whether err is the user's mistake (exit 2).
func IsUsage(err error) bool { return errors.Is(err, ErrUsage) }
