// Package worker starts gorn's Python workers: it packs the embedded gorn_worker runtime
// into an in-memory zip, forks and execs the interpreter with the listeners, scoreboard and
// lifeline as inherited fds (worker/CONTRACT.md), and reaps every child with one wait4 loop.
package worker

import (
	"archive/zip"
	"bufio"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/internal/scoreboard"
	"github.com/gornhq/gorn/master"
)

// The runtime, and its native accelerator when `make native` built one (lib/ holds a README
// otherwise, so the pattern always matches).
//
//go:embed pyworker/__main__.py pyworker/gorn_worker/*.py pyworker/gorn_worker/lib/*
var runtimeFS embed.FS

// bytecodeFS is the runtime compiled for each CPython minor version `make bytecode` found
// (bytecode/README.md): bytecode/cpython-3XX/gorn_worker/*.pyc.
//
//go:embed all:bytecode
var bytecodeFS embed.FS

// Settings is the JSON object a worker reads from $GORN_WORKER (the contract's table): the
// configuration's settings, keyed as in the contract (built by the config package's
// registry), plus the fields the spawner fills in for each worker.
type Settings struct {
	Options      map[string]any `json:"-"`
	Slot         int            `json:"slot"`
	Generation   int            `json:"generation"`
	Age          int            `json:"age"`
	ListenFDs    []int          `json:"listen_fds"`
	ScoreboardFD int            `json:"scoreboard_fd"`
	LifelineFD   int            `json:"lifeline_fd"`
	// FaultFD is the write end of the pipe the worker's faulthandler dumps stacks to.
	FaultFD int `json:"faulthandler_fd"`
	// ReadyFD is the write end of the readiness pipe (Spawner.Readies).
	ReadyFD int `json:"ready_fd"`
	Workers int `json:"workers"`
	// Check makes the worker import the app and exit: 0 if it loads, 4 if not.
	Check bool `json:"check,omitempty"`
}

// MarshalJSON writes Options and the per-worker fields as one object.
func (s Settings) MarshalJSON() ([]byte, error) {
	type perWorker Settings // without this method: the tagged fields only
	own, err := json.Marshal(perWorker(s))
	if err != nil {
		return nil, fmt.Errorf("encoding per-worker settings: %w", err)
	}
	m := map[string]json.RawMessage{}
	if err := json.Unmarshal(own, &m); err != nil {
		return nil, fmt.Errorf("decoding per-worker settings: %w", err)
	}
	for k, v := range s.Options {
		if _, clash := m[k]; clash {
			return nil, fmt.Errorf("encoding worker settings: option %q is set per worker", k)
		}
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encoding worker setting %s: %w", k, err)
		}
		m[k] = raw
	}
	return json.Marshal(m)
}

// procName is the name in the worker's process title.
func (s Settings) procName() string {
	if name, ok := s.Options["proc_name"].(string); ok && name != "" {
		return name
	}
	return "gorn"
}

// Spec is what the current configuration says about new workers; it changes on HUP.
type Spec struct {
	Dir        string              // working directory
	Env        []string            // full environment (without GORN_WORKER)
	Credential *syscall.Credential // user and groups to run as; nil = the master's
	Settings   Settings
}

// ConfigFileScript is the runtime's config file evaluator (gorn_worker/conffile.py): run
// as "python -c SCRIPT SOURCE", it prints the file's settings as JSON.
func ConfigFileScript() string {
	b, err := runtimeFS.ReadFile("pyworker/gorn_worker/conffile.py")
	if err != nil {
		panic(err) // embedded at build time
	}
	return string(b)
}

