// Package loadgen generates bounded HTTP/1.1 load against loopback servers and counts
// outcomes as a real client does. Start is the chaos tests' closed-loop client (bench/chaos
// shares it); Run is the measuring one behind `gorn bench`: closed-loop connections or an
// open-loop constant rate, keep-alive or not, weighted requests, and a latency histogram.
package loadgen

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Load is a bounded closed-loop HTTP/1.1 load generator that counts outcomes as a real
// client does. A request on a reused keep-alive connection that the server closed before
// sending any byte of a response is retried once on a new connection (RFC 9112 section
// 9.3.1); nothing else is retried, and every request sent is accounted for.
type Load struct {
	addr    string
	paths   []string
	stop    chan struct{}
	wg      sync.WaitGroup
	Sent    atomic.Int64 // requests sent
	OK      atomic.Int64 // 200 responses
	Retried atomic.Int64 // retried once after an idle keep-alive connection was closed
	mu      sync.Mutex
	fails   []string
}

// countingReader counts bytes read from a connection.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type conn struct {
	c    net.Conn
	cr   *countingReader
	br   *bufio.Reader
	used int
}

func dialConn(addr string) (*conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	cr := &countingReader{r: c}
	return &conn{c: c, cr: cr, br: bufio.NewReader(cr)}, nil
}

// Start runs clients goroutines; each uses keep-alive for a few requests, then a new
// connection, so both kinds are always in the mix. Paths cycle through paths.
func Start(addr string, clients int, paths ...string) *Load {
	if len(paths) == 0 {
		paths = []string{"/"}
	}
	l := &Load{addr: addr, paths: paths, stop: make(chan struct{})}
	for i := 0; i < clients; i++ {
		l.wg.Add(1)
		go l.run(i)
	}
	return l
}

func (l *Load) run(id int) {
	defer l.wg.Done()
	var c *conn
	defer func() {
		if c != nil {
			c.c.Close()
		}
	}()
	for n := 0; ; n++ {
		select {
		case <-l.stop:
			return
		default:
		}
		path := l.paths[n%len(l.paths)]
		keep := (n+id)%5 != 0 // every fifth request closes its connection
		if c == nil {
			var err error
			if c, err = dialConn(l.addr); err != nil {
				l.fail(fmt.Sprintf("dial: %v", err))
				time.Sleep(10 * time.Millisecond)
				continue
			}
		}
		l.Sent.Add(1)
		reused := c.used > 0
		resp, gotBytes, err := c.do(path, keep)
		if err != nil && reused && !gotBytes {
			// The server closed an idle keep-alive connection: retry once on a new one.
			l.Retried.Add(1)
			c.c.Close()
			if c, err = dialConn(l.addr); err == nil {
				resp, _, err = c.do(path, keep)
			}
		}
		if err != nil {
			l.fail(fmt.Sprintf("%s (reused=%v): %v", path, reused, err))
			if c != nil {
				c.c.Close()
				c = nil
			}
			continue
		}
		if resp.StatusCode != 200 {
			l.fail(fmt.Sprintf("%s: status %d", path, resp.StatusCode))
		} else {
			l.OK.Add(1)
		}
		if !keep || resp.Close {
			c.c.Close()
			c = nil
		}
	}
}

// do sends one request and reads the whole response; gotBytes says whether any byte of a
// response arrived.
func (c *conn) do(path string, keep bool) (*http.Response, bool, error) {
	hdr := ""
	if !keep {
		hdr = "Connection: close\r\n"
	}
	c.used++
	before, buffered := c.cr.n, c.br.Buffered() > 0
	_ = c.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c.c, "GET %s HTTP/1.1\r\nHost: gorn\r\n%s\r\n", path, hdr); err != nil {
		return nil, false, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	got := buffered || c.cr.n > before
	if err != nil {
		return nil, got, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, true, err
	}
	return resp, true, nil
}

func (l *Load) fail(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fails = append(l.fails, time.Now().Format("15:04:05.000")+" "+msg)
}

// Failures returns the failures so far.
func (l *Load) Failures() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.fails...)
}

// Finish stops the generator and returns the failures.
func (l *Load) Finish() []string {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fails
}

func (l *Load) String() string {
	return fmt.Sprintf("sent=%d ok=%d retried=%d failed=%d", l.Sent.Load(), l.OK.Load(), l.Retried.Load(), len(l.fails))
}

// QueuedAtStop keeps busy requests to slowPath in flight (one per worker), queues queued
// more connections with a request to fastPath on the listener, calls stop (for example
// sending SIGTERM to the master) and waits for every answer. It returns how many got a
// 200 and the failures: a server that drains its listen queue on shutdown fails none.
func QueuedAtStop(addr string, busy, queued int, slowPath, fastPath string, stop func()) (ok int, fails []string) {
	results := make(chan error, busy+queued)
	send := func(path string) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			results <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: gorn\r\n\r\n", path)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("%s: status %d", path, resp.StatusCode)
			}
		}
		results <- err
	}
	for i := 0; i < busy; i++ {
		go send(slowPath)
	}
	time.Sleep(300 * time.Millisecond)
	for i := 0; i < queued; i++ {
		go send(fastPath)
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	for i := 0; i < busy+queued; i++ {
		if err := <-results; err != nil {
			fails = append(fails, err.Error())
		} else {
			ok++
		}
	}
	return ok, fails
}
