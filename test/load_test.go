package test

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

// load is a bounded closed-loop HTTP/1.1 load generator that counts outcomes as a real
// client does. A request on a reused keep-alive connection that the server closed before
// sending any byte of a response is retried once on a new connection (RFC 9112 section
// 9.3.1); nothing else is retried, and every request sent is accounted for.
type load struct {
	addr    string
	stop    chan struct{}
	wg      sync.WaitGroup
	sent    atomic.Int64
	ok      atomic.Int64
	retried atomic.Int64
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

// startLoad runs workers goroutines; each uses keep-alive for a few requests, then a new
// connection, so both kinds are always in the mix.
func startLoad(addr string, workers int) *load {
	l := &load{addr: addr, stop: make(chan struct{})}
	for i := 0; i < workers; i++ {
		l.wg.Add(1)
		go l.run(i)
	}
	return l
}

func (l *load) run(id int) {
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
		path := []string{"/", "/json", "/pid", "/slow?ms=5"}[n%4]
		keep := (n+id)%5 != 0 // every fifth request closes its connection
		if c == nil {
			var err error
			if c, err = dialConn(l.addr); err != nil {
				l.fail(fmt.Sprintf("dial: %v", err))
				time.Sleep(10 * time.Millisecond)
				continue
			}
		}
		l.sent.Add(1)
		reused := c.used > 0
		resp, gotBytes, err := c.do(path, keep)
		if err != nil && reused && !gotBytes {
			// The server closed an idle keep-alive connection: retry once on a new one.
			l.retried.Add(1)
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
			l.ok.Add(1)
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

func (l *load) fail(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fails = append(l.fails, time.Now().Format("15:04:05.000")+" "+msg)
}

// finish stops the generator and returns the failures.
func (l *load) finish() []string {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fails
}

func (l *load) String() string {
	return fmt.Sprintf("sent=%d ok=%d retried=%d failed=%d", l.sent.Load(), l.ok.Load(), l.retried.Load(), len(l.fails))
}
