package bench

import (
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func syncRun(workers int, rps, p99 float64, pss int64) Run {
	return Run{Class: "sync", Workers: workers, Pods: 1, Requests: 1000, RPS: rps, P99: p99, PSSBytes: pss << 20}
}

func TestRecommend(t *testing.T) {
	for _, tc := range []struct {
		name string
		runs []Run
		want int
		why  []string
	}{
		{"the plateau's cheapest run", []Run{
			syncRun(1, 215, 180, 30), syncRun(2, 397, 88, 50), syncRun(3, 390, 98, 70), syncRun(4, 400, 98, 90),
		}, 1, []string{"2 sync workers", "within 1% of the best", "p99 88ms", "50MiB", "more workers add memory, not throughput"}},
		{"the best when nothing is near it", []Run{
			syncRun(1, 100, 500, 30), syncRun(2, 200, 200, 50), syncRun(3, 300, 100, 70),
		}, 2, []string{"3 sync workers: the best throughput (300 req/s)", "measure higher counts"}},
		{"lowest p99 among the near ones beats fewer workers", []Run{
			syncRun(2, 400, 200, 50), syncRun(3, 405, 90, 70),
		}, 1, []string{"3 sync workers"}},
		{"generator-bound and failing runs do not count", []Run{
			syncRun(1, 200, 100, 30),
			{Class: "sync", Workers: 2, Requests: 1000, RPS: 900, P99: 50, GeneratorBound: true},
			{Class: "sync", Workers: 3, Requests: 1000, Errors: 100, RPS: 800, P99: 50},
		}, 0, []string{"1 sync worker:"}},
		{"noisy runs are said so", []Run{
			syncRun(1, 200, 100, 30), {Class: "sync", Workers: 2, Requests: 1000, RPS: 300, P99: 80, Noisy: true},
		}, 1, []string{"but 1 of 2 runs shared the machine"}},
		{"none valid", []Run{{Class: "sync", Workers: 1, GeneratorBound: true, Requests: 5}}, -1, []string{"no recommendation"}},
		{"layouts", []Run{
			{Class: "sync", Layout: "1x2", Pods: 1, Workers: 5, Requests: 1000, RPS: 800, P99: 60},
			{Class: "sync", Layout: "2x1", Pods: 2, Workers: 6, Requests: 1000, RPS: 700, P99: 90},
		}, 0, []string{"layout 1x2 (1 pod, 5 sync workers)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Recommend(tc.runs)
			if got.Index != tc.want {
				t.Fatalf("picked %d (%s), want %d", got.Index, got.Reason, tc.want)
			}
			for _, w := range tc.why {
				if !strings.Contains(got.Reason, w) {
					t.Errorf("reason %q lacks %q", got.Reason, w)
				}
			}
		})
	}
}

func TestGeneratorBound(t *testing.T) {
	for _, tc := range []struct {
		gen, server, limit, machine float64
		want                        bool
	}{
		{0.1, 1.0, 1, 2, false},  // the server used its quota: a server figure
		{0.1, 0.4, 1, 2, false},  // requests wait on I/O: the machine is idle
		{1.0, 0.9, 1.5, 2, true}, // the machine is full, the server below its quota
		{0.5, 1.45, 1.5, 2, false},
		{1.9, 0.0, 1, 2, true},
		{1, 1, 0, 2, false}, // no limit known
	} {
		got, why := GeneratorBound(tc.gen, tc.server, tc.limit, tc.machine)
		if got != tc.want || got != (why != "") {
			t.Errorf("GeneratorBound(%v) = %v %q, want %v", tc, got, why, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	base := func() Options {
		return Options{Module: "app:app", CPUs: 1, MachineCPUs: 2, Connections: 8, Duration: 1e9}
	}
	o := base()
	if err := o.Validate(); err != nil || o.Classes[0] != "sync" || o.Repeats != 1 || o.MaxRequests != DefaultMaxRequests || o.Isolation != IsolationAuto {
		t.Fatalf("defaults: %v %+v", err, o)
	}
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no app", func(o *Options) { o.Module = "" }, "MODULE:APP"},
		{"above the machine", func(o *Options) { o.CPUs = 3 }, "at most this machine's 2 CPUs"},
		{"zero cpus", func(o *Options) { o.CPUs = 0 }, "--cpus"},
		{"layout above the machine", func(o *Options) { o.Layouts = []Layout{{3, 1}} }, "above this machine's 2"},
		{"class", func(o *Options) { o.Classes = []string{"tornado"} }, "worker class"},
		{"zero workers", func(o *Options) { o.Workers = []int{0} }, "want 1..64"},
		{"duration", func(o *Options) { o.Duration = 0 }, "--duration"},
		{"long", func(o *Options) { o.Duration = MaxDuration + 1 }, "--duration"},
		{"connections", func(o *Options) { o.Connections = 0 }, "--connections"},
		{"rate", func(o *Options) { o.Rate = -1 }, "--rate"},
		{"isolation", func(o *Options) { o.Isolation = "vm" }, "--isolation"},
	} {
		o := base()
		tc.edit(&o)
		err := o.Validate()
		if err == nil || !IsUsage(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a usage error with %q", tc.name, err, tc.want)
		}
	}
}

func TestDefaultWorkers(t *testing.T) {
	for _, tc := range []struct {
		class string
		cpus  float64
		want  string
	}{{"sync", 1, "[1 2 3 4 5]"}, {"sync", 1.5, "[2 3 4 5 6]"}, {"gthread", 1, "[1 2 3]"}} {
		if got := fmt.Sprint(DefaultWorkers(tc.class, tc.cpus)); got != tc.want {
			t.Errorf("%s %v: %s, want %s", tc.class, tc.cpus, got, tc.want)
		}
	}
}

func TestWriteChart(t *testing.T) {
	dir := t.TempDir()
	r := Report{Module: "app:app", CPUs: 1, Runs: []Run{
		syncRun(1, 200, 180, 30), syncRun(2, 390, 90, 50), syncRun(3, 395, 95, 70),
		{Class: "gthread", Threads: 4, Workers: 1, RPS: 380, P99: 85, Requests: 10},
		{Class: "gthread", Threads: 4, Workers: 2, RPS: 900, P99: 10, Requests: 10, GeneratorBound: true},
	}}
	// The panels hold the runs' figures, the generator-bound one left out.
	c := r.chart()
	if len(c.Panels) != 2 || c.Title != "gorn bench app:app: 1 CPU limit" {
		t.Fatalf("chart %q with %d panels", c.Title, len(c.Panels))
	}
	if got := fmt.Sprint(c.Panels[0].Series); got != "[{sync [{1 200 } {2 390 } {3 395 }]} {gthread, 4 threads [{1 380 }]}]" {
		t.Errorf("req/s series %s", got)
	}
	if got := fmt.Sprint(c.Panels[1].Series); got != "[{sync [{1 180 } {2 90 } {3 95 }]} {gthread, 4 threads [{1 85 }]}]" {
		t.Errorf("p99 series %s", got)
	}
	if x, y := c.Panels[1].X, c.Panels[0].Y; x.Label != "workers" || x.Min != 0.7 || x.Max != 3.3 || y.Min != 0 || y.Max < 395 || y.Max > 500 {
		t.Errorf("axes %+v, %+v", x, y)
	}
	p := filepath.Join(dir, "c.svg")
	if err := r.WriteChart(p); err != nil {
		t.Fatal(err)
	}
	texts := svgTexts(t, p)
	for _, want := range []string{"gorn bench app:app: 1 CPU limit", "req/s", "p99 latency (ms)", "workers", "sync", "gthread, 4 threads", "sync: 2, 390", "sync: 3, 95"} {
		if !slices.Contains(texts, want) {
			t.Errorf("the SVG lacks %q: %q", want, texts)
		}
	}
	if slices.Contains(texts, "gthread, 4 threads: 2, 900") {
		t.Errorf("the generator-bound run is drawn")
	}

	lay := Report{Module: "app:app", CPUs: 2, Runs: []Run{
		{Class: "sync", Layout: "1x2", Workers: 5, RPS: 800, P99: 60, Requests: 10},
		{Class: "sync", Layout: "2x1", Workers: 6, RPS: 700, P99: 90, Requests: 10},
	}}
	p = filepath.Join(dir, "l.svg")
	if err := lay.WriteChart(p); err != nil {
		t.Fatal(err)
	}
	texts = svgTexts(t, p)
	for _, want := range []string{"gorn bench app:app: 2 CPUs split into pods", "layout (pods x CPUs)", "1x2", "2x1", "sync: 2x1, 700", "sync: 1x2, 60"} {
		if !slices.Contains(texts, want) {
			t.Errorf("the layouts' SVG lacks %q: %q", want, texts)
		}
	}
	for _, name := range []string{"l.png", "l.gif"} {
		if err := lay.WriteChart(filepath.Join(dir, name)); !IsUsage(err) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// svgTexts parses the SVG file at path and returns its text content, one string an element.
func svgTexts(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var texts []string
	d := xml.NewDecoder(f)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return texts
		}
		if err != nil {
			t.Fatalf("%s is not XML: %v", path, err)
		}
		if cd, ok := tok.(xml.CharData); ok && strings.TrimSpace(string(cd)) != "" {
			texts = append(texts, string(cd))
		}
	}
}

func TestRecommendMedians(t *testing.T) {
	rep := func(workers int, rps float64, repeat int) Run {
		r := syncRun(workers, rps, 100, 30)
		r.Repeat = repeat
		return r
	}
	// 2 workers has one lucky repeat (500): its median (300) is below 3 workers' (400).
	runs := []Run{rep(2, 290, 1), rep(2, 500, 2), rep(2, 300, 3), rep(3, 400, 1), rep(3, 390, 2), rep(3, 410, 3)}
	got := RecommendMedians(runs)
	if got.Index != 3 || !strings.Contains(got.Reason, "3 sync workers") || !strings.Contains(got.Reason, "medians of the repeats") {
		t.Errorf("got %+v", got)
	}
	if got := RecommendMedians(runs[:1]); got.Index != 0 || strings.Contains(got.Reason, "medians") {
		t.Errorf("one run: %+v", got)
	}
}
