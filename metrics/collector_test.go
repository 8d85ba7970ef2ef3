package metrics

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/gornhq/gorn/internal/cgroup"
	"github.com/gornhq/gorn/internal/scoreboard"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/socket"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt from the collector's output")

// fakeSource plays the master loop.
type fakeSource struct {
	snap  master.Snapshot
	err   error
	hang  bool // never answer: wait for the context
	calls atomic.Int32
}

func (f *fakeSource) Snapshot(ctx context.Context) (master.Snapshot, error) {
	f.calls.Add(1)
	if f.hang {
		<-ctx.Done()
		return master.Snapshot{}, fmt.Errorf("querying the master loop: %w", ctx.Err())
	}
	return f.snap, f.err
}

// slotWith returns scoreboard counters: reqs[method][class] requests, each of them
// falling in histogram bucket bucket, with durSum microseconds and sent body bytes.
func slotWith(pid int, counts map[[2]int]uint64, hist map[int]uint64, durSumUS, sent uint64) scoreboard.Slot {
	s := scoreboard.Slot{PID: uint64(pid), DurationSum: durSumUS, BytesSent: sent}
	for k, v := range counts {
		s.Counters[k[0]][k[1]] = v
		s.Requests += v
	}
	for b, v := range hist {
		s.Histogram[b] = v
	}
	return s
}

const (
	get, post, other = 0, 2, 7
	c2xx, c4xx, c5xx = 1, 3, 4
)

// healthySnapshot: a reloaded master (generation 2) with one worker in each state, and
// counters of workers that have already exited.
func healthySnapshot() master.Snapshot {
	return master.Snapshot{
		Desired:    3,
		Generation: 2,
		Ready:      true,
		ReadyCount: 2,
		Spawns:     9,
		Exits:      map[string]uint64{master.ReasonRecycled: 4, master.ReasonCrash: 1, master.ReasonReload: 1, "frozen": 2},
		Retired: slotWith(0,
			map[[2]int]uint64{{get, c2xx}: 1000, {get, c4xx}: 20, {post, c5xx}: 2},
			map[int]uint64{0: 500, 3: 400, 7: 100, 13: 22}, 9_876_543, 5_000_000),
		Workers: []master.WorkerInfo{
			{Slot: 0, Pid: 1001, Generation: 2, State: "ready", Age: time.Minute, Status: func() scoreboard.Slot {
				s := slotWith(1001,
					map[[2]int]uint64{{get, c2xx}: 100, {post, c2xx}: 10, {other, c4xx}: 1},
					map[int]uint64{0: 60, 1: 40, 12: 11}, 123_456, 400_000)
				s.Connections = 12 // kept alive, waiting for their next request: not busy
				s.RequestPath = scoreboard.RequestPathNative
				return s
			}()},
			{Slot: 1, Pid: 1002, Generation: 2, State: "busy", Age: time.Minute, Status: func() scoreboard.Slot {
				s := slotWith(1002, map[[2]int]uint64{{get, c2xx}: 7}, map[int]uint64{2: 7}, 21_000, 7_000)
				s.BusySince = 12345
				s.RequestPath = scoreboard.RequestPathPython
				return s
			}()},
			{Slot: 2, Pid: 1003, Generation: 2, State: "booting", Age: time.Second, Status: scoreboard.Slot{PID: 1003}},
			// Exited after the snapshot was taken: no /proc entry, no memory series.
			{Slot: 3, Pid: 1004, Generation: 1, State: "draining", Age: time.Hour, Status: func() scoreboard.Slot {
				s := slotWith(1004, map[[2]int]uint64{{post, c2xx}: 3}, map[int]uint64{8: 3}, 1_500_000, 300)
				s.BusySince = 999
				return s
			}()},
			// A zombie not reaped yet: its memory files are empty; also skipped.
			{Slot: 4, Pid: 1005, Generation: 1, State: "draining", Age: time.Hour},
		},
	}
}

var testLimits = Limits{CPUs: 1.5, CPUsSource: "quota", MemoryLimitBytes: 512 << 20, WorkersSource: "auto"}