// Config is how to start workers.
type Config struct {
	Python    string
	Listeners []*os.File
	Board     *scoreboard.Board
	Stdout    *os.File
	Stderr    *os.File
	// Spec returns the current configuration's spec; it is called for every spawn.
	Spec func() Spec
	// Lifeline is an inherited pipe (read, write) after a binary upgrade; nil makes a new one.
	Lifeline *[2]*os.File
	// Faults reads each worker's stack-dump pipe (faulthandler's output: a hung or
	// crashed worker's Python stacks) until EOF, which comes when the worker is gone; the
	// spawner runs it in a goroutine of its own once the worker runs, and closes the pipe
	// after. nil: the dumps are dropped.
	Faults func(r io.Reader, pid, slot int)
	// Thread forks the workers; nil starts a thread of the spawner's own.
	Thread *Thread
	// Reaper collects the workers' exits and sends them to Exits.
	Reaper *Reaper
	Exits  chan<- master.Exit
}

// Spawner starts workers from one Thread (see Thread for why) and registers each with
// the reaper as it is forked.
type Spawner struct {
	cfg      Config
	zip      *os.File
	lifeline [2]*os.File // read end inherited by workers; write end held by the master
	ready    [2]*os.File // write end inherited by workers; read by watchReady
	thread   *Thread
	readies  chan struct{}
	forker   Forker // --preload: workers are forked by the mold

	faultsMu sync.Mutex
	faults   map[int]*os.File // pid -> the read end of its stack-dump pipe, while read
}

// NewSpawner packs the runtime and starts the spawning thread.
func NewSpawner(cfg Config) (*Spawner, error) {
	z, err := runtimeZip(pythonTag(cfg.Python))
	if err != nil {
		return nil, err
	}
	if cfg.Reaper == nil || cfg.Exits == nil {
		return nil, fmt.Errorf("starting the spawner: no reaper")
	}
	s := &Spawner{cfg: cfg, zip: z, thread: cfg.Thread, faults: map[int]*os.File{}}
	if s.thread == nil {
		s.thread = StartThread()
	}
	if cfg.Lifeline != nil {
		s.lifeline = *cfg.Lifeline
	} else {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("creating lifeline pipe: %w", err)
		}
		s.lifeline = [2]*os.File{r, w}
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating readiness pipe: %w", err)
	}
	s.ready, s.readies = [2]*os.File{r, w}, make(chan struct{}, 1)
	go s.watchReady()
	return s, nil
}

// Readies receives a value soon after a worker writes to the readiness pipe, which it
// does right after it marks itself ready in the scoreboard (the master's Inputs.Ready).
// Writes that arrive together are merged into one value.
func (s *Spawner) Readies() <-chan struct{} { return s.readies }

// watchReady turns bytes on the readiness pipe into values on readies. The spawner holds
// the pipe's write end for the workers it starts, so the read never sees EOF.
func (s *Spawner) watchReady() {
	buf := make([]byte, 256)
	for {
		n, err := s.ready[0].Read(buf)
		if n > 0 {
			select {
			case s.readies <- struct{}{}:
			default: // one is pending already; the loop will look at every booting worker
			}
		}
		if err != nil {
			return
		}
	}
}

// Lifeline returns the pipe's read end (inherited by workers) and write end (held by the
// master: when the master is gone, workers read EOF).
func (s *Spawner) Lifeline() (r, w *os.File) { return s.lifeline[0], s.lifeline[1] }

// Thread is the thread that forks the workers.
func (s *Spawner) Thread() *Thread { return s.thread }

// pythonTag guesses the bytecode directory (cpython-3XX) of the interpreter at path from
// the name it resolves to (python3.11: a venv's python links to its base's); "" when the
// name does not say.
func pythonTag(path string) string {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return ""
	}
	minor, ok := strings.CutPrefix(filepath.Base(real), "python3.")
	if !ok || minor == "" || strings.Trim(minor, "0123456789") != "" {
		return ""
	}
	return "cpython-3" + minor
}

