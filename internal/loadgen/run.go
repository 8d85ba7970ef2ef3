package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Request is one kind of request in a load mix, picked with probability Weight/sum.
type Request struct {
	Method string // GET when ""
	Path   string // origin-form, e.g. "/work?cpu_ms=2"
	Body   []byte // sent with a Content-Length when not nil
	Weight int    // relative frequency; values < 1 count as 1
}

// Config is one bounded measurement.
type Config struct {
	// Addrs are the servers' host:port; connection i goes to Addrs[i%len(Addrs)], as a
	// Kubernetes Service spreads connections over pods.
	Addrs []string
	// Requests is the weighted mix; empty means "GET /".
	Requests []Request
	// Connections is the number of concurrent connections (closed loop) or the most
	// requests in flight at once (open loop).
	Connections int
	// Rate, when > 0, is an open-loop constant arrival rate in requests per second: request
	// i is due at start + i/Rate whether or not earlier ones have been answered, and its
	// latency counts from that due time. A slow server so shows its queueing delay instead
	// of slowing the client down (no coordinated omission). 0 means closed loop: each
	// connection sends its next request when the previous answer arrives.
	Rate float64
	// KeepAlive reuses connections; false sends "Connection: close" on every request.
	KeepAlive bool
	// Warmup is load before the measurement, on the same connections: what it sends is not
	// counted, and the measurement starts with connections already spread over the
	// server's workers as they settled, not with a burst of new ones.
	Warmup time.Duration
	// OnMeasure, when set, is called as the measurement starts (after Warmup), for
	// counters to be read at the same moment.
	OnMeasure func()
	// Duration bounds the measurement; MaxRequests (when > 0) bounds how many it sends.
	Duration    time.Duration
	MaxRequests int64
	// Timeout bounds each request (default 30 s).
	Timeout time.Duration
}

// Result is what Run measured.
type Result struct {
	Sent     int64         // requests sent
	Answered int64         // responses read in full, any status
	Errors   int64         // transport failures and responses with status >= 400
	Status   map[int]int64 // responses by status code
	Latency  *Histogram    // of every answered request (open loop: from its due time)
	Elapsed  time.Duration // from the first send to the end of the last answer
	// Samples are the first few error messages, for the report.
	Samples []string
}

// RPS is answered requests per second of Elapsed.
func (r Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Answered) / r.Elapsed.Seconds()
}

// maxSamples bounds the error messages kept.
const maxSamples = 5

// Runner runs one measurement; Done may be read while it runs, for progress displays.
type Runner struct {
	cfg     Config
	wire    [][]byte // each Request serialised, Connection: close included when needed
	cum     []int    // cumulative weights
	started atomic.Int64
	done    atomic.Int64
	from    atomic.Int64 // when the measurement started, UnixNano; 0 during the warm-up
}

// NewRunner checks cfg and prepares the requests.
func NewRunner(cfg Config) (*Runner, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("preparing load: no server address")
	}
	if cfg.Connections < 1 {
		return nil, fmt.Errorf("preparing load: %d connections: want at least 1", cfg.Connections)
	}
	if cfg.Duration <= 0 {
		return nil, fmt.Errorf("preparing load: duration %s: want > 0", cfg.Duration)
	}
	if cfg.Warmup < 0 {
		return nil, fmt.Errorf("preparing load: warm-up %s: want >= 0", cfg.Warmup)
	}
	if cfg.Rate < 0 {
		return nil, fmt.Errorf("preparing load: rate %v: want >= 0", cfg.Rate)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	reqs := cfg.Requests
	if len(reqs) == 0 {
		reqs = []Request{{Path: "/"}}
	}
	r := &Runner{cfg: cfg}
	total := 0
	for _, q := range reqs {
		total += max(q.Weight, 1)
		r.cum = append(r.cum, total)
		r.wire = append(r.wire, q.serialise(cfg.KeepAlive))
	}
	return r, nil
}

