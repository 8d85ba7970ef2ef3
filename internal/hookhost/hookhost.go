// Package hookhost runs a config file's master-side server hooks (gunicorn's on_starting,
// when_ready, pre_fork, child_exit, ...) in a long-lived Python process, the hook host
// (gorn_worker/hookhost.py), and is the master's side of the socket to it. Calls are JSON
// lines answered in order. Nothing here blocks its caller except the calls that gunicorn
// makes its arbiter wait for (on_starting, when_ready, pre_fork, on_reload, pre_exec,
// on_exit) and, with --preload, a fork, and those are bounded: a hook running longer than
// the timeout is taken as hung, the host is killed and started again. A host that dies is
// logged, counted and restarted; it is told the live workers and runs when_ready again, so
// threads started there (metrics exporters) come back. With --preload the host is the mold
// that forks the workers; Replace builds a new one from new code.
package hookhost

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
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
	// Start forks and execs a host with conn as its end of the socket, its exit routed
	// to owner (worker.Spawner.StartHost).
	Start func(conn *os.File, owner chan<- master.Exit) (*os.Process, error)
	// Timeout is how long a hook may run before the host is taken as hung.
	Timeout time.Duration
	// LoadTimeout bounds a new mold's import of the app (Replace); 0: Timeout.
	LoadTimeout time.Duration
	Log         *zap.Logger
}

// Restart back-off: a host that keeps dying is started again at most this often.
const (
	restartBase = 100 * time.Millisecond
	restartMax  = 10 * time.Second
	stableAfter = 10 * time.Second // a host that lived this long starts the back-off anew
	closeGrace  = 2 * time.Second  // after on_exit (or a replacement), for the host to exit by itself
)

// Host is the master's handle on the hook host process.
type Host struct {
	cfg   Config
	exits chan master.Exit
	stop  chan struct{} // closed by Close
	done  chan struct{} // closed when the supervisor returns

	restarts atomic.Uint64

	mu         sync.Mutex
	cur        *proc         // the host that gets new calls; nil while restarting
	procs      map[int]*proc // every host process not yet reaped, by pid
	queue      []*call       // not yet handed to a process
	nextID     uint64
	workers    map[int]master.HookWorker // live workers, to brief a restarted host
	numWorkers *int
	closed     bool
}

// proc is one host process and its connection.
type proc struct {
	p       *os.Process
	conn    *os.File
	wake    chan struct{} // its writer: calls were queued
	queue   []*call       // its own calls, not yet written
	pending map[uint64]*call
	started time.Time
	// progress is when it last answered (or started): the oldest pending call has run
	// since then, or since it was written if later.
	progress time.Time
	killing  bool          // a call overran: it was killed
	retired  bool          // replaced: it finishes what it was given, then exits
	gone     chan struct{} // closed when reaped
	drained  chan struct{} // closed when its reader has seen EOF: every reply it sent is read
}

type call struct {
	msg     map[string]any
	id      uint64
	fd      *os.File      // sent with the line (SCM_RIGHTS), if not nil
	timeout time.Duration // 0: the host's
	written time.Time
	done    chan reply // nil: nobody waits
}

type reply struct {
	ID    uint64 `json:"id"`
	Error string `json:"error"`
	Pid   int    `json:"pid"`
	err   error
}

// ExitError is a call's failure because its host exited.
type ExitError struct{ Status syscall.WaitStatus }

func (e *ExitError) Error() string { return "the hook host exited (" + describe(e.Status) + ")" }

// Ready waits until the host answers, at most the load timeout: a mold has imported the app.
func (h *Host) Ready() error {
	h.mu.Lock()
	c := h.newCall("ping", nil, make(chan reply, 1))
	c.timeout = h.cfg.LoadTimeout
	h.mu.Unlock()
	h.send(c)
	return h.wait(c).err
}

// Start starts the host process; the caller then runs on_starting and when_ready.
func Start(cfg Config) (*Host, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.LoadTimeout <= 0 {
		cfg.LoadTimeout = cfg.Timeout
	}
	h := &Host{cfg: cfg, exits: make(chan master.Exit, 4), stop: make(chan struct{}), done: make(chan struct{}),
		procs: map[int]*proc{}, workers: map[int]master.HookWorker{}}
	p, err := h.launch()
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.cur = p
	h.mu.Unlock()
	go h.supervise()
	return h, nil
}

