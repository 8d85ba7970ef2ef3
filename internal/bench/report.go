package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/gornhq/gorn/internal/loadgen"
	"github.com/gornhq/gorn/internal/sizing"
)

// WriteJSON writes the report as one indented JSON object.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("writing JSON: %w", err)
	}
	return nil
}

// WriteText writes the table, gorn's own picks and the recommendation.
func (r Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "gorn bench %s on %d CPUs: %s\n", r.Module, r.MachineCPUs, r.Load)
	fmt.Fprintf(w, "limit: %s\n", r.Isolation)
	if r.IsolationNote != "" {
		fmt.Fprintf(w, "note: %s\n", r.IsolationNote)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	layouts := len(r.Runs) > 0 && r.Runs[0].Layout != ""
	head := "class\tworkers\treq/s\tp50\tp90\tp99\tmax\terrors\tcpu used/limit\tthrottled\tpss\tloadgen cpu\t"
	if layouts {
		head = "layout\t" + head
	}
	fmt.Fprintln(tw, head)
	for i, run := range r.Runs {
		mark := ""
		if i == r.Recommendation.Index {
			mark = " <- recommended"
		}
		if run.GeneratorBound {
			mark = " (generator-bound: not a server figure)"
		}
		workers := fmt.Sprint(run.Workers)
		if !layouts && r.isPick(run) {
			workers += "*"
		}
		if run.Repeat > 0 {
			workers += fmt.Sprintf(" #%d", run.Repeat)
		}
		class := run.Class
		if run.Threads > 0 {
			class = fmt.Sprintf("%s/%dt", run.Class, run.Threads)
		}
		rps, p50, p90, p99, pmax := fmt.Sprintf("%.0f", run.RPS), FormatMs(run.P50), FormatMs(run.P90), FormatMs(run.P99), FormatMs(run.Max)
		if run.GeneratorBound {
			// Not the server's figures: it served at least this much, its capacity is unknown.
			rps, p50, p90, p99, pmax = ">="+rps, "-", "-", "-", "-"
		}
		row := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s/%s\t%s\t%s\t%.2f\t%s",
			class, workers, rps, p50, p90, p99, pmax,
			run.Errors, fmt.Sprintf("%.2f", run.CPUUsed), sizing.FormatCPUs(run.CPULimit), throttled(run),
			sizing.FormatBytes(run.PSSBytes), run.GeneratorCPU, mark)
		if layouts {
			row = run.Layout + "\t" + row
		}
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, p := range r.GornPicks {
		what := "a limit of " + cpuCount(p.CPUs)
		if layouts {
			what = "a pod of " + cpuCount(p.CPUs)
		}
		fmt.Fprintf(w, "* gorn's own choice for %s: %s (%s)\n", what, plural(p.Workers, p.Class+" worker"), p.Formula)
	}
	for _, run := range r.Runs {
		if run.GeneratorBound || run.Note != "" {
			fmt.Fprintf(w, "%s: %s\n", run.Label(), run.Note)
		}
		if len(run.ErrorSamples) > 0 {
			fmt.Fprintf(w, "%s: errors such as: %s\n", run.Label(), strings.Join(run.ErrorSamples, "; "))
		}
	}
	if r.Interrupted {
		fmt.Fprintln(w, "interrupted: the runs above are all that was measured")
	}
	fmt.Fprintf(w, "recommendation: %s\n", r.Recommendation.Reason)
}

// cpuCount says "1 CPU" or "1.5 CPUs".
func cpuCount(c float64) string {
	if c == 1 {
		return "1 CPU"
	}
	return sizing.FormatCPUs(c) + " CPUs"
}

func (r Report) isPick(run Run) bool {
	for _, p := range r.GornPicks {
		if p.Class == run.Class && p.Workers == run.Workers && p.CPUs == run.CPULimit {
			return true
		}
	}
	return false
}

// throttled prints "12/50 periods, 80ms", or "n/a" when the limit has no counters.
func throttled(r Run) string {
	if r.Periods < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%d/%d, %s", r.Throttled, r.Periods, FormatMs(r.ThrottledMs))
}

// progress shows the current run, elapsed / total time and live req/s on a terminal.
type progress struct {
	w       io.Writer
	total   int
	perRun  time.Duration
	began   time.Time
	mu      sync.Mutex
	label   string
	index   int
	runner  *loadgen.Runner
	stopped chan struct{}
	ticker  *time.Ticker
	ended   bool // set by finish under mu: a tick that races it draws nothing
}

func newProgress(w io.Writer, total int, perRun time.Duration) *progress {
	p := &progress{w: w, total: total, perRun: perRun, began: time.Now(), stopped: make(chan struct{})}
	if w == nil {
		return p
	}
	p.ticker = time.NewTicker(250 * time.Millisecond)
	go func() {
		for {
			select {
			case <-p.stopped:
				return
			case <-p.ticker.C:
				p.draw()
			}
		}
	}()
	return p
}

// start announces run i and returns the function measure calls with the live runner.
func (p *progress) start(i int, pl plan) func(*loadgen.Runner) {
	p.mu.Lock()
	p.index = i
	if pl.layout.Pods > 0 {
		p.label = fmt.Sprintf("%s layout %s", pl.class, pl.layout)
	} else {
		p.label = fmt.Sprintf("%s -w %d", pl.class, pl.workers)
	}
	p.runner = nil
	p.mu.Unlock()
	return func(r *loadgen.Runner) {
		p.mu.Lock()
		p.runner = r
		p.mu.Unlock()
	}
}

func (p *progress) draw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return
	}
	elapsed := time.Since(p.began).Truncate(time.Second)
	total := (p.perRun * time.Duration(p.total)).Truncate(time.Second)
	line := fmt.Sprintf("run %d/%d: %s, %s of about %s", p.index+1, p.total, p.label, elapsed, total)
	if p.runner != nil {
		if rate := p.runner.Rate(); rate > 0 {
			line += fmt.Sprintf(", %.0f req/s", rate)
		} else {
			line += ", warming up"
		}
	} else {
		line += ", starting"
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
}

func (p *progress) finish() {
	if p.w == nil {
		return
	}
	p.ticker.Stop()
	close(p.stopped)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ended = true
	fmt.Fprint(p.w, "\r\033[K")
}
