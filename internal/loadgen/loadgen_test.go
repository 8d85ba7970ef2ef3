package loadgen

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.9, 900 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}} {
		got := h.Quantile(tc.q)
		if got < tc.want || float64(got) > float64(tc.want)*1.016 {
			t.Errorf("Quantile(%v) = %s, want %s within +1.6%%", tc.q, got, tc.want)
		}
	}
	if h.Max() != time.Second || h.Count() != 1000 {
		t.Errorf("max %s count %d", h.Max(), h.Count())
	}
	var empty, merged Histogram
	if empty.Quantile(0.5) != 0 || empty.Mean() != 0 {
		t.Error("an empty histogram reports non-zero")
	}
	merged.Merge(&h)
	merged.Merge(&empty)
	if merged.Quantile(0.5) != h.Quantile(0.5) || merged.Count() != 1000 {
		t.Error("merging changed the quantiles")
	}
}

func TestBucketBounds(t *testing.T) {
	for _, us := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 123456, 1 << 40, 1<<62 + 12345} {
		b := bucketOf(us)
		if upperBound(b) < us || (b > 0 && upperBound(b-1) >= us) {
			t.Errorf("value %d in bucket %d [.., %d], previous ends at %d", us, b, upperBound(b), upperBound(b-1))
		}
	}
}

// counting is a test server that counts requests per path and connection headers.
type counting struct {
	mu     sync.Mutex
	paths  map[string]int
	closes int
	bodies int
}

func (c *counting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	c.paths[r.URL.Path]++
	if r.Close {
		c.closes++
	}
	c.bodies += len(b)
	c.mu.Unlock()
	switch r.URL.Path {
	case "/slow":
		time.Sleep(20 * time.Millisecond)
	case "/fail":
		w.WriteHeader(500)
	}
	io.WriteString(w, "ok")
}

func serve(t *testing.T) (*counting, string) {
	c := &counting{paths: map[string]int{}}
	s := httptest.NewServer(c)
	t.Cleanup(s.Close)
	return c, strings.TrimPrefix(s.URL, "http://")
}