// runtimeZip writes the embedded package to a memfd as a zip the interpreter can run: the
// sources at the root, and for the CPython version tag (all of them when tag is "") with
// embedded bytecode a directory cpython-3XX holding the bytecode beside a copy of the
// sources, which zipimport checks the bytecode's hash against and falls back to.
func runtimeZip(tag string) (*os.File, error) {
	fd, err := unix.MemfdCreate("gorn-worker-runtime", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating runtime memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "gorn-worker-runtime")
	// Written straight to the memfd, uncompressed: packing is on the way to the first
	// worker's start, and compressing 2 MB took longer (10 ms) than the whole rest of it.
	out := bufio.NewWriterSize(f, 1<<20)
	zw := zip.NewWriter(out)
	add := func(name string, data []byte) error {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	// The sources at the root, and again in each version's directory: once a version's
	// package is found there, its submodules are looked up there only, so a module
	// without bytecode (added after `make bytecode`) must still have its source there.
	var dirs []string
	entries, _ := bytecodeFS.ReadDir("bytecode")
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "cpython-") && (tag == "" || e.Name() == tag) {
			dirs = append(dirs, e.Name())
		}
	}
	err = fs.WalkDir(runtimeFS, "pyworker", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := runtimeFS.ReadFile(path)
		if err != nil {
			return err
		}
		name := path[len("pyworker/"):]
		if err := add(name, data); err != nil {
			return err
		}
		module, ok := strings.CutPrefix(name, "gorn_worker/")
		if !ok {
			return nil // __main__.py: run from the root
		}
		for _, dir := range dirs {
			if err := add(dir+"/"+name, data); err != nil {
				return err
			}
			pyc, err := bytecodeFS.ReadFile("bytecode/" + dir + "/gorn_worker/" + module + "c")
			if errors.Is(err, fs.ErrNotExist) {
				continue // compiled before this module existed: its source serves
			}
			if err != nil {
				return err
			}
			if err := add(dir+"/"+name+"c", pyc); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = out.Flush()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("packing the worker runtime: %w", err)
	}
	return f, nil
}

// Spawn implements master.Spawner: it reads the configuration's spec on the caller's
// goroutine (the master loop, which owns it) and returns the fork and exec, which run on
// the spawner's thread.
func (s *Spawner) Spawn(req master.SpawnRequest) func() (master.Process, error) {
	if s.forker != nil {
		return func() (master.Process, error) { return s.forkFromMold(req) }
	}
	spec := s.cfg.Spec()
	return func() (master.Process, error) {
		var (
			proc master.Process
			err  error
		)
		s.thread.Do(func() { proc, err = s.spawn(req, spec) })
		return proc, err
	}
}

// Forker forks a worker from the --preload mold and returns its pid; fault is its
// stack-dump pipe.
type Forker func(req master.SpawnRequest, fault *os.File) (pid int, err error)

// ForkFrom makes Spawn fork the workers with f instead of starting the interpreter.
// Call before the master runs.
func (s *Spawner) ForkFrom(f Forker) { s.forker = f }

// forkFromMold is spawn for --preload: the mold forks the worker, which the master then
// claims as its child (the mold's double fork re-parents it here, the subreaper).
func (s *Spawner) forkFromMold(req master.SpawnRequest) (master.Process, error) {
	cfg := s.cfg
	cfg.Board.Reset(req.Slot)
	faultR, faultW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating the stack-dump pipe: %w", err)
	}
	pid, err := s.forker(req, faultW)
	faultW.Close() // the worker's copy is the only writer now
	if err != nil {
		faultR.Close()
		return nil, fmt.Errorf("forking worker from the mold: %w", err)
	}
	p := &Process{pid: pid, board: cfg.Board, slot: req.Slot}
	if fd, ok := cfg.Reaper.Claim(pid, cfg.Exits); ok {
		p.pidfd, p.hasPidfd = fd, fd >= 0
	} else {
		// Exited before it was claimed: its exit is on its way to the master, which
		// matches it with this spawn; its pid may be reused, so nothing signals it.
		p.released = true
	}
	s.readFaults(faultR, pid, req.Slot)
	return p, nil
}