// Restarts is how many times the host died (or was killed as hung) and was started again.
func (h *Host) Restarts() uint64 { return h.restarts.Load() }

// Pid is the current host process's pid (0 while none runs).
func (h *Host) Pid() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur == nil {
		return 0
	}
	return h.cur.p.Pid
}

func (h *Host) launch() (*proc, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("creating the hook host's socket: %w", err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("creating the hook host's socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "hook-host"), os.NewFile(uintptr(fds[1]), "hook-host")
	// Under the lock: the reaper may deliver the exit before procs knows the pid.
	h.mu.Lock()
	defer h.mu.Unlock()
	pr, err := h.cfg.Start(theirs, h.exits)
	theirs.Close()
	if err != nil {
		ours.Close()
		return nil, err
	}
	now := time.Now()
	p := &proc{p: pr, conn: ours, wake: make(chan struct{}, 1), pending: map[uint64]*call{}, started: now, progress: now, gone: make(chan struct{}), drained: make(chan struct{})}
	h.procs[pr.Pid] = p
	go h.read(p)
	go h.write(p)
	return p, nil
}

// enqueue hands c to p, or to the general queue while no host runs. Locked.
func (h *Host) enqueue(p *proc, c *call) {
	if p == nil {
		h.queue = append(h.queue, c)
		return
	}
	p.queue = append(p.queue, c)
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (h *Host) newCall(name string, fields map[string]any, done chan reply) *call {
	msg := map[string]any{"call": name}
	for k, v := range fields {
		msg[k] = v
	}
	h.nextID++
	return &call{msg: msg, id: h.nextID, done: done}
}

// send queues a call to the current host; it never blocks.
func (h *Host) send(c *call) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		if c.done != nil {
			c.done <- reply{err: errors.New("the hook host is closed")}
		}
		return
	}
	h.enqueue(h.cur, c)
}

// wait waits for c's reply; the supervisor fails a call whose host died or overran, and
// this bounds the wait even if that never happens (a host SIGKILL cannot reach, or calls
// queued behind restarts). A call given up on is withdrawn, or its host killed if it has
// it already, so a fork nobody waits for does not happen.
func (h *Host) wait(c *call) reply {
	limit := 2*(h.cfg.LoadTimeout+h.cfg.Timeout) + closeGrace
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case r := <-c.done:
		return r
	case <-t.C:
		h.withdraw(c)
		return reply{err: fmt.Errorf("%s: no answer within %s", c.msg["call"], limit)}
	}
}

func (h *Host) withdraw(c *call) {
	h.mu.Lock()
	defer h.mu.Unlock()
	drop := func(q []*call) []*call { return slices.DeleteFunc(q, func(o *call) bool { return o == c }) }
	h.queue = drop(h.queue)
	for _, p := range h.procs {
		p.queue = drop(p.queue)
		if p.pending[c.id] == c && !p.killing {
			p.killing = true
			h.cfg.Log.Error("a call to the hook host was given up on; killing it", zap.Any("call", c.msg["call"]), zap.Int("pid", p.p.Pid))
			_ = p.p.Signal(unix.SIGKILL)
		}
	}
}

// Call runs a hook and waits for it, at most the timeout (the host is killed then).
func (h *Host) Call(name string, fields map[string]any) error {
	h.mu.Lock()
	c := h.newCall(name, fields, make(chan reply, 1))
	h.mu.Unlock()
	h.send(c)
	return h.wait(c).err
}

// Notify runs a hook without waiting for it.
func (h *Host) Notify(name string, fields map[string]any) {
	h.mu.Lock()
	c := h.newCall(name, fields, nil)
	h.mu.Unlock()
	h.send(c)
}

// Fork asks the mold for a worker (pre_fork runs there first) and returns its pid; fault
// is the worker's stack-dump pipe, passed along.
func (h *Host) Fork(w master.HookWorker, workers int, fault *os.File) (int, error) {
	h.mu.Lock()
	c := h.newCall("fork", map[string]any{"worker": w, "workers": workers, "fd": fault != nil}, make(chan reply, 1))
	c.fd = fault
	h.mu.Unlock()
	h.send(c)
	r := h.wait(c)
	if r.err == nil && r.Pid <= 0 {
		r.err = errors.New("fork: the mold answered no pid")
	}
	return r.Pid, r.err
}

