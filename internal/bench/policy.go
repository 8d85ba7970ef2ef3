package bench

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/gornhq/gorn/internal/sizing"
)

// Run is one measured configuration: a worker count of a class under a CPU limit, or a
// pod layout. Durations are in milliseconds and CPU in CPUs (seconds per second), so the
// JSON reads without units.
type Run struct {
	Class   string `json:"class"`
	Threads int    `json:"threads,omitempty"`
	// Workers is the worker count asked for (-w), or for a layout the workers the pods ran
	// in all (each pod sized itself).
	Workers int    `json:"workers"`
	Layout  string `json:"layout,omitempty"` // "2x1": two pods of one CPU; "" in a worker sweep
	Pods    int    `json:"pods"`
	Repeat  int    `json:"repeat,omitempty"` // 1-based, when --repeats > 1

	Requests int64   `json:"requests"` // answered
	Errors   int64   `json:"errors"`   // transport failures and status >= 400
	RPS      float64 `json:"rps"`
	P50      float64 `json:"p50_ms"`
	P90      float64 `json:"p90_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`

	CPULimit    float64 `json:"cpu_limit"` // the quota in all (or the pinned CPUs)
	CPUUsed     float64 `json:"cpu_used"`  // the server tree's average
	Periods     int64   `json:"nr_periods"`
	Throttled   int64   `json:"nr_throttled"`
	ThrottledMs float64 `json:"throttled_ms"`
	PSSBytes    int64   `json:"pss_bytes"` // the server tree's (master and workers) at the end

	GeneratorCPU   float64  `json:"generator_cpu"`
	OtherCPU       float64  `json:"other_cpu"` // what the rest of the machine used meanwhile
	Noisy          bool     `json:"noisy"`     // OtherCPU was high enough to blur the figures
	GeneratorBound bool     `json:"generator_bound"`
	Note           string   `json:"note,omitempty"`
	ErrorSamples   []string `json:"error_samples,omitempty"`
}

func (r *Run) addNote(n string) {
	if r.Note != "" {
		r.Note += "; "
	}
	r.Note += n
}