func TestClosedLoopWeightsAndKeepAlive(t *testing.T) {
	for _, keep := range []bool{true, false} {
		srv, addr := serve(t)
		res, err := Run(context.Background(), Config{
			Addrs: []string{addr}, Connections: 4, KeepAlive: keep, Duration: 300 * time.Millisecond,
			Requests: []Request{{Path: "/a", Weight: 3}, {Path: "/b", Weight: 1}, {Method: "POST", Path: "/p", Body: []byte("xyz"), Weight: 0}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Answered < 100 || res.Errors != 0 || res.Sent != res.Answered {
			t.Fatalf("keep-alive %v: %+v %v", keep, res, res.Samples)
		}
		srv.mu.Lock()
		a, b, p := srv.paths["/a"], srv.paths["/b"], srv.paths["/p"]
		closes, bodies := srv.closes, srv.bodies
		srv.mu.Unlock()
		if a <= b || b == 0 { // the exact proportions are TestPickFollowsWeights'
			t.Errorf("/a:/b = %d:%d, want about 3:1", a, b)
		}
		if p == 0 || bodies != 3*p {
			t.Errorf("%d POSTs carried %d body bytes", p, bodies)
		}
		if keep && closes != 0 || !keep && closes != a+b+p {
			t.Errorf("keep-alive %v: %d of %d requests asked to close", keep, closes, a+b+p)
		}
		if res.Latency.Count() != uint64(res.Answered) || res.RPS() <= 0 {
			t.Errorf("latency count %d, answered %d, rps %v", res.Latency.Count(), res.Answered, res.RPS())
		}
	}
}

// TestOpenLoopCountsQueueing: at a rate above what 2 connections to a 20 ms route can
// serve (100/s), requests queue and their latency, counted from when they were due, grows
// far beyond 20 ms; a closed loop would report about 20 ms at a lower rate.
func TestOpenLoopCountsQueueing(t *testing.T) {
	_, addr := serve(t)
	res, err := Run(context.Background(), Config{
		Addrs: []string{addr}, Connections: 2, KeepAlive: true, Rate: 200, Duration: 500 * time.Millisecond,
		Requests: []Request{{Path: "/slow"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Answered < 20 || res.Answered > 60 {
		t.Errorf("answered %d, want about 50 (2 connections x 20 ms for 0.5 s)", res.Answered)
	}
	if p99 := res.Latency.Quantile(0.99); p99 < 150*time.Millisecond {
		t.Errorf("p99 %s: the queueing delay is missing (coordinated omission)", p99)
	}

	// Below capacity the rate is kept and latency stays near the service time.
	res, err = Run(context.Background(), Config{
		Addrs: []string{addr}, Connections: 4, KeepAlive: true, Rate: 50, Duration: 400 * time.Millisecond,
		Requests: []Request{{Path: "/slow"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent < 18 || res.Sent > 21 {
		t.Errorf("sent %d at 50/s for 0.4 s, want 20", res.Sent)
	}
	if p50 := res.Latency.Quantile(0.5); p50 > 60*time.Millisecond {
		t.Errorf("p50 %s below capacity", p50)
	}
}

func TestErrorsAndBounds(t *testing.T) {
	_, addr := serve(t)
	res, err := Run(context.Background(), Config{
		Addrs: []string{addr}, Connections: 2, KeepAlive: true, Duration: 5 * time.Second, MaxRequests: 10,
		Requests: []Request{{Path: "/fail"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 10 || res.Errors != 10 || res.Status[500] != 10 || len(res.Samples) == 0 {
		t.Errorf("want 10 requests, all errors: %+v", res)
	}
	if res.Elapsed > 2*time.Second {
		t.Errorf("the request bound did not end the run: %s", res.Elapsed)
	}
	res, _ = Run(context.Background(), Config{Addrs: []string{"127.0.0.1:1"}, Connections: 1, Duration: 100 * time.Millisecond})
	if res.Errors == 0 || res.Answered != 0 {
		t.Errorf("a closed port: %+v", res)
	}
	for _, bad := range []Config{{}, {Addrs: []string{addr}}, {Addrs: []string{addr}, Connections: 1}, {Addrs: []string{addr}, Connections: 1, Duration: time.Second, Rate: -1}} {
		if _, err := Run(context.Background(), bad); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

// TestWarmupKeepsConnections: the warm-up's requests are not counted, its connections
// carry on into the measurement, and OnMeasure marks the boundary once.
func TestWarmupKeepsConnections(t *testing.T) {
	srv, _ := serve(t)
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(srv)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	defer s.Close()
	var marks atomic.Int64
	res, err := Run(context.Background(), Config{
		Addrs: []string{strings.TrimPrefix(s.URL, "http://")}, Connections: 3, KeepAlive: true,
		Warmup: 200 * time.Millisecond, Duration: 200 * time.Millisecond, OnMeasure: func() { marks.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	served := int64(srv.paths["/"])
	srv.mu.Unlock()
	if marks.Load() != 1 || res.Answered == 0 || served < res.Answered+res.Answered/2 {
		t.Errorf("marks %d, measured %d of %d served: the warm-up was counted or did not run", marks.Load(), res.Answered, served)
	}
	if conns.Load() != 3 {
		t.Errorf("%d connections, want the warm-up's 3 kept", conns.Load())
	}
	if res.Elapsed > 300*time.Millisecond {
		t.Errorf("elapsed %s includes the warm-up", res.Elapsed)
	}
}

func TestPickFollowsWeights(t *testing.T) {
	r, err := NewRunner(Config{Addrs: []string{"x"}, Connections: 1, Duration: time.Second,
		Requests: []Request{{Path: "/a", Weight: 3}, {Path: "/b", Weight: 1}, {Path: "/c"}}})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	counts := map[string]int{}
	for range 50000 {
		w := string(r.pick(rng))
		counts[w[4:6]]++
	}
	for path, want := range map[string]float64{"/a": 0.6, "/b": 0.2, "/c": 0.2} {
		if got := float64(counts[path]) / 50000; got < want-0.01 || got > want+0.01 {
			t.Errorf("%s drawn %.3f of the time, want %.1f", path, got, want)
		}
	}
}