// goldenCases are the exposition tests, one per testdata/<name>.txt.
var goldenCases = map[string]Options{
	// Serving, with every kind of series.
	"healthy": {
		Source: &fakeSource{snap: healthySnapshot()}, MinReady: 2,
		Limits:    func() Limits { return testLimits },
		Processes: func() map[string]int { return map[string]int{"master": 999} },
		CPUStat:   cpuStat(cgroup.CPUStat{Throttling: true, Periods: 1200, Throttled: 30, ThrottledTime: 2500 * time.Millisecond, UsageOK: true, Usage: 95 * time.Second}, nil),
	},
	// Just started: one worker booting, nothing served, no memory limit, explicit count.
	"starting": {
		Source: &fakeSource{snap: master.Snapshot{Desired: 2, Generation: 1, Spawns: 1, Exits: map[string]uint64{},
			Workers: []master.WorkerInfo{{Slot: 0, Pid: 1003, Generation: 1, State: "booting"}}}},
		Limits: func() Limits { return Limits{CPUs: 8, CPUsSource: "affinity", WorkersSource: "--workers"} },
		// cgroup v2 without the cpu controller: usage, no throttling counters.
		CPUStat: cpuStat(cgroup.CPUStat{UsageOK: true, Usage: 250 * time.Millisecond}, nil),
	},
	// The master loop does not answer: build info and sizing only, and the failure.
	"master_down": {
		Source: &fakeSource{err: errors.New("querying the master loop: context deadline exceeded")},
		Limits: func() Limits { return testLimits },
		// No CPU cgroup visible: nothing reported, no failure.
		CPUStat: cpuStat(cgroup.CPUStat{}, fmt.Errorf("reading the CPU counters of /x: %w", os.ErrNotExist)),
	},
	// Shutting down (Ready false although workers are ready), and a worker whose
	// memory cannot be read: the memory part fails.
	"shutting_down": {
		Source: &fakeSource{snap: master.Snapshot{Desired: 1, Generation: 1, Ready: false, ReadyCount: 1, Spawns: 1,
			Workers: []master.WorkerInfo{{Slot: 0, Pid: 1006, Generation: 1, State: "ready"}}}},
		// An unreadable cpu.stat: the cgroup part fails.
		CPUStat: cpuStat(cgroup.CPUStat{}, errors.New(`reading /x: nr_periods: parsing "many"`)),
	},
}

func cpuStat(s cgroup.CPUStat, err error) func() (cgroup.CPUStat, error) {
	return func() (cgroup.CPUStat, error) { return s, err }
}

func newTestCollector(opts Options) *Collector {
	if opts.ProcRoot == "" {
		opts.ProcRoot = filepath.Join("testdata", "proc")
	}
	opts.Version = "0.1.0-test"
	c := NewCollector(opts)
	c.goVersion = "go1.26-test"
	t0 := time.Unix(1_700_000_000, 0)
	c.now = func() time.Time { return t0 }
	return c
}