func (q Request) serialise(keepAlive bool) []byte {
	method := q.Method
	if method == "" {
		method = http.MethodGet
	}
	b := []byte(method + " " + q.Path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: gorn-bench\r\n")
	if !keepAlive {
		b = append(b, "Connection: close\r\n"...)
	}
	if q.Body != nil {
		b = append(b, "Content-Length: "+strconv.Itoa(len(q.Body))+"\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, q.Body...)
}

// Done is the number of measured requests answered or failed so far.
func (r *Runner) Done() int64 { return r.done.Load() }

// Rate is Done per second of measurement so far; 0 during the warm-up.
func (r *Runner) Rate() float64 {
	from := r.from.Load()
	if from == 0 {
		return 0
	}
	s := time.Since(time.Unix(0, from)).Seconds()
	if s <= 0 {
		return 0
	}
	return float64(r.Done()) / s
}

// Run generates the load until the duration or request bound is reached or ctx ends, and
// waits for the requests in flight.
func Run(ctx context.Context, cfg Config) (Result, error) {
	r, err := NewRunner(cfg)
	if err != nil {
		return Result{}, err
	}
	return r.Run(ctx), nil
}

// Run is the package-level Run on a prepared Runner; call it once.
func (r *Runner) Run(ctx context.Context) Result {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Warmup+r.cfg.Duration)
	defer cancel()
	start := time.Now()
	measure := start.Add(r.cfg.Warmup)
	end := measure.Add(r.cfg.Duration)
	marked := make(chan struct{})
	began := time.AfterFunc(r.cfg.Warmup, func() {
		defer close(marked)
		if r.cfg.OnMeasure != nil {
			r.cfg.OnMeasure()
		}
		r.from.Store(time.Now().UnixNano())
	})
	defer func() {
		if !began.Stop() {
			<-marked // OnMeasure ran or is running: the caller may read what it wrote
		}
	}()
	results := make([]client, r.cfg.Connections)
	var wg sync.WaitGroup
	for i := range results {
		c := &results[i]
		c.id, c.addr = i, r.cfg.Addrs[i%len(r.cfg.Addrs)]
		c.rng = rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
		c.status = map[int]int64{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.close()
			r.loop(ctx, c, start, measure, end)
		}()
	}
	wg.Wait()
	res := Result{Status: map[int]int64{}, Latency: &Histogram{}, Elapsed: time.Since(measure)}
	for i := range results {
		c := &results[i]
		res.Sent += c.sent
		res.Answered += c.answered
		res.Errors += c.errors
		for k, v := range c.status {
			res.Status[k] += v
		}
		res.Latency.Merge(&c.hist)
		for _, s := range c.samples {
			if len(res.Samples) < maxSamples {
				res.Samples = append(res.Samples, s)
			}
		}
	}
	return res
}

// client is one connection's state and counts; only its own goroutine touches it.
type client struct {
	id       int
	addr     string
	rng      *rand.Rand
	conn     net.Conn
	br       *bufio.Reader
	used     int
	sent     int64
	answered int64
	errors   int64
	status   map[int]int64
	hist     Histogram
	samples  []string
}

// loop sends requests until end; those due (closed loop: sent) before measure are the
// warm-up and not counted. The request bound counts the measured ones.
func (r *Runner) loop(ctx context.Context, c *client, start, measure, end time.Time) {
	var interval time.Duration
	if r.cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) / r.cfg.Rate)
	}
	for ctx.Err() == nil {
		var n int64
		t0 := time.Now()
		warm := t0.Before(measure)
		if interval > 0 {
			n = r.started.Add(1) - 1
			t0 = start.Add(time.Duration(n) * interval)
			warm = t0.Before(measure)
			n -= int64(r.cfg.Warmup / interval) // slots before measure are the warm-up's
		} else if !warm {
			n = r.started.Add(1) - 1
		}
		if !warm && r.cfg.MaxRequests > 0 && n >= r.cfg.MaxRequests {
			return
		}
		if interval > 0 {
			// The shared counter hands out due times in order: a client that fell behind
			// takes a slot that is already due, and its latency includes the wait.
			if !t0.Before(end) {
				return
			}
			if d := time.Until(t0); d > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(d):
				}
			}
		}
		r.one(c, r.pick(c.rng), t0, !warm)
		if !warm {
			r.done.Add(1)
		}
	}
}

func (r *Runner) pick(rng *rand.Rand) []byte {
	if len(r.wire) == 1 {
		return r.wire[0]
	}
	x := rng.IntN(r.cum[len(r.cum)-1])
	for i, c := range r.cum {
		if x < c {
			return r.wire[i]
		}
	}
	return r.wire[len(r.wire)-1]
}

// one sends a request and records its outcome. A request on a reused keep-alive
// connection that the server closed before answering any byte is retried once on a new
// connection (RFC 9112 section 9.3.1), as real clients do.
func (r *Runner) one(c *client, wire []byte, t0 time.Time, count bool) {
	resp, err := r.exchange(c, wire)
	if err != nil && errors.Is(err, errIdleClosed) {
		resp, err = r.exchange(c, wire)
	}
	if !count {
		if err != nil || !r.cfg.KeepAlive || resp.Close {
			c.close()
		}
		return
	}
	c.sent++
	if err != nil {
		c.errors++
		c.sample(err.Error())
		c.close()
		return
	}
	c.hist.Record(time.Since(t0))
	c.answered++
	c.status[resp.StatusCode]++
	if resp.StatusCode >= 400 {
		c.errors++
		c.sample("status " + strconv.Itoa(resp.StatusCode))
	}
	if !r.cfg.KeepAlive || resp.Close {
		c.close()
	}
}

// errIdleClosed marks a reused connection closed by the server before any response byte.
var errIdleClosed = errors.New("keep-alive connection closed before the response")

func (r *Runner) exchange(c *client, wire []byte) (*http.Response, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			time.Sleep(10 * time.Millisecond) // a server that is gone is not hammered in a tight loop
			return nil, fmt.Errorf("connecting to %s: %w", c.addr, err)
		}
		c.conn, c.br, c.used = conn, bufio.NewReader(conn), 0
	}
	reused := c.used > 0
	c.used++
	_ = c.conn.SetDeadline(time.Now().Add(r.cfg.Timeout))
	if _, err := c.conn.Write(wire); err != nil {
		c.close()
		if reused {
			return nil, errIdleClosed
		}
		return nil, fmt.Errorf("sending: %w", err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		idle := reused && (err == io.EOF || isReset(err)) // io.EOF exactly: not one byte came
		c.close()
		if idle {
			return nil, errIdleClosed
		}
		return nil, fmt.Errorf("reading the response: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		c.close()
		return nil, fmt.Errorf("reading the body: %w", err)
	}
	return resp, nil
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

func (c *client) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.br = nil, nil
	}
}

func (c *client) sample(msg string) {
	if len(c.samples) < maxSamples {
		c.samples = append(c.samples, msg)
	}
}
