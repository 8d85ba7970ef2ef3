package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/testenv"
)

// workerClasses are the worker classes end-to-end tests run with, as extra arguments.
var workerClasses = map[string][]string{"sync": {}, "gthread": {"-k", "gthread", "--threads", "3"}}

func TestServesEveryRoute(t *testing.T) {
	for class, args := range workerClasses {
		t.Run(class, func(t *testing.T) { servesEveryRoute(t, args) })
	}
}

func servesEveryRoute(t *testing.T, classArgs []string) {
	g := startGorn(t, gornOpts{}, append(classArgs, "-w", "2", "app:app")...)
	cases := []struct {
		method, path, body string
		status             int
		check              func(string) bool
	}{
		{"GET", "/", "", 200, func(b string) bool { return b == "Hello, World!\n" }},
		{"GET", "/json", "", 200, func(b string) bool {
			var doc map[string]any
			return json.Unmarshal([]byte(b), &doc) == nil && len(b) > 900 && doc["service"] == "gorn-example"
		}},
		{"POST", "/echo", "ping pong", 200, func(b string) bool { return b == "ping pong" }},
		{"GET", "/stream?n=3", "", 200, func(b string) bool { return b == "chunk 0\nchunk 1\nchunk 2\n" }},
		{"GET", "/slow?ms=10", "", 200, func(b string) bool { return strings.HasPrefix(b, "slept 10 ms") }},
		{"GET", "/work?cpu_ms=1&io_ms=1", "", 200, func(b string) bool { return b == "cpu 1.0 ms, io 1.0 ms\n" }},
		{"GET", "/error", "", 500, func(string) bool { return true }},
		{"GET", "/pid", "", 200, func(b string) bool { _, err := strconv.Atoi(strings.TrimSpace(b)); return err == nil }},
		{"GET", "/missing", "", 404, func(string) bool { return true }},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, g.url(tc.path), strings.NewReader(tc.body))
		resp, err := client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !tc.check(string(body)) {
			t.Errorf("%s %s = %d %q", tc.method, tc.path, resp.StatusCode, body)
		}
	}
	// The stream has no length: HTTP/1.1 gets it chunked.
	out := rawRequest(t, g.addr, "GET /stream?n=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5*time.Second)
	if !strings.Contains(out, "Transfer-Encoding: chunked") {
		t.Errorf("stream not chunked:\n%s", out)
	}
	if g.logs.count("this endpoint always fails") == 0 {
		t.Errorf("the /error traceback is not in the error log")
	}
}

func TestConcurrentSlowRequestsUseDifferentWorkers(t *testing.T) {
	g := startGorn(t, gornOpts{}, "-w", "2", "app:app")
	var wg sync.WaitGroup
	bodies := make([]string, 2)
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, bodies[i] = get(t, g.url("/slow?ms=700"))
		}()
	}
	wg.Wait()
	pid := func(b string) string { f := strings.Fields(b); return f[len(f)-1] }
	if pid(bodies[0]) == pid(bodies[1]) {
		t.Errorf("both slow requests were served by pid %s", pid(bodies[0]))
	}
}

func TestKilledWorkerIsReplaced(t *testing.T) { eachMode(t, testKilledWorkerIsReplaced) }