func TestGolden(t *testing.T) {
	for name, opts := range goldenCases {
		t.Run(name, func(t *testing.T) {
			c := newTestCollector(opts)
			path := filepath.Join("testdata", name+".txt")
			if *update {
				if err := os.WriteFile(path, exposition(t, c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if err := testutil.CollectAndCompare(c, bytes.NewReader(want)); err != nil {
				t.Errorf("%s differs (go test -update rewrites it):\n%v", path, err)
			}
		})
	}
}

// exposition is c's metrics in the text format. (testutil.CollectAndFormat without
// metric names returns nothing.)
func exposition(t *testing.T, c prometheus.Collector) []byte {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// TestOneSnapshotPerScrape: a scrape costs the master loop exactly one query.
func TestOneSnapshotPerScrape(t *testing.T) {
	src := &fakeSource{snap: healthySnapshot()}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newTestCollector(Options{Source: src}))
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("scrape made %d snapshot queries, want 1", n)
	}
}

// TestHungMasterBoundsScrape: a master loop that never answers costs a scrape
// Options.Timeout, not forever.
func TestHungMasterBoundsScrape(t *testing.T) {
	c := newTestCollector(Options{Source: &fakeSource{hang: true}, Timeout: 50 * time.Millisecond})
	start := time.Now()
	n := testutil.CollectAndCount(c, "gorn_workers")
	if n != 0 {
		t.Errorf("got %d gorn_workers series from a hung master, want 0", n)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("scrape took %s with a 50ms timeout", d)
	}
	want := `# HELP gorn_scrape_collector_success 1 if this part of the scrape succeeded.
# TYPE gorn_scrape_collector_success gauge
gorn_scrape_collector_success{collector="master"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "gorn_scrape_collector_success"); err != nil {
		t.Error(err)
	}
}

// TestCountersSurviveWorkerReplacement: when a worker exits, the master moves its final
// counters into Retired, and the totals do not go backwards.
func TestCountersSurviveWorkerReplacement(t *testing.T) {
	old := slotWith(1001, map[[2]int]uint64{{get, c2xx}: 50, {post, c5xx}: 1}, map[int]uint64{0: 40, 5: 11}, 77_000, 9_000)
	before := master.Snapshot{Desired: 1, Ready: true, ReadyCount: 1,
		Workers: []master.WorkerInfo{{Slot: 0, Pid: 1001, State: "ready", Status: old}}}
	after := master.Snapshot{Desired: 1, Ready: true, ReadyCount: 1, Retired: old,
		Workers: []master.WorkerInfo{{Slot: 0, Pid: 1002, State: "ready", Status: scoreboard.Slot{PID: 1002}}}}
	src := &fakeSource{snap: before}
	c := newTestCollector(Options{Source: src})
	totals := func() (reqs, count, sum, sent float64) {
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				switch mf.GetName() {
				case "gorn_requests_total":
					reqs += m.GetCounter().GetValue()
				case "gorn_request_duration_seconds":
					count, sum = float64(m.GetHistogram().GetSampleCount()), m.GetHistogram().GetSampleSum()
				case "gorn_response_body_bytes_total":
					sent = m.GetCounter().GetValue()
				}
			}
		}
		return
	}
	r1, c1, s1, b1 := totals()
	src.snap = after
	r2, c2, s2, b2 := totals()
	if r1 != 51 || c1 != 51 || s1 != 0.077 || b1 != 9000 {
		t.Errorf("before: requests %v, count %v, sum %v, bytes %v; want 51, 51, 0.077, 9000", r1, c1, s1, b1)
	}
	if r2 != r1 || c2 != c1 || s2 != s1 || b2 != b1 {
		t.Errorf("after the worker was replaced: requests %v, count %v, sum %v, bytes %v; want them unchanged", r2, c2, s2, b2)
	}
}

// TestListenQueue queues connections on a real listening socket nobody accepts from and
// reads the queue from the gauges; unix listeners are skipped, and the queue is reported
// even when the master does not answer.
func TestListenQueue(t *testing.T) {
	const backlog, queued = 16, 3
	ls, err := socket.Bind([]socket.Address{
		{Kind: socket.KindTCP, Host: "127.0.0.1", Port: 0},
		{Kind: socket.KindUnix, Path: filepath.Join(t.TempDir(), "app.sock")},
	}, socket.Options{Backlog: backlog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, l := range ls {
			l.Close()
		}
	})
	tcp := ls[0]
	for range queued {
		conn, err := net.Dial("tcp", tcp.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
	}
	// The handshake completes in the kernel; wait until the queue shows it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, _, err := socket.QueueDepth(tcp.Fd())
		if err != nil {
			t.Fatal(err)
		}
		if n == queued {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listen queue holds %d connections, want %d", n, queued)
		}
		time.Sleep(10 * time.Millisecond)
	}

	wantBacklog := backlog
	if b, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n < backlog {
			wantBacklog = n
		}
	}
	c := newTestCollector(Options{
		Source:    &fakeSource{err: errors.New("master gone")},
		Listeners: []Listener{ls[0], ls[1]},
	})
	want := fmt.Sprintf(`# HELP gorn_listen_backlog Listen queue limit: the listen(2) backlog capped at net.core.somaxconn; connections beyond backlog+1 are dropped.
# TYPE gorn_listen_backlog gauge
gorn_listen_backlog{listener=%[1]q} %[2]d
# HELP gorn_listen_queue_length Connections waiting in the listen queue for a worker to accept them (TCP listeners).
# TYPE gorn_listen_queue_length gauge
gorn_listen_queue_length{listener=%[1]q} %[3]d
# HELP gorn_scrape_collector_success 1 if this part of the scrape succeeded.
# TYPE gorn_scrape_collector_success gauge
gorn_scrape_collector_success{collector="listeners"} 1
gorn_scrape_collector_success{collector="master"} 0
`, tcp.String(), wantBacklog, queued)
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"gorn_listen_backlog", "gorn_listen_queue_length", "gorn_scrape_collector_success"); err != nil {
		t.Error(err)
	}
}

// TestLint runs promlint over every gorn_ metric, with all optional series present, on a
// pedantic registry (which also checks Collect against Describe).
func TestLint(t *testing.T) {
	ls, err := socket.Bind([]socket.Address{{Kind: socket.KindTCP, Host: "127.0.0.1", Port: 0}}, socket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ls[0].Close() })
	reg := prometheus.NewPedanticRegistry()
	opts := goldenCases["healthy"]
	opts.Listeners = []Listener{ls[0]}
	opts.ProcRoot = filepath.Join("testdata", "proc")
	opts.HookHost = func() uint64 { return 1 }
	if _, err := NewHandler(reg, opts); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
	}
	for _, d := range allDescs {
		name := descName(d)
		if !seen[name] {
			t.Errorf("%s not collected; the lint test should see every metric", name)
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "gorn_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
}

// descName extracts fqName from a Desc's String(): `Desc{fqName: "gorn_x", ...}`.
func descName(d *prometheus.Desc) string {
	s := d.String()
	_, rest, _ := strings.Cut(s, `fqName: "`)
	name, _, _ := strings.Cut(rest, `"`)
	return name
}

// TestInFlightCountsThreadedWorkers: a busy sync worker is one request in flight; a gthread
// worker reports how many of its threads serve one.
func TestInFlightCountsThreadedWorkers(t *testing.T) {
	busySync := scoreboard.Slot{PID: 1001, BusySince: 5}
	threaded := scoreboard.Slot{PID: 1002, BusySince: 7, InFlight: 3}
	idle := scoreboard.Slot{PID: 1003}
	src := &fakeSource{snap: master.Snapshot{Desired: 3, Ready: true, ReadyCount: 3, Workers: []master.WorkerInfo{
		{Slot: 0, Pid: 1001, State: "busy", Status: busySync},
		{Slot: 1, Pid: 1002, State: "busy", Status: threaded},
		{Slot: 2, Pid: 1003, State: "ready", Status: idle},
	}}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newTestCollector(Options{Source: src}))
	want := "# HELP gorn_requests_in_flight Requests being served now: one per busy sync worker, the in-progress count of a threaded one.\n# TYPE gorn_requests_in_flight gauge\ngorn_requests_in_flight 4\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gorn_requests_in_flight"); err != nil {
		t.Error(err)
	}
}

// TestHeldConnectionsAreNotBusy: a worker holding kept-alive connections with its app slot
// free is ready, not busy; the connections show in their own gauge.
func TestHeldConnectionsAreNotBusy(t *testing.T) {
	holding := scoreboard.Slot{PID: 1001, Connections: 40, Accepting: true}
	busy := scoreboard.Slot{PID: 1002, BusySince: 7, Connections: 3}
	src := &fakeSource{snap: master.Snapshot{Desired: 2, Ready: true, ReadyCount: 2, Workers: []master.WorkerInfo{
		{Slot: 0, Pid: 1001, State: "ready", Status: holding},
		{Slot: 1, Pid: 1002, State: "busy", Status: busy},
	}}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newTestCollector(Options{Source: src}))
	want := `# HELP gorn_connections_open Client connections the workers hold open: running a request, waiting for a request head, or kept alive between requests. A worker holding connections is busy only while it runs the app.
# TYPE gorn_connections_open gauge
gorn_connections_open 43
# HELP gorn_requests_in_flight Requests being served now: one per busy sync worker, the in-progress count of a threaded one.
# TYPE gorn_requests_in_flight gauge
gorn_requests_in_flight 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gorn_connections_open", "gorn_requests_in_flight"); err != nil {
		t.Error(err)
	}
}
