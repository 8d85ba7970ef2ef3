// Package hookhost runs a config file's master-side server hooks (gunicorn's on_starting,
// when_ready, pre_fork, child_exit, ...) in a long-lived Python process, the hook host
// (gorn_worker/hookhost.py), and is the master's side of the socket to it. Calls are JSON
// lines answered in order. Nothing here blocks its caller except the calls that gunicorn
// makes its arbiter wait for (on_starting, when_ready, pre_fork, on_reload, pre_exec,
// on_exit), and those are bounded: a hook running longer than the timeout is taken as
// hung, the host is killed and started again. A host that dies is logged, counted and
// restarted; it is told the live workers and runs when_ready again, so threads started
// there (metrics exporters) come back.
package hookhost

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/master"
)

// Config is how to run the host.
type Config struct {
	// Start forks and execs the host with conn as its end of the socket, its exit routed
	// to owner (worker.Spawner.StartHost).
	Start func(conn *os.File, owner chan<- master.Exit) (*os.Process, error)
	// Timeout is how long a hook may run before the host is taken as hung.
	Timeout time.Duration
	Log     *zap.Logger
}

// Restart back-off: a host that keeps dying is started again at most this often.
const (
	restartBase = 100 * time.Millisecond
	restartMax  = 10 * time.Second
	stableAfter = 10 * time.Second // a host that lived this long starts the back-off anew
	closeGrace  = 2 * time.Second  // after on_exit, for the host to exit by itself
)

// Host is the master's handle on the hook host process.
type Host struct {
	cfg   Config
	exits chan master.Exit
	stop  chan struct{} // closed by Close
	done  chan struct{} // closed when the supervisor returns

	restarts atomic.Uint64

	mu         sync.Mutex
	conn       *os.File
	wake       chan struct{} // the current connection's writer: the queue grew
	proc       *os.Process
	started    time.Time
	killing    bool // a hook overran: the host was killed
	queue      []*call
	pending    map[uint64]*call // written, awaiting the reply
	nextID     uint64
	workers    map[int]master.HookWorker // live workers, to brief a restarted host
	numWorkers *int
	closed     bool
}

type call struct {
	msg      map[string]any
	id       uint64
	deadline time.Time  // set when written
	done     chan error // nil: nobody waits
}

// Start starts the host process; the caller then runs on_starting and when_ready.
func Start(cfg Config) (*Host, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	h := &Host{cfg: cfg, exits: make(chan master.Exit, 4), stop: make(chan struct{}), done: make(chan struct{}),
		pending: map[uint64]*call{}, workers: map[int]master.HookWorker{}}
	if err := h.launch(); err != nil {
		return nil, err
	}
	go h.supervise()
	return h, nil
}

// Restarts is how many times the host died (or was killed as hung) and was started again.
func (h *Host) Restarts() uint64 { return h.restarts.Load() }

// Pid is the current host process's pid (0 while none runs).
func (h *Host) Pid() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.proc == nil {
		return 0
	}
	return h.proc.Pid
}

