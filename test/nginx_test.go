package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/testenv"
)

// nginxUpstreamErrors matches the lines of nginx's error log that are failures on an upstream
// connection: each is a request nginx had to retry on another connection (GET) or answer
// with 502 (POST, which it does not retry).
var nginxUpstreamErrors = regexp.MustCompile(`upstream prematurely closed|recv\(\) failed|reset by peer|upstream timed out|connect\(\) failed|no live upstreams|writev\(\) failed|send\(\) failed|Broken pipe|upstream sent (invalid|no valid|too big)`)

// nginxBin finds nginx (Debian's nginx-light), or skips; with GORN_TEST_STRICT=1 a missing
// nginx fails the test instead.
func nginxBin(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr == nil {
			bin, err = "/usr/sbin/nginx", nil
		}
	}
	if err != nil {
		testenv.Missing(t, "nginx not found (apt-get install nginx-light)")
	}
	return bin
}

// nginxProxy is an nginx in front of one upstream with upstream keep-alive, as an ingress
// controller or a load balancer would be.
type nginxProxy struct {
	addr     string // host:port nginx listens on
	errorLog string
}

// startNginx runs nginx as the current user on a loopback port, proxying to upstream with
// `keepalive 32`, HTTP/1.1 and an empty Connection header, and stops it when the test ends.
func startNginx(t *testing.T, upstream string) *nginxProxy {
	t.Helper()
	bin := nginxBin(t)
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	userLine := ""
	if os.Getuid() == 0 { // as root nginx would switch its workers to "nobody"
		u, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		g, err := user.LookupGroupId(u.Gid)
		if err != nil {
			t.Fatal(err)
		}
		userLine = fmt.Sprintf("user %s %s;", u.Username, g.Name)
	}
	p := &nginxProxy{addr: addr, errorLog: filepath.Join(dir, "error.log")}
	conf := fmt.Sprintf(`%[1]s
daemon off;
master_process on;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[3]s warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  upstream gorn {
    server %[4]s;
    keepalive 32;
  }
  server {
    listen %[5]s;
    location / {
      proxy_pass http://gorn;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }
  }
}
`, userLine, dir, p.errorLog, upstream, addr)
	confPath := filepath.Join(dir, "nginx.conf")
	writeFile(t, confPath, conf)
	cmd := exec.Command(bin, "-p", dir, "-e", p.errorLog, "-c", confPath)
	out := newLogBuffer()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nginx: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			log, _ := os.ReadFile(p.errorLog)
			t.Logf("nginx output:\n%s\nnginx error.log (first 4 KB):\n%.4096s", out.String(), log)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			t.Fatalf("nginx exited:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not listen on %s within 10s:\n%s", addr, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// upstreamErrors returns the lines of nginx's error log that are upstream failures.
func (p *nginxProxy) upstreamErrors(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(p.errorLog)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var lines []string
	for _, line := range strings.Split(string(data), "\n") {
		if nginxUpstreamErrors.MatchString(line) {
			lines = append(lines, line)
		}
	}
	return lines
}

// proxyLoad is the result of keep-alive GET and POST load through the proxy.
type proxyLoad struct {
	requests, non2xx, transportErrors, badBodies atomic.Int64
	mu                                           sync.Mutex
	samples                                      []string // the first few failures
}

func (l *proxyLoad) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.samples) < 5 {
		l.samples = append(l.samples, fmt.Sprintf(format, args...))
	}
}