func (h *Host) write(p *proc) {
	raw, err := p.conn.SyscallConn()
	if err != nil {
		return
	}
	for {
		select {
		case <-p.wake:
		case <-p.gone:
			return
		}
		h.mu.Lock()
		batch := p.queue
		p.queue = nil
		now := time.Now()
		for _, c := range batch {
			c.msg["id"] = c.id
			c.written = now
			p.pending[c.id] = c
		}
		h.mu.Unlock()
		for _, c := range batch {
			line, err := json.Marshal(c.msg)
			if err == nil {
				err = sendLine(raw, append(line, '\n'), c.fd)
			}
			if err != nil {
				return // the host is gone: its exit fails the pending calls
			}
		}
	}
}

// sendLine writes data, with fd as SCM_RIGHTS on its first bytes if not nil.
func sendLine(raw syscall.RawConn, data []byte, fd *os.File) error {
	var oob []byte
	if fd != nil {
		oob = unix.UnixRights(int(fd.Fd()))
	}
	var werr error
	for len(data) > 0 {
		err := raw.Write(func(s uintptr) bool {
			var n int
			n, werr = unix.SendmsgN(int(s), data, oob, nil, unix.MSG_NOSIGNAL)
			if werr == unix.EAGAIN {
				return false
			}
			if werr == nil {
				data, oob = data[n:], nil
			}
			return true
		})
		if err != nil {
			return err
		}
		if werr != nil && werr != unix.EINTR {
			return werr
		}
	}
	return nil
}

func (h *Host) read(p *proc) {
	defer close(p.drained)
	sc := bufio.NewScanner(p.conn)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		var r reply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			h.cfg.Log.Error("hook host: unreadable reply", zap.ByteString("reply", sc.Bytes()))
			continue
		}
		h.mu.Lock()
		c := p.pending[r.ID]
		delete(p.pending, r.ID)
		p.progress = time.Now()
		h.mu.Unlock()
		if c == nil || c.done == nil {
			continue
		}
		if r.Error != "" {
			r.err = fmt.Errorf("%s hook raised %s", c.msg["call"], r.Error)
			if c.msg["call"] == "fork" {
				r.err = fmt.Errorf("the mold could not fork: %s", r.Error)
			}
		}
		c.done <- r
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
			started, restart := h.onExit(e)
			if !restart {
				continue
			}
			if time.Since(started) > stableAfter {
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
			return
		}
	}
}

// onExit fails the calls the dead host had been given; it reports whether it was the
// current host, which is then started again.
func (h *Host) onExit(e master.Exit) (started time.Time, restart bool) {
	h.mu.Lock()
	p := h.procs[e.Pid]
	h.mu.Unlock()
	if p != nil {
		// The replies it sent before dying are read first: a fork it answered is the
		// caller's worker, not a failed call (the worker serves only once the mold has
		// sent the answer, see hookhost.py). Its socket is closed by its death, so the
		// reader sees EOF at once; the bound is for a host whose fd lives on elsewhere.
		select {
		case <-p.drained:
		case <-time.After(closeGrace):
		}
	}
	h.mu.Lock()
	if p == nil || h.procs[e.Pid] != p { // a launch that failed after its fork
		h.mu.Unlock()
		return time.Time{}, p == nil && e.Pid == 0 && !h.closed
	}
	delete(h.procs, e.Pid)
	close(p.gone)
	p.conn.Close()
	_ = p.p.Release()
	failed := p.pending
	p.pending = nil
	unwritten := p.queue
	p.queue = nil
	current := p == h.cur
	if current {
		h.cur = nil
		h.queue = append(unwritten, h.queue...) // for the next host
		unwritten = nil
	}
	closed, killed := h.closed, p.killing
	h.mu.Unlock()
	status := describe(e.Status)
	for _, c := range append(mapValues(failed), unwritten...) {
		if c.done != nil {
			c.done <- reply{err: fmt.Errorf("%s: %w", c.msg["call"], &ExitError{Status: e.Status})}
		}
	}
	if closed || !current {
		return p.started, false
	}
	h.restarts.Add(1)
	if !killed {
		h.cfg.Log.Error("the hook host exited unexpectedly; starting it again", zap.Int("pid", e.Pid), zap.String("status", status))
	}
	return p.started, true
}

func mapValues(m map[uint64]*call) []*call {
	out := make([]*call, 0, len(m))
	for _, c := range m {
		out = append(out, c)
	}
	return out
}