func (s *Spawner) spawn(req master.SpawnRequest, spec Spec) (master.Process, error) {
	cfg := s.cfg
	cfg.Board.Reset(req.Slot)
	set := spec.Settings
	set.Slot, set.Generation, set.Age, set.Workers = req.Slot, req.Generation, req.Age, req.Workers
	faultR, faultW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating the stack-dump pipe: %w", err)
	}
	defer faultW.Close() // the worker's copy is the only writer once it runs
	p, err := s.start(cfg.Exits, spec, set, fmt.Sprintf("worker [%s] slot=%d", set.procName(), req.Slot), faultW, nil, "")
	if err != nil {
		faultR.Close()
		return nil, fmt.Errorf("starting worker %s: %w", cfg.Python, err)
	}
	s.readFaults(faultR, p.Pid, req.Slot)
	return &Process{pid: p.Pid, proc: p, board: cfg.Board, slot: req.Slot}, nil
}

// readFaults reads a worker's stack-dump pipe in a goroutine until EOF, then closes it.
func (s *Spawner) readFaults(r *os.File, pid, slot int) {
	if s.cfg.Faults == nil {
		r.Close()
		return
	}
	s.faultsMu.Lock()
	s.faults[pid] = r
	s.faultsMu.Unlock()
	go func() {
		s.cfg.Faults(r, pid, slot)
		s.faultsMu.Lock()
		delete(s.faults, pid)
		r.Close() // under the lock: HoldFaults never names a closed descriptor
		s.faultsMu.Unlock()
	}()
}

// AdoptFaults reads the stack-dump pipe of a worker adopted after a binary upgrade (fd,
// inherited from the previous image); a descriptor that is not a pipe is left alone.
func (s *Spawner) AdoptFaults(fd, pid, slot int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return fmt.Errorf("adopting worker %d's stack-dump pipe: fd %d is not a pipe", pid, fd)
	}
	unix.CloseOnExec(fd)
	s.readFaults(os.NewFile(uintptr(fd), "stack-dump pipe"), pid, slot)
	return nil
}

// HoldFaults calls fn with the descriptors of the stack-dump pipes being read, by worker
// pid, and keeps every one of them open until fn returns: a binary upgrade execs inside
// fn and hands them over.
func (s *Spawner) HoldFaults(fn func(fds map[int]int) error) error {
	s.faultsMu.Lock()
	defer s.faultsMu.Unlock()
	fds := make(map[int]int, len(s.faults))
	for pid, f := range s.faults {
		fds[pid] = int(f.Fd())
	}
	return fn(fds)
}

// StartHost starts the hook host (gorn_worker/hookhost.py) with spec: the worker's
// inherited fds (listeners, scoreboard, lifeline) plus conn, its end of the master's
// socket, named by $GORN_HOOKHOST. Its exit goes to owner. It runs on the spawner's thread.
func (s *Spawner) StartHost(spec Spec, conn *os.File, owner chan<- master.Exit) (*os.Process, error) {
	set := spec.Settings
	set.Workers = 1
	var (
		p   *os.Process
		err error
	)
	s.thread.Do(func() {
		role := "hooks"
		if preload, _ := set.Options["preload"].(bool); preload {
			role = "mold"
		}
		p, err = s.start(owner, spec, set, fmt.Sprintf("%s [%s]", role, set.procName()), nil, conn, "GORN_HOOKHOST")
	})
	if err != nil {
		return nil, fmt.Errorf("starting the hook host %s: %w", s.cfg.Python, err)
	}
	return p, nil
}