// Label names the run in a recommendation: "4 sync workers" or "layout 2x1 (2 pods, 6
// sync workers)".
func (r Run) Label() string {
	class := r.Class
	if r.Threads > 0 {
		class = fmt.Sprintf("%s (%d threads)", r.Class, r.Threads)
	}
	if r.Layout != "" {
		return fmt.Sprintf("layout %s (%s, %s)", r.Layout, plural(r.Pods, "pod"), plural(r.Workers, class+" worker"))
	}
	return plural(r.Workers, class+" worker")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// Thresholds of the policy.
const (
	// NearBest is how close to the best throughput a run must be to count as as good:
	// run-to-run noise on a shared machine is a few percent.
	NearBest = 0.03
	// maxErrorRate disqualifies runs that failed requests: their throughput is not served.
	maxErrorRate = 0.01
	// machineBusy and quotaUsed decide GeneratorBound.
	machineBusy = 0.9
	quotaUsed   = 0.9
	// busyOthers is the share of the machine other processes may use before a run is
	// called noisy: they compete with the server and the generator for the same CPUs.
	busyOthers = 0.15
)

// GeneratorBound says whether a run measured the load generator rather than the server:
// the machine's CPUs were nearly all busy (generator plus server) while the server stayed
// below its CPU limit. The server could have done more; the generator, which runs outside
// the limit on the same machine, could not ask for it. The reason is "" when not bound.
func GeneratorBound(generator, server, limit, machine float64) (bool, string) {
	if machine <= 0 || limit <= 0 {
		return false, ""
	}
	if generator+server >= machineBusy*machine && server < quotaUsed*limit {
		return true, fmt.Sprintf("generator-bound: the machine's %s CPUs were busy (load generator %.2f, server %.2f of its %s): "+
			"the generator, not the server's limit, set this number; use fewer connections, a lower --cpus or a bigger machine",
			sizing.FormatCPUs(machine), generator, server, sizing.FormatCPUs(limit))
	}
	return false, ""
}

// Recommendation is the policy's answer for a set of runs.
type Recommendation struct {
	Index  int    `json:"index"` // into the runs; -1 when there is none
	Label  string `json:"label"`
	Reason string `json:"reason"`
}

// Recommend picks, among the runs that measured the server (not generator-bound, under 1%
// errors), those within NearBest of the best throughput, and of those the one with the
// lowest p99; a run with fewer workers (then less memory) whose p99 is within 5% of that
// wins, since it costs less for the same service.
func Recommend(runs []Run) Recommendation {
	best := -1
	for i, r := range runs {
		if valid(r) && (best < 0 || r.RPS > runs[best].RPS) {
			best = i
		}
	}
	if best < 0 {
		return Recommendation{Index: -1, Reason: "no recommendation: every run failed requests or was bounded by the load generator"}
	}
	top := runs[best].RPS
	lowP99 := math.Inf(1)
	for _, r := range runs {
		if near(r, top) {
			lowP99 = min(lowP99, r.P99)
		}
	}
	pick := -1
	for i, r := range runs {
		if !near(r, top) || r.P99 > lowP99*1.05 {
			continue
		}
		if pick < 0 || cheaper(r, runs[pick]) {
			pick = i
		}
	}
	p := runs[pick]
	var why []string
	if pick == best {
		why = append(why, fmt.Sprintf("the best throughput (%.0f req/s)", p.RPS))
	} else {
		why = append(why, fmt.Sprintf("within %.0f%% of the best throughput (%.0f of %.0f req/s)",
			100*(top-p.RPS)/top+0.5, p.RPS, top))
	}
	why = append(why, fmt.Sprintf("p99 %s", FormatMs(p.P99)))
	if p.PSSBytes > 0 {
		why = append(why, sizing.FormatBytes(p.PSSBytes))
	}
	reason := fmt.Sprintf("%s: %s", p.Label(), strings.Join(why, ", "))
	if moreAddNothing(runs, p, top) {
		reason += "; more workers add memory, not throughput"
	} else if largest(runs, p) && pick == best {
		reason += "; it had the most workers tried: measure higher counts too"
	}
	noisy := 0
	for _, r := range runs {
		if r.Noisy {
			noisy++
		}
	}
	if noisy > 0 {
		reason += fmt.Sprintf("; but %d of %d runs shared the machine with other busy processes: repeat on a quiet machine", noisy, len(runs))
	}
	return Recommendation{Index: pick, Label: p.Label(), Reason: reason}
}

// RecommendMedians is Recommend over one run per configuration: with --repeats, the run
// with the median throughput of its configuration's repeats, so one lucky or unlucky
// repeat does not decide. The index refers to runs.
func RecommendMedians(runs []Run) Recommendation {
	type key struct {
		class, layout    string
		threads, workers int
	}
	groups := map[key][]int{}
	var order []key
	for i, r := range runs {
		k := key{r.Class, r.Layout, r.Threads, r.Workers}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	var medians []Run
	var index []int
	for _, k := range order {
		g := groups[k]
		sort.Slice(g, func(a, b int) bool { return runs[g[a]].RPS < runs[g[b]].RPS })
		m := g[(len(g)-1)/2]
		medians, index = append(medians, runs[m]), append(index, m)
	}
	rec := Recommend(medians)
	if rec.Index >= 0 {
		rec.Index = index[rec.Index]
		if len(medians) < len(runs) {
			rec.Reason += " (medians of the repeats)"
		}
	}
	return rec
}

func valid(r Run) bool {
	return !r.GeneratorBound && r.Requests > 0 && float64(r.Errors) <= maxErrorRate*float64(r.Requests+r.Errors)
}

func near(r Run, top float64) bool { return valid(r) && r.RPS >= (1-NearBest)*top }

// cheaper orders by workers, then memory, then p99.
func cheaper(a, b Run) bool {
	if a.Workers != b.Workers {
		return a.Workers < b.Workers
	}
	if a.PSSBytes != b.PSSBytes && a.PSSBytes > 0 && b.PSSBytes > 0 {
		return a.PSSBytes < b.PSSBytes
	}
	return a.P99 < b.P99
}

// moreAddNothing: some valid run of the same kind had more workers and none of those beat
// the pick's throughput by more than NearBest.
func moreAddNothing(runs []Run, p Run, top float64) bool {
	more := false
	for _, r := range runs {
		if !valid(r) || r.Class != p.Class || r.Threads != p.Threads || r.Layout != "" || p.Layout != "" || r.Workers <= p.Workers {
			continue
		}
		if r.RPS > p.RPS*(1+NearBest) {
			return false
		}
		more = true
	}
	return more
}

func largest(runs []Run, p Run) bool {
	if p.Layout != "" {
		return false
	}
	for _, r := range runs {
		if r.Class == p.Class && r.Threads == p.Threads && r.Workers > p.Workers {
			return false
		}
	}
	return true
}

// FormatMs prints milliseconds with two significant decimals below 10 ms: 0.42ms, 12ms.
func FormatMs(ms float64) string {
	switch {
	case ms < 10:
		return fmt.Sprintf("%.2gms", ms)
	default:
		return fmt.Sprintf("%.0fms", ms)
	}
}