// loadThroughProxy runs `clients` goroutines for d, half of them sending GET / and half POST
// /echo with a small body, each over kept-alive connections (one shared transport, as a
// browser fleet behind one proxy would be).
func loadThroughProxy(base string, clients int, d time.Duration) *proxyLoad {
	tr := &http.Transport{MaxIdleConnsPerHost: clients, IdleConnTimeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	res := &proxyLoad{}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	body := []byte("name=gorn&items=1,2,3&note=a small form body of a typical POST")
	const maxPerClient = 1_000_000 // the deadline ends the loop; this only bounds it
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		post := i%2 == 1
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < maxPerClient && ctx.Err() == nil; n++ {
				var req *http.Request
				if post {
					req, _ = http.NewRequest("POST", base+"/echo", bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				} else {
					req, _ = http.NewRequest("GET", base+"/", nil)
				}
				resp, err := hc.Do(req)
				if err != nil {
					res.transportErrors.Add(1)
					res.fail("%s: %v", req.Method, err)
					continue
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				res.requests.Add(1)
				switch {
				case err != nil:
					res.transportErrors.Add(1)
					res.fail("%s: reading the body: %v", req.Method, err)
				case resp.StatusCode/100 != 2:
					res.non2xx.Add(1)
					res.fail("%s: %s: %.80q", req.Method, resp.Status, got)
				case post && !bytes.Equal(got, body):
					res.badBodies.Add(1)
					res.fail("POST: echoed %d bytes, sent %d", len(got), len(body))
				}
			}
		}()
	}
	wg.Wait()
	return res
}

// TestNginxUpstreamKeepAlive puts 2 workers behind nginx with upstream keep-alive (the path
// of every pod behind an ingress controller) and sends concurrent kept-alive GET and POST
// load through it: no request may fail, and nginx must log no upstream error (a GET it
// retried after the upstream closed a kept connection under it, or a POST it answered
// 502 for). bench/nginx.sh is the long version with wrk.
func TestNginxUpstreamKeepAlive(t *testing.T) {
	nginxBin(t)
	for _, tc := range []struct {
		name  string
		class string
		extra []string
		hup   bool // a HUP (rolling reload) in the middle of the load
	}{
		{"sync", "sync", nil, false},
		{"gthread", "gthread", []string{"--threads", "4"}, false},
		// Workers replaced under the load: recycled every 50 requests, then all of them by a
		// HUP. A draining worker answers each kept connection's next request with
		// Connection: close instead of closing it under nginx.
		{"sync recycled and reloaded", "sync", []string{"--max-requests", "50"}, true},
		{"gthread recycled and reloaded", "gthread", []string{"--threads", "4", "--max-requests", "50"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-w", "2", "-k", tc.class}, tc.extra...)
			g := startGorn(t, gornOpts{}, append(args, "app:app")...)
			p := startNginx(t, g.addr)
			if code, _ := get(t, "http://"+p.addr+"/"); code != 200 {
				t.Fatalf("GET / through nginx: %d", code)
			}
			if tc.hup {
				timer := time.AfterFunc(2*time.Second, func() { g.signal(syscall.SIGHUP) })
				defer timer.Stop()
			}
			res := loadThroughProxy("http://"+p.addr, 32, 4*time.Second)
			time.Sleep(200 * time.Millisecond) // nginx writes its log as it goes; let the last lines land
			upstream := p.upstreamErrors(t)
			t.Logf("%s: %d requests, %d non-2xx, %d transport errors, %d bad bodies, %d upstream errors in nginx's log",
				tc.name, res.requests.Load(), res.non2xx.Load(), res.transportErrors.Load(), res.badBodies.Load(), len(upstream))
			if res.requests.Load() < 100 {
				t.Errorf("only %d requests in the load: nothing was measured", res.requests.Load())
			}
			if res.non2xx.Load()+res.transportErrors.Load()+res.badBodies.Load() > 0 {
				t.Errorf("failed requests through nginx: %d non-2xx, %d transport errors, %d bad bodies; first: %q",
					res.non2xx.Load(), res.transportErrors.Load(), res.badBodies.Load(), res.samples)
			}
			if len(upstream) > 0 {
				first := upstream
				if len(first) > 3 {
					first = first[:3]
				}
				t.Errorf("%d upstream errors in nginx's error log (requests retried or answered 502); first:\n%s",
					len(upstream), strings.Join(first, "\n"))
			}
		})
	}
}
