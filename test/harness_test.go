// Package test holds gorn's end-to-end tests: they build the real binary and drive real
// Python workers over loopback sockets with real signals.
package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/testenv"
)

var (
	gornBin  string // built once by TestMain
	repoRoot string
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Dir(filepath.Dir(file))
	dir, err := os.MkdirTemp("", "gorn-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gornBin = filepath.Join(dir, "gorn")
	build := exec.Command("go", "build", "-o", gornBin, "./cmd/gorn")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building gorn:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// python returns an interpreter that has Flask, or skips.
func python(t testing.TB) string {
	t.Helper()
	py := os.Getenv("GORN_TEST_PYTHON")
	if py == "" {
		venv := filepath.Join(repoRoot, ".venv", "bin", "python")
		if _, err := os.Stat(venv); err == nil {
			py = venv
		} else {
			py = "python3"
		}
	}
	if err := exec.Command(py, "-c", "import flask").Run(); err != nil {
		testenv.Missing(t, "no Python with Flask (%s: %v); run `make test`, which creates .venv", py, err)
	}
	return py
}

// logBuffer collects a process's output and lets tests wait for lines.
type logBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	cond *sync.Cond
}

func newLogBuffer() *logBuffer {
	l := &logBuffer{}
	l.cond = sync.NewCond(&l.mu)
	return l
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cond.Broadcast()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// count returns how many lines contain s.
func (l *logBuffer) count(s string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// gorn is a running master.
type gorn struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    *logBuffer // stdout (access log)
	logs   *logBuffer // stderr (error log)
	addr   string     // first listener, host:port
	done   chan struct{}
	status *os.ProcessState
}

type gornOpts struct {
	dir     string   // working dir; default examples/flask
	env     []string // extra environment
	noWait  bool     // do not wait for the listener and workers
	workers int      // wait for this many "worker ready" lines (default from -w)
	wrap    []string // command prefix, e.g. unshare
	// ownPython leaves out --python: gorn picks the interpreter itself.
	ownPython bool
	preload   bool // --preload: workers are forked from the mold
}

// eachMode runs a lifecycle test twice: workers started by the master, and forked from
// the --preload mold.
func eachMode(t *testing.T, test func(t *testing.T, o gornOpts)) {
	t.Run("spawn", func(t *testing.T) { test(t, gornOpts{}) })
	t.Run("preload", func(t *testing.T) { test(t, gornOpts{preload: true}) })
}

// startGorn runs the built binary with args (plus -b 127.0.0.1:0 unless a bind is given)
// and waits until it listens and the workers are ready.
func startGorn(t *testing.T, o gornOpts, args ...string) *gorn {
	t.Helper()
	return startGornWith(t, o, gornBin, args...)
}

// startGornWith is startGorn with another binary.
func startGornWith(t *testing.T, o gornOpts, bin string, args ...string) *gorn {
	t.Helper()
	if o.dir == "" {
		o.dir = filepath.Join(repoRoot, "examples", "flask")
	}
	hasBind := false
	for _, a := range args {
		if a == "-b" || a == "--bind" || strings.HasPrefix(a, "--bind=") {
			hasBind = true
		}
	}
	full := []string{"--log-format", "json"}
	if !o.ownPython {
		full = append(full, "--python", python(t))
	}
	if o.preload {
		full = append(full, "--preload")
	}
	if !hasBind {
		full = append(full, "-b", "127.0.0.1:0")
	}
	full = append(full, args...)
	argv := append(append([]string{}, o.wrap...), bin)
	argv = append(argv, full...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = o.dir
	cmd.Env = append(cleanEnv(), o.env...)
	g := &gorn{t: t, cmd: cmd, out: newLogBuffer(), logs: newLogBuffer(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = g.out, g.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting gorn: %v", err)
	}
	go func() {
		_ = cmd.Wait()
		g.status = cmd.ProcessState
		close(g.done)
	}()
	t.Cleanup(func() {
		select {
		case <-g.done:
		default:
			_ = cmd.Process.Signal(syscall.SIGQUIT)
			select {
			case <-g.done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-g.done
			}
		}
		if t.Failed() {
			t.Logf("gorn stderr:\n%s", g.logs.String())
		}
	})
	if o.noWait {
		return g
	}
	g.addr = g.waitListening()
	want := o.workers
	if want == 0 {
		want = 1
		for i, a := range args {
			if (a == "-w" || a == "--workers") && i+1 < len(args) {
				fmt.Sscan(args[i+1], &want)
			}
		}
	}
	g.waitLog("worker ready", want, 30*time.Second)
	return g
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "WEB_CONCURRENCY", "PORT", "GORN_CPUS", "VIRTUAL_ENV", "SCRIPT_NAME", "GORN_CMD_ARGS", "GUNICORN_CMD_ARGS":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// logLines returns the parsed JSON log lines of the master.
func (g *gorn) logLines() []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(g.logs.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func (g *gorn) waitListening() string {
	g.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range g.logLines() {
			if l["msg"] == "listening" {
				return strings.TrimPrefix(l["address"].(string), "tcp://")
			}
		}
		select {
		case <-g.done:
			g.t.Fatalf("gorn exited before listening (%v):\n%s", g.status, g.logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	g.t.Fatalf("gorn did not listen within 30s:\n%s", g.logs.String())
	return ""
}

// waitLog waits until at least n lines contain s.
func (g *gorn) waitLog(s string, n int, timeout time.Duration) {
	g.t.Helper()
	deadline := time.Now().Add(timeout)
	for g.logs.count(s) < n {
		if time.Now().After(deadline) {
			g.t.Fatalf("timed out waiting for %d lines with %q (have %d):\n%s", n, s, g.logs.count(s), g.logs.String())
		}
		select {
		case <-g.done:
			if g.logs.count(s) >= n {
				return
			}
			g.t.Fatalf("gorn exited (%v) while waiting for %q:\n%s", g.status, s, g.logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// wait waits for the master to exit and returns its exit code.
func (g *gorn) wait(timeout time.Duration) int {
	g.t.Helper()
	select {
	case <-g.done:
		if ws, ok := g.status.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return g.status.ExitCode()
	case <-time.After(timeout):
		g.t.Fatalf("gorn did not exit within %s:\n%s", timeout, g.logs.String())
		return -1
	}
}

func (g *gorn) signal(sig syscall.Signal) {
	g.t.Helper()
	if err := g.cmd.Process.Signal(sig); err != nil {
		g.t.Fatalf("signalling gorn: %v", err)
	}
}

// workerPids lists the master's worker children from /proc (not the hook host).
func (g *gorn) workerPids() []int {
	return slices.DeleteFunc(childPids(g.cmd.Process.Pid), func(pid int) bool {
		t := processTitle(pid)
		return t == "hooks" || t == "mold"
	})
}

// processTitle is what a gorn child's argv says it is: "worker", "hooks", "mold", or ""
// if gone.
func processTitle(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	for _, arg := range strings.Split(string(data), "\x00") {
		if rest, ok := strings.CutPrefix(arg, "gorn: "); ok {
			return strings.Fields(rest)[0]
		}
	}
	return ""
}

// hookHostPid is the master's hook host child, 0 if none.
func (g *gorn) hookHostPid() int {
	for _, pid := range childPids(g.cmd.Process.Pid) {
		if t := processTitle(pid); t == "hooks" || t == "mold" {
			return pid
		}
	}
	return 0
}

// childPids lists a process's children; each thread has its own list (gorn forks from a
// dedicated thread), so all tasks are read.
func childPids(ppid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", ppid))
	var pids []int
	for _, task := range tasks {
		data, err := os.ReadFile(task)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			var p int
			fmt.Sscan(f, &p)
			pids = append(pids, p)
		}
	}
	slices.Sort(pids)
	return pids
}

func (g *gorn) url(path string) string { return "http://" + g.addr + path }

// client is an HTTP client without connection reuse across tests.
func client() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := client().Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// rawRequest writes a raw request on a new connection and returns everything read back
// until the server closes or timeout passes.
func rawRequest(t *testing.T, addr, req string, timeout time.Duration) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write: %v", err)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startProcess starts cmd with its output collected, and returns the output and a channel
// closed once it has exited. At the end of the test a process still running gets stop,
// then SIGKILL 10 s later, and a failed test logs the output under the name what.
func startProcess(t *testing.T, cmd *exec.Cmd, what string, stop syscall.Signal) (*logBuffer, <-chan struct{}) {
	t.Helper()
	out := newLogBuffer()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", what, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Signal(stop)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", what, out.String())
		}
	})
	return out, done
}