// brief is what a new host is told before anything else: the live workers.
func (h *Host) brief() []*call {
	workers := make([]master.HookWorker, 0, len(h.workers))
	for _, w := range h.workers {
		workers = append(workers, w)
	}
	return []*call{h.newCall("state", map[string]any{"workers": workers, "num_workers": h.numWorkers}, nil)}
}

// relaunch starts a new host after the current one died, briefed with the live workers
// before anything queued, and runs when_ready again.
func (h *Host) relaunch() {
	p, err := h.launch()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.cfg.Log.Error("starting the hook host again", zap.Error(err))
		h.restarts.Add(1)
		go func() { h.exits <- master.Exit{Status: syscall.WaitStatus(0xff00)} }() // try again after the back-off
		return
	}
	if h.closed {
		_ = p.p.Signal(unix.SIGKILL)
		return
	}
	queued := h.queue
	h.queue = nil
	// A mold imports the app before it answers: the first call may take the load timeout.
	ping := h.newCall("ping", nil, nil)
	ping.timeout = h.cfg.LoadTimeout
	for _, c := range append(append([]*call{ping}, append(h.brief(), h.newCall("when_ready", nil, nil))...), queued...) {
		h.enqueue(p, c)
	}
	h.cur = p
}

// Replace starts a new host (with --preload, a mold that imports the current code), waits
// until it answers, and makes it the current one; the old one finishes what it was given
// and exits. first are the new host's first calls (on_reload), after the briefing;
// when_ready follows once the old host is gone, so what it started (a server on a port)
// can start again. If the new host fails, the old one stays and the error says why.
func (h *Host) Replace(first ...string) error {
	p, err := h.launch()
	if err != nil {
		return err
	}
	h.mu.Lock()
	ping := h.newCall("ping", nil, make(chan reply, 1))
	ping.timeout = h.cfg.LoadTimeout
	for _, c := range append(h.brief(), ping) {
		h.enqueue(p, c)
	}
	h.mu.Unlock()
	if r := h.wait(ping); r.err != nil {
		_ = p.p.Signal(unix.SIGKILL)
		return fmt.Errorf("the new hook host did not start: %w", r.err)
	}
	h.mu.Lock()
	old := h.cur
	if h.closed {
		h.mu.Unlock()
		_ = p.p.Signal(unix.SIGKILL)
		return errors.New("the hook host is closed")
	}
	h.cur = p
	for _, name := range first {
		h.enqueue(p, h.newCall(name, nil, nil))
	}
	if old != nil {
		old.retired = true
		// Written calls are answered (a fork's pid reaches its spawn); the host reads
		// EOF after them and exits.
		_ = unix.Shutdown(int(old.conn.Fd()), unix.SHUT_WR)
	}
	h.mu.Unlock()
	if old != nil {
		select {
		case <-old.gone:
		case <-time.After(h.cfg.Timeout + closeGrace):
			_ = old.p.Signal(unix.SIGKILL)
			<-old.gone
		}
	}
	h.Notify("when_ready", nil)
	return nil
}

func (h *Host) checkOverdue() {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	for _, p := range h.procs {
		if p.killing {
			continue
		}
		// Calls run one at a time, in order: only the oldest pending one is running, since
		// the last answer (or since it was written, if later).
		var oldest *call
		for _, c := range p.pending {
			if oldest == nil || c.id < oldest.id {
				oldest = c
			}
		}
		if oldest == nil {
			continue
		}
		limit := max(oldest.timeout, h.cfg.Timeout)
		if now.Sub(later(p.progress, oldest.written)) > limit {
			p.killing = true
			h.cfg.Log.Error("a server hook did not return in time; killing the hook host and starting it again",
				zap.Any("hook", oldest.msg["call"]), zap.Duration("timeout", limit), zap.Int("pid", p.p.Pid))
			_ = p.p.Signal(unix.SIGKILL)
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
	h.Abort()
}

// Abort ends the host without running on_exit.
func (h *Host) Abort() {
	h.mu.Lock()
	h.closed = true
	var left []*proc
	for _, p := range h.procs {
		p.conn.Close() // EOF: the host returns
		left = append(left, p)
	}
	h.mu.Unlock()
	close(h.stop)
	<-h.done
	deadline := time.After(closeGrace)
	for _, p := range left {
		for alive := true; alive; {
			select {
			case e := <-h.exits:
				h.onExit(e)
			case <-p.gone:
				alive = false
			case <-deadline:
				_ = p.p.Signal(unix.SIGKILL)
				alive = false
			}
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
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