// start forks and execs the runtime with set and the inherited fds, its exit routed to
// owner; title is the process title after "gorn: ". fault, if not nil, is the stack-dump
// pipe; extra, if not nil, is one more fd, whose number the variable env gets.
func (s *Spawner) start(owner chan<- master.Exit, spec Spec, set Settings, title string, fault, extra *os.File, env string) (*os.Process, error) {
	cfg := s.cfg
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", os.DevNull, err)
	}
	defer devnull.Close()
	files := []*os.File{devnull, cfg.Stdout, cfg.Stderr}
	set.ListenFDs = nil
	for _, l := range cfg.Listeners {
		set.ListenFDs = append(set.ListenFDs, len(files))
		files = append(files, l)
	}
	set.ScoreboardFD = len(files)
	files = append(files, cfg.Board.File())
	set.LifelineFD = len(files)
	files = append(files, s.lifeline[0])
	set.FaultFD = -1
	if fault != nil {
		set.FaultFD = len(files)
		files = append(files, fault)
	}
	set.ReadyFD = len(files)
	files = append(files, s.ready[1])
	zipFD := len(files)
	files = append(files, s.zip)
	js, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("encoding worker settings: %w", err)
	}
	environ := append(spec.Env[:len(spec.Env):len(spec.Env)], "GORN_WORKER="+string(js))
	if extra != nil {
		environ = append(environ, fmt.Sprintf("%s=%d", env, len(files)))
		files = append(files, extra)
	}
	argv := []string{cfg.Python, fmt.Sprintf("/proc/self/fd/%d", zipFD), "gorn: " + title}
	var p *os.Process
	_, err = cfg.Reaper.Start(owner, func() (int, error) {
		var err error
		p, err = os.StartProcess(cfg.Python, argv, &os.ProcAttr{
			Dir:   spec.Dir,
			Env:   environ,
			Files: files,
			// Go sets Pdeathsig after the credentials change, which would otherwise clear it.
			Sys: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: spec.Credential},
		})
		if err != nil {
			return 0, err
		}
		return p.Pid, nil
	})
	return p, err
}

// Attach wraps an already running worker (adopted after a binary upgrade), with a pidfd
// of its own when the kernel has pidfd_open (5.3); Release closes it.
func (s *Spawner) Attach(pid, slot int) master.Process {
	p := &Process{pid: pid, board: s.cfg.Board, slot: slot}
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		p.pidfd, p.hasPidfd = fd, true
	}
	return p
}

// Process is a running worker. Signals go through a pidfd where there is one (held by
// os.Process for a spawned worker, opened by Attach for an adopted one), so a recycled
// pid is never signalled by mistake.
type Process struct {
	pid      int
	proc     *os.Process // nil when adopted or released
	pidfd    int         // an adopted worker's, when hasPidfd
	hasPidfd bool
	board    *scoreboard.Board
	slot     int
	released bool
}

// Pid is the worker's process id.
func (p *Process) Pid() int { return p.pid }

// Signal sends sig to the worker.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.released {
		return os.ErrProcessDone
	}
	if p.proc != nil {
		return p.proc.Signal(sig)
	}
	if p.hasPidfd {
		return unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	}
	return unix.Kill(p.pid, sig)
}

// Kill sends SIGKILL to the worker's process group (its own children included).
func (p *Process) Kill() error {
	if p.released {
		return os.ErrProcessDone
	}
	err := unix.Kill(-p.pid, unix.SIGKILL)
	if err == unix.ESRCH {
		return p.Signal(unix.SIGKILL)
	}
	return err
}

// Release frees the handles on a reaped worker: os.Process holds a pidfd that would
// otherwise stay open until the garbage collector finalizes it. Its pid may be reused
// at once, so nothing is signalled after Release.
func (p *Process) Release() {
	p.released = true
	if p.proc != nil {
		_ = p.proc.Release()
		p.proc = nil
	}
	if p.hasPidfd {
		unix.Close(p.pidfd)
		p.hasPidfd = false
	}
}

// Status reads the worker's scoreboard slot.
func (p *Process) Status() scoreboard.Slot { return p.board.Read(p.slot) }