func (h *Host) launch() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("creating the hook host's socket: %w", err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return fmt.Errorf("creating the hook host's socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "hook-host"), os.NewFile(uintptr(fds[1]), "hook-host")
	proc, err := h.cfg.Start(theirs, h.exits)
	theirs.Close()
	if err != nil {
		ours.Close()
		return err
	}
	wake := make(chan struct{}, 1)
	h.mu.Lock()
	h.conn, h.proc, h.wake, h.started, h.killing = ours, proc, wake, time.Now(), false
	if len(h.queue) > 0 {
		wake <- struct{}{}
	}
	h.mu.Unlock()
	go h.read(ours)
	go h.write(ours, wake)
	return nil
}

// send queues a message; it never blocks. done, if not nil, receives the outcome.
func (h *Host) send(msg map[string]any, done chan error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		if done != nil {
			done <- errors.New("the hook host is closed")
		}
		return
	}
	h.nextID++
	h.queue = append(h.queue, &call{msg: msg, id: h.nextID, done: done})
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// Call runs a hook and waits for it, at most the timeout (the host is killed then).
func (h *Host) Call(name string, fields map[string]any) error {
	msg := map[string]any{"call": name}
	for k, v := range fields {
		msg[k] = v
	}
	done := make(chan error, 1)
	h.send(msg, done)
	// The supervisor kills an overrunning host and fails the call; this bounds the
	// wait even if that does not happen (a host stuck where SIGKILL cannot reach it).
	t := time.NewTimer(2*h.cfg.Timeout + closeGrace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%s hook: no answer within %s", name, 2*h.cfg.Timeout+closeGrace)
	}
}

// Notify runs a hook without waiting for it.
func (h *Host) Notify(name string, fields map[string]any) {
	msg := map[string]any{"call": name}
	for k, v := range fields {
		msg[k] = v
	}
	h.send(msg, nil)
}

func (h *Host) write(conn *os.File, wake chan struct{}) {
	enc := json.NewEncoder(conn)
	for {
		select {
		case <-wake:
		case <-h.stop:
			return
		}
		h.mu.Lock()
		if h.conn != conn {
			h.mu.Unlock()
			return
		}
		batch := h.queue
		h.queue = nil
		now := time.Now()
		for _, c := range batch {
			c.msg["id"] = c.id
			c.deadline = now.Add(h.cfg.Timeout)
			h.pending[c.id] = c
		}
		h.mu.Unlock()
		for _, c := range batch {
			if err := enc.Encode(c.msg); err != nil {
				return // the host is gone: its exit fails the pending calls
			}
		}
	}
}

type reply struct {
	ID    uint64 `json:"id"`
	Error string `json:"error"`
}

func (h *Host) read(conn *os.File) {
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		var r reply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			h.cfg.Log.Error("hook host: unreadable reply", zap.ByteString("reply", sc.Bytes()))
			continue
		}
		h.mu.Lock()
		c := h.pending[r.ID]
		delete(h.pending, r.ID)
		h.mu.Unlock()
		if c == nil || c.done == nil {
			continue
		}
		if r.Error != "" {
			c.done <- fmt.Errorf("%s hook raised %s", c.msg["call"], r.Error)
		} else {
			c.done <- nil
		}
	}
}

// supervise restarts the host when it dies and kills it when a hook overruns.
func (h *Host) supervise() {
	defer close(h.done)
	tick := time.NewTicker(min(max(h.cfg.Timeout/20, 10*time.Millisecond), time.Second))
	defer tick.Stop()
	crashes := 0
	for {
		select {
		case e := <-h.exits:
			if h.onExit(e) {
				return
			}
			if time.Since(h.startedAt()) > stableAfter {
				crashes = 0
			}
			crashes++
			delay := min(restartBase<<min(crashes-1, 16), restartMax)
			select {
			case <-time.After(delay):
			case <-h.stop:
				return
			}
			h.relaunch()
		case <-tick.C:
			h.checkOverdue()
		case <-h.stop:
			// Close waits for the exit itself.
			return
		}
	}
}

func (h *Host) startedAt() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.started
}

// onExit fails the calls the dead host had been given; it reports whether the host was
// closed (so nothing restarts).
func (h *Host) onExit(e master.Exit) bool {
	h.mu.Lock()
	failed := h.pending
	h.pending = map[uint64]*call{}
	if h.conn != nil {
		h.conn.Close()
		h.conn = nil
	}
	if h.proc != nil {
		_ = h.proc.Release()
		h.proc = nil
	}
	closed, killed := h.closed, h.killing
	h.mu.Unlock()
	status := describe(e.Status)
	for _, c := range failed {
		if c.done != nil {
			c.done <- fmt.Errorf("%s hook: the hook host exited (%s)", c.msg["call"], status)
		}
	}
	if closed {
		return true
	}
	h.restarts.Add(1)
	if !killed {
		h.cfg.Log.Error("the hook host exited unexpectedly; starting it again", zap.Int("pid", e.Pid), zap.String("status", status))
	}
	return false
}

