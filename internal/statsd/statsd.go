// Package statsd sends the master's share of gunicorn's StatsD metrics (the workers gauge,
// the backlog histogram and the log counters; the workers send the request metrics): gunicorn's names, types and
// line format, prefix and DogStatsD tags, to a UDP or unix datagram address. Sending never
// blocks the caller: lines go through a bounded queue to one goroutine, and are dropped
// when it is full or the server is away, as StatsD over UDP always may.
package statsd

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// DefaultPort is gunicorn's for an address without one.
const DefaultPort = "8125"

// ParseAddress normalizes gunicorn's statsd_host forms: "unix://PATH" or "unix:PATH" give
// "unix://PATH"; "HOST:PORT", "[V6]:PORT" and "HOST" (port 8125) give "HOST:PORT" (so
// "unix:8125", gunicorn's host "unix", stays itself).
func ParseAddress(s string) (string, error) {
	if rest, ok := strings.CutPrefix(s, "unix:"); ok {
		if _, err := strconv.Atoi(rest); err == nil {
			// gunicorn's own regression guard: unix:PORT is the host "unix".
			return net.JoinHostPort("unix", rest), nil
		}
		path := strings.TrimPrefix(rest, "//")
		if path == "" {
			return "", fmt.Errorf("want unix://PATH or HOST:PORT")
		}
		return "unix://" + path, nil
	}
	host, port := s, DefaultPort
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	} else if strings.Count(s, ":") == 1 {
		return "", fmt.Errorf("want HOST:PORT: %w", err)
	}
	host = strings.Trim(host, "[]")
	if host == "" {
		return "", fmt.Errorf("want HOST:PORT or unix://PATH")
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return "", fmt.Errorf("port %q: want 1-65535", port)
	}
	return net.JoinHostPort(strings.ToLower(host), port), nil
}

var trailingDots = regexp.MustCompile(`^(.+[^.]+)\.*$`)

// Prefix is gunicorn's statsd_prefix as it is put in front of every name: trailing dots
// become one (gunicorn's regular expression, quirks included).
func Prefix(p string) string { return trailingDots.ReplaceAllString(p, "${1}.") }

// Client sends lines to one StatsD server.
type Client struct {
	conn   net.Conn
	prefix string
	tags   string     // "|#TAGS" or ""
	mu     sync.Mutex // put against Close: no send on the closed queue
	closed bool
	queue  chan string
	done   chan struct{}
}

// Dial connects to addr (as ParseAddress returns it). prefix is the user's statsd_prefix,
// tags the DogStatsD tags ("" for none).
func Dial(addr, prefix, tags string) (*Client, error) {
	network := "udp"
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		network, addr = "unixgram", path
	}
	conn, err := net.Dial(network, addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to the statsd server %s: %w", addr, err)
	}
	c := &Client{conn: conn, prefix: Prefix(prefix), queue: make(chan string, 1024), done: make(chan struct{})}
	if tags != "" {
		c.tags = "|#" + tags
	}
	go c.send()
	return c, nil
}

func (c *Client) send() {
	defer close(c.done)
	for line := range c.queue {
		_, _ = c.conn.Write([]byte(line)) // lossy by design: no server, no metric
	}
}

func (c *Client) put(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	select {
	case c.queue <- line + c.tags:
	default: // full: drop rather than block the caller
	}
}

// Gauge sends NAME:VALUE|g.
func (c *Client) Gauge(name string, v int) { c.put(fmt.Sprintf("%s%s:%d|g", c.prefix, name, v)) }

// Increment sends NAME:VALUE|c|@1.0, gunicorn's counter line.
func (c *Client) Increment(name string, v int) {
	c.put(fmt.Sprintf("%s%s:%d|c|@1.0", c.prefix, name, v))
}

// Histogram sends NAME:VALUE|h.
func (c *Client) Histogram(name string, v int) { c.put(fmt.Sprintf("%s%s:%d|h", c.prefix, name, v)) }

// Close sends what is queued and closes the connection; later lines are dropped.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	close(c.queue)
	c.mu.Unlock()
	<-c.done
	c.conn.Close()
}