func testKilledWorkerIsReplaced(t *testing.T, o gornOpts) {
	g := startGorn(t, gornOpts{preload: o.preload}, "-w", "2", "app:app")
	pids := g.workerPids()
	if len(pids) != 2 {
		t.Fatalf("worker pids %v", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	g.waitLog("worker ready", 3, 20*time.Second)
	for i := 0; i < 20; i++ {
		if code, _ := get(t, g.url("/")); code != 200 {
			t.Fatalf("request %d after the kill: %d", i, code)
		}
	}
	after := g.workerPids()
	if len(after) != 2 || after[0] == pids[0] && after[1] == pids[1] {
		t.Errorf("pids before %v after %v", pids, after)
	}
	if g.logs.count("killed by a signal gorn did not send") != 1 {
		t.Errorf("the kill is not reported as an outside signal")
	}
}

func TestTermLetsInFlightRequestFinish(t *testing.T) { eachMode(t, testTermLetsInFlightRequestFinish) }

func testTermLetsInFlightRequestFinish(t *testing.T, o gornOpts) {
	g := startGorn(t, gornOpts{preload: o.preload}, "-w", "1", "app:app")
	result := make(chan string, 1)
	go func() {
		resp, err := client().Get(g.url("/slow?ms=1500"))
		if err != nil {
			result <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		result <- fmt.Sprintf("%d %s", resp.StatusCode, body)
	}()
	time.Sleep(400 * time.Millisecond)
	g.signal(syscall.SIGTERM)
	if got := <-result; !strings.HasPrefix(got, "200 slept 1500 ms") {
		t.Errorf("in-flight request got %q", got)
	}
	if code := g.wait(20 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

func TestImportErrorExits4(t *testing.T) { eachMode(t, testImportErrorExits4) }

func testImportErrorExits4(t *testing.T, o gornOpts) {
	g := startGorn(t, gornOpts{noWait: true, preload: o.preload}, "-w", "2", "no_such_module:app")
	if code := g.wait(30 * time.Second); code != 4 {
		t.Fatalf("exit code %d, want 4", code)
	}
	if g.logs.count("No module named 'no_such_module'") == 0 {
		t.Errorf("the Python error is not in the log:\n%s", g.logs.String())
	}
	if n := g.logs.count("worker ready"); n != 0 {
		t.Errorf("%d workers became ready", n)
	}
}

func TestPortInUseExits1(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	g := startGorn(t, gornOpts{noWait: true}, "-b", l.Addr().String(), "app:app")
	if code := g.wait(20 * time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if g.logs.count(l.Addr().String()) == 0 || g.logs.count("address already in use") == 0 {
		t.Errorf("the error does not name the address:\n%s", g.logs.String())
	}
}

// TestSecondGornOnTheSameAddress: a second gorn on a bound address exits 1, as a second
// gunicorn does, unless both say --reuse-port; then both serve it.
func TestSecondGornOnTheSameAddress(t *testing.T) {
	first := startGorn(t, gornOpts{}, "-w", "1", "app:app")
	second := startGorn(t, gornOpts{noWait: true}, "-w", "1", "-b", first.addr, "app:app")
	if code := second.wait(20 * time.Second); code != 1 {
		t.Fatalf("second gorn on %s: exit code %d, want 1", first.addr, code)
	}
	if second.logs.count(first.addr) == 0 || second.logs.count("address already in use") == 0 {
		t.Errorf("the error does not name the address:\n%s", second.logs.String())
	}

	a := startGorn(t, gornOpts{}, "-w", "1", "--reuse-port", "app:app")
	b := startGorn(t, gornOpts{}, "-w", "1", "--reuse-port", "-b", a.addr, "app:app")
	if code, _ := get(t, b.url("/pid")); code != 200 {
		t.Fatalf("GET through the shared port: %d", code)
	}
}

func TestBadFlagsExit2(t *testing.T) {
	for _, args := range [][]string{
		{"--no-such-flag", "app:app"},
		{"-w", "many", "app:app"},
		{},
		{"-b", "1.2.3.4:99999", "app:app"},
		{"--timeout", "-3", "app:app"},
	} {
		cmd := exec.Command(gornBin, args...)
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Errorf("gorn %v: err %v, want exit 2", args, err)
		}
		if lines := strings.Count(strings.TrimSpace(string(out)), "\n") + 1; lines != 1 || !strings.Contains(string(out), "error") {
			t.Errorf("gorn %v printed %d lines: %q", args, lines, out)
		}
	}
	out, err := exec.Command(gornBin, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "gorn ") {
		t.Errorf("--version: %v %q", err, out)
	}
}

// An idle keep-alive connection must not make the next client wait for the keep-alive
// timeout when there is only one worker.
func TestIdleKeepAliveDoesNotBlockOthers(t *testing.T) {
	g := startGorn(t, gornOpts{}, "-w", "1", "--keep-alive", "10", "app:app")
	idle, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	start := time.Now()
	code, _ := get(t, g.url("/"))
	if elapsed := time.Since(start); code != 200 || elapsed > 5*time.Second {
		t.Errorf("second client: %d after %s (keep-alive timeout is 10s)", code, elapsed)
	}
}

func TestFactoryAndChdirAndEnv(t *testing.T) {
	dir := t.TempDir()
	src := `import os
def create_app(name):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [("%s %s" % (name, os.environ.get("GREETING"))).encode()]
    return app
`
	if err := os.WriteFile(filepath.Join(dir, "factory.py"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	g := startGorn(t, gornOpts{dir: repoRoot}, "--chdir", dir, "-e", "GREETING=hi", `factory:create_app("prod")`)
	if code, body := get(t, g.url("/")); code != 200 || body != "prod hi" {
		t.Errorf("got %d %q", code, body)
	}
}

func TestUnixSocketAndPidFile(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "gorn.sock")
	pidfile := filepath.Join(dir, "gorn.pid")
	g := startGorn(t, gornOpts{}, "-b", "unix:"+sock, "-p", pidfile, "app:app")
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Get("http://gorn/pid")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	pid, _ := os.ReadFile(pidfile)
	if strings.TrimSpace(string(pid)) != strconv.Itoa(g.cmd.Process.Pid) {
		t.Errorf("pid file %q, master %d", pid, g.cmd.Process.Pid)
	}
	g.signal(syscall.SIGTERM)
	g.wait(20 * time.Second)
	for _, p := range []string{sock, pidfile} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
}

// TestReadOnlyRootFilesystem: gorn and its workers write nothing to disk, so they serve
// with the root filesystem mounted read-only (Kubernetes readOnlyRootFilesystem).
func TestReadOnlyRootFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "needs root to remount / read-only in a private mount namespace")
	}
	wrap := []string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -o remount,ro,bind / / && ! touch /gorn-rofs-probe 2>/dev/null && exec "$0" "$@"`}
	if err := exec.Command(wrap[0], append(wrap[1:], "true")...).Run(); err != nil {
		testenv.Missing(t, "cannot remount / read-only here: %v", err)
	}
	g := startGorn(t, gornOpts{wrap: wrap}, "-w", "2", "app:app")
	for _, path := range []string{"/", "/json", "/stream", "/error"} {
		code, _ := get(t, g.url(path))
		if want := map[string]int{"/error": 500}[path]; code != max(want, 200) {
			t.Errorf("GET %s on a read-only root: %d", path, code)
		}
	}
	g.signal(syscall.SIGTERM)
	if code := g.wait(20 * time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}

// TestWorkersRunAsUserAndGroup: -u/-g/-m apply to the workers (as gunicorn's), the master
// stays root, and the workers still serve on the sockets the master bound.
func TestWorkersRunAsUserAndGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "needs root to start workers as another user")
	}
	if _, err := user.Lookup("nobody"); err != nil {
		testenv.Missing(t, "no user nobody: %v", err)
	}
	nobody, _ := user.Lookup("nobody")
	uid, _ := strconv.Atoi(nobody.Uid)
	// The workers need an interpreter and an app directory that nobody can reach.
	py := ""
	for _, candidate := range []string{python(t), "/usr/bin/python3"} {
		check := exec.Command(candidate, "-c", "pass")
		check.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: 65534}}
		if check.Run() == nil {
			py = candidate
			break
		}
	}
	if py == "" {
		testenv.Missing(t, "no Python interpreter that user nobody may run")
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "hello.py"), "def application(environ, start_response):\n"+
		"    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'hello']\n")
	g := startGorn(t, gornOpts{dir: dir}, "--python", py, "-w", "2", "-u", "nobody", "-g", "65534", "-m", "027", "hello")
	if code, body := get(t, g.url("/")); code != 200 || body != "hello" {
		t.Fatalf("GET / = %d %q", code, body)
	}
	for _, pid := range g.workerPids() {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		fields := map[string]string{}
		for _, line := range strings.Split(string(status), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[k] = strings.Join(strings.Fields(v), " ")
			}
		}
		if !strings.HasPrefix(fields["Uid"], nobody.Uid+" ") || !strings.HasPrefix(fields["Gid"], "65534 ") {
			t.Errorf("worker %d: Uid %q Gid %q, want nobody and 65534", pid, fields["Uid"], fields["Gid"])
		}
		if u, ok := fields["Umask"]; ok && u != "0027" {
			t.Errorf("worker %d: umask %s, want 0027", pid, u)
		}
	}
	g.signal(syscall.SIGTERM)
	if code := g.wait(20 * time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}
