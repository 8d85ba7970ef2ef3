package worker

import (
	"archive/zip"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/internal/scoreboard"
	"github.com/gornhq/gorn/internal/testenv"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/socket"
)

func TestRuntimeZip(t *testing.T) {
	f, err := runtimeZip("")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	zr, err := zip.NewReader(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, zf := range zr.File {
		have[zf.Name] = true
	}
	for _, want := range []string{"__main__.py", "gorn_worker/__init__.py", "gorn_worker/main.py", "gorn_worker/sync.py"} {
		if !have[want] {
			t.Errorf("runtime zip lacks %s (has %v)", want, have)
		}
	}
}

// TestSpawnServesAndReaps starts one real worker from the embedded runtime, waits for its
// scoreboard slot to say ready, serves a request, stops it and reaps it.
func TestSpawnServesAndReaps(t *testing.T) {
	py := testenv.Python(t)
	dir := t.TempDir()
	app := "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'spawned']\n"
	if err := os.WriteFile(filepath.Join(dir, "tiny.py"), []byte(app), 0o644); err != nil {
		t.Fatal(err)
	}
	addr, _ := socket.ParseAddress("127.0.0.1:0")
	ls, err := socket.Bind([]socket.Address{addr}, socket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ls[0].Close()
	board, err := scoreboard.New(2)
	if err != nil {
		t.Fatal(err)
	}
	defer board.Close()
	reaper, _ := testReaper()
	exits := make(chan master.Exit, 1)
	sp, err := NewSpawner(Config{
		Python: py, Listeners: []*os.File{ls[0].File()}, Board: board,
		Stdout: os.Stdout, Stderr: os.Stderr, Reaper: reaper, Exits: exits,
		Spec: func() Spec {
			return Spec{Dir: dir, Env: os.Environ(), Settings: Settings{Options: map[string]any{"app": "tiny", "worker_class": "sync",
				"keepalive": 2, "header_timeout": 10, "limit_request_line": 4094, "limit_request_fields": 100,
				"limit_request_field_size": 8190, "forwarded_allow_ips": []string{}, "pythonpath": []string{},
				"error_log": "-", "log_level": "info", "log_format": "text", "server_software": "gorn/test",
				"access_log_format": "json", "threads": 1, "worker_connections": 1000, "umask": -1}}}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The spawner holds the lifeline's write end: collected (its *os.File finalized) before
	// the end of the test, it would close the pipe and the worker would exit 0 while booting.
	defer runtime.KeepAlive(sp)
	proc, err := sp.Spawn(master.SpawnRequest{Slot: 1, Generation: 3, Workers: 1})()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for proc.Status().State != scoreboard.StateReady {
		select {
		case e := <-exits:
			if e.Pid == proc.Pid() {
				t.Fatalf("worker exited while booting: %+v", e)
			}
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not ready: %+v", proc.Status())
		}
	}
	if s := proc.Status(); s.PID != uint64(proc.Pid()) || s.Generation != 3 {
		t.Errorf("slot %+v, pid %d", s, proc.Pid())
	}
	select { // the worker announced its readiness on the pipe too
	case <-sp.Readies():
	case <-time.After(5 * time.Second):
		t.Error("ready in the scoreboard, but nothing arrived on the readiness pipe")
	}
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(ls[0].Port()) + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "spawned" || resp.Header.Get("Server") != "gorn/test" {
		t.Errorf("got %q server %q", body, resp.Header.Get("Server"))
	}
	if err := proc.Kill(); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-exits:
			if e.Pid != proc.Pid() {
				t.Fatalf("reaped %+v, routed to the worker's owner", e)
			}
			if !e.Status.Signaled() {
				t.Errorf("reaped %+v, want pid %d killed", e, proc.Pid())
			}
			return
		case <-timeout:
			t.Fatal("worker not reaped")
		}
	}
}

// testReaper is the one reaper of the test binary: a second one (go test -count=2) would
// race the first for wait4 and steal its exits. Exits nobody routed go to the channel.
var testReaper = sync.OnceValues(func() (*Reaper, chan master.Exit) {
	others := make(chan master.Exit, 16)
	return NewReaper(others), others
})

// TestAttachHoldsAndReleasesAPidfd: an adopted worker is signalled through a pidfd of its
// own, which Release closes.
func TestAttachHoldsAndReleasesAPidfd(t *testing.T) {
	board, err := scoreboard.New(1)
	if err != nil {
		t.Fatal(err)
	}
	defer board.Close()
	reaper, _ := testReaper()
	exited := make(chan master.Exit, 1)
	var child *os.Process
	if _, err := reaper.Start(exited, func() (int, error) {
		var err error
		child, err = os.StartProcess("/bin/sleep", []string{"sleep", "30"}, &os.ProcAttr{})
		if err != nil {
			return 0, err
		}
		return child.Pid, nil
	}); err != nil {
		t.Fatal(err)
	}
	defer child.Release()
	sp := &Spawner{cfg: Config{Board: board}}
	p := sp.Attach(child.Pid, 0).(*Process)
	if !p.hasPidfd {
		t.Fatal("no pidfd on the adopted worker")
	}
	fd := p.pidfd
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-exited:
		if !e.Status.Signaled() || e.Status.Signal() != syscall.SIGTERM {
			t.Errorf("exit %+v, want SIGTERM", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the signal did not arrive")
	}
	p.Release()
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
		t.Error("the pidfd is still open after Release")
	}
	if err := p.Signal(syscall.SIGTERM); err == nil {
		t.Error("a released worker was signalled")
	}
}
