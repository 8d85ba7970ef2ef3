package hookhost

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/gornhq/gorn/master"
)

// The test binary is also the fake host: with $FAKE_HOOK_HOST set it speaks the protocol
// on fd 3 (calls named "hang" never return, "die" exits 1), appends each call's name to
// the file $FAKE_HOOK_HOST names, and with $FAKE_HOOK_FAIL exits 4 at once (an app that
// does not import).
func TestMain(m *testing.M) {
	if path := os.Getenv("FAKE_HOOK_HOST"); path != "" {
		os.Exit(fakeHost(path))
	}
	os.Exit(m.Run())
}

func fakeHost(path string) int {
	if os.Getenv("FAKE_HOOK_FAIL") != "" {
		return 4
	}
	conn := os.NewFile(3, "conn")
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		var msg map[string]any
		if json.Unmarshal(sc.Bytes(), &msg) != nil {
			return 2
		}
		name := fmt.Sprint(msg["call"])
		f, _ := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		fmt.Fprintf(f, "%d %s\n", os.Getpid(), name)
		f.Close()
		switch name {
		case "hang":
			time.Sleep(time.Hour)
		case "die":
			return 1
		}
		reply, _ := json.Marshal(map[string]any{"id": msg["id"], "pid": 4242})
		if _, err := conn.Write(append(reply, '\n')); err != nil {
			return 0
		}
	}
	return 0
}

// fakeStarter starts the fake host; its exits go to owner as the reaper would send them.
type fakeStarter struct {
	t    *testing.T
	log  string
	mu   sync.Mutex
	fail bool
}

func (f *fakeStarter) start(conn *os.File, owner chan<- master.Exit) (*os.Process, error) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "FAKE_HOOK_HOST="+f.log)
	f.mu.Lock()
	if f.fail {
		cmd.Env = append(cmd.Env, "FAKE_HOOK_FAIL=1")
	}
	f.mu.Unlock()
	cmd.ExtraFiles = []*os.File{conn}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = cmd.Wait()
		owner <- master.Exit{Pid: cmd.Process.Pid, Status: cmd.ProcessState.Sys().(syscall.WaitStatus)}
	}()
	return cmd.Process, nil
}

// names are the calls the fake host pid received, in order.
func (f *fakeStarter) names(pid int) []string {
	data, _ := os.ReadFile(f.log)
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var p int
		var name string
		if _, err := fmt.Sscan(line, &p, &name); err == nil && p == pid {
			out = append(out, name)
		}
	}
	return out
}

func startFake(t *testing.T, timeout time.Duration) (*Host, *fakeStarter) {
	t.Helper()
	f := &fakeStarter{t: t, log: t.TempDir() + "/calls"}
	h, err := Start(Config{Start: f.start, Timeout: timeout, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Abort)
	return h, f
}

func TestCallsAreAnsweredInOrder(t *testing.T) {
	h, f := startFake(t, 5*time.Second)
	h.Notify("one", nil)
	h.WorkersChanged(2, -1)
	if err := h.Call("two", nil); err != nil {
		t.Fatal(err)
	}
	pid, err := h.Fork(master.HookWorker{Age: 1}, 2, nil)
	if err != nil || pid != 4242 {
		t.Fatalf("Fork = %d, %v", pid, err)
	}
	if got, want := strings.Join(f.names(h.Pid()), " "), "one nworkers_changed two fork"; got != want {
		t.Errorf("calls %q, want %q", got, want)
	}
}

// A call that overruns the timeout gets its host killed: the call fails, the restart is
// counted, and the new host hears the live workers and when_ready before anything else.
func TestHungCallRestartsTheHost(t *testing.T) {
	h, f := startFake(t, 300*time.Millisecond)
	first := h.Pid()
	h.Spawned(master.HookWorker{Pid: 77, Age: 1})
	err := h.Call("hang", nil)
	var exit *ExitError
	if !errors.As(err, &exit) || exit.Status.Signal() != syscall.SIGKILL {
		t.Fatalf("hung call: %v, want the host killed", err)
	}
	h.Notify("after", nil)
	if err := h.Call("again", nil); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	second := h.Pid()
	if second == first || h.Restarts() != 1 {
		t.Fatalf("host %d -> %d, restarts %d", first, second, h.Restarts())
	}
	if got, want := strings.Join(f.names(second), " "), "ping state when_ready after again"; got != want {
		t.Errorf("the restarted host heard %q, want %q", got, want)
	}
}

// A host that dies is restarted; a call it had is failed, not repeated.
func TestCrashedHostIsRestarted(t *testing.T) {
	h, _ := startFake(t, 5*time.Second)
	if err := h.Call("die", nil); err == nil {
		t.Fatal("a call whose host died succeeded")
	}
	if err := h.Call("fine", nil); err != nil {
		t.Fatal(err)
	}
	if h.Restarts() != 1 {
		t.Errorf("restarts %d, want 1", h.Restarts())
	}
}

// Replace: a new host that fails leaves the old one current; one that answers becomes
// current and the old one exits once it has answered what it was given.
func TestReplace(t *testing.T) {
	h, f := startFake(t, 5*time.Second)
	old := h.Pid()
	f.mu.Lock()
	f.fail = true
	f.mu.Unlock()
	if err := h.Replace("on_reload"); err == nil {
		t.Fatal("Replace with a failing host succeeded")
	}
	if h.Pid() != old || h.Call("still", nil) != nil {
		t.Fatalf("the old host %d is not current (%d) after a failed replace", old, h.Pid())
	}
	f.mu.Lock()
	f.fail = false
	f.mu.Unlock()
	if err := h.Replace("on_reload"); err != nil {
		t.Fatal(err)
	}
	if h.Pid() == old || h.Restarts() != 0 {
		t.Fatalf("host %d after a replace (was %d), restarts %d", h.Pid(), old, h.Restarts())
	}
	if err := syscall.Kill(old, 0); err == nil {
		t.Errorf("the replaced host %d still runs", old)
	}
	h.Notify("next", nil)
	if err := h.Call("sync", nil); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(f.names(h.Pid()), " "), "state ping on_reload when_ready next sync"; got != want {
		t.Errorf("the new host heard %q, want %q", got, want)
	}
}