// relaunch starts a new host, briefed with the live workers before anything queued,
// and runs when_ready again.
func (h *Host) relaunch() {
	h.mu.Lock()
	workers := make([]master.HookWorker, 0, len(h.workers))
	for _, w := range h.workers {
		workers = append(workers, w)
	}
	h.nextID += 2
	brief := []*call{
		{msg: map[string]any{"call": "state", "workers": workers, "num_workers": h.numWorkers}, id: h.nextID - 1},
		{msg: map[string]any{"call": "when_ready"}, id: h.nextID},
	}
	h.queue = append(brief, h.queue...)
	h.mu.Unlock()
	if err := h.launch(); err != nil {
		h.cfg.Log.Error("starting the hook host again", zap.Error(err))
		h.restarts.Add(1)
		go func() { h.exits <- master.Exit{Status: syscall.WaitStatus(0xff00)} }() // try again after the back-off
	}
}

func (h *Host) checkOverdue() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.killing || h.proc == nil {
		return
	}
	now := time.Now()
	for _, c := range h.pending {
		if now.After(c.deadline) {
			h.killing = true
			h.cfg.Log.Error("a server hook did not return in time; killing the hook host and starting it again",
				zap.Any("hook", c.msg["call"]), zap.Duration("timeout", h.cfg.Timeout), zap.Int("pid", h.proc.Pid))
			_ = h.proc.Signal(unix.SIGKILL)
			return
		}
	}
}

// PreFork runs pre_fork(server, worker) before the worker is forked; the master's spawn
// waits for it (bounded).
func (h *Host) PreFork(w master.HookWorker) {
	if err := h.Call("pre_fork", map[string]any{"worker": w}); err != nil {
		h.cfg.Log.Debug("pre_fork", zap.Error(err))
	}
}

// Spawned tells the host the worker's pid (server.WORKERS); Pid 0: the fork failed.
func (h *Host) Spawned(w master.HookWorker) {
	h.mu.Lock()
	if w.Pid != 0 {
		h.workers[w.Pid] = w
	}
	h.mu.Unlock()
	h.Notify("spawned", map[string]any{"worker": w})
}

// ChildExit runs child_exit(server, worker) for a reaped worker.
func (h *Host) ChildExit(w master.HookWorker) {
	h.mu.Lock()
	delete(h.workers, w.Pid)
	h.mu.Unlock()
	h.Notify("child_exit", map[string]any{"worker": w})
}

// WorkersChanged runs nworkers_changed(server, new, old); old < 0 is None (at start).
func (h *Host) WorkersChanged(now, old int) {
	h.mu.Lock()
	h.numWorkers = &now
	h.mu.Unlock()
	fields := map[string]any{"new": now, "old": nil}
	if old >= 0 {
		fields["old"] = old
	}
	h.Notify("nworkers_changed", fields)
}

// Adopt tells the host about workers it did not see spawn (after a binary upgrade).
func (h *Host) Adopt(ws []master.HookWorker, desired int) {
	h.mu.Lock()
	for _, w := range ws {
		h.workers[w.Pid] = w
	}
	h.numWorkers = &desired
	h.mu.Unlock()
	h.Notify("state", map[string]any{"workers": ws, "num_workers": desired})
}

// Close runs on_exit (bounded), then ends the host.
func (h *Host) Close() {
	if err := h.Call("on_exit", nil); err != nil {
		h.cfg.Log.Debug("on_exit", zap.Error(err))
	}
	h.mu.Lock()
	h.closed = true
	if h.conn != nil {
		h.conn.Close() // EOF: the host returns
	}
	proc := h.proc
	h.mu.Unlock()
	close(h.stop)
	<-h.done
	h.mu.Lock()
	reaped := h.proc == nil
	h.mu.Unlock()
	if reaped {
		return
	}
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-h.exits:
	case <-t.C:
		if proc != nil {
			_ = proc.Signal(unix.SIGKILL)
		}
	}
}

func describe(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit %d", ws.ExitStatus())
	case ws.Signaled():
		return "killed by " + unix.SignalName(ws.Signal())
	default:
		return fmt.Sprintf("status %#x", uint32(ws))
	}
}
