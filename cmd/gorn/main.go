// Command gorn serves a Python WSGI application with supervised pre-forked workers: a
// drop-in replacement for gunicorn whose master is a Go binary. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/config"
	"github.com/gornhq/gorn/internal/cgroup"
	"github.com/gornhq/gorn/internal/hookhost"
	"github.com/gornhq/gorn/internal/logfile"
	"github.com/gornhq/gorn/internal/scoreboard"
	"github.com/gornhq/gorn/internal/sizing"
	"github.com/gornhq/gorn/internal/upgrade"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/socket"
	"github.com/gornhq/gorn/worker"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0"

// The main goroutine stays on the main thread, which serves the worker.Thread that forks
// every child and execs upgrades: the one thread that survives execve.
func init() { runtime.LockOSThread() }

func main() {
	th := worker.NewThread()
	go func() { os.Exit(supervise(th)) }()
	th.Serve()
}

// supervise is run, guarded by the way back to the previous binary when this process
// was started by a binary upgrade (see internal/upgrade).
func supervise(th *worker.Thread) int {
	guard, err := upgrade.Arm(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gorn: error: %v; serving on without a way back\n", err)
	}
	exe, _ := os.Executable()
	getenv := ownVenv(os.Getenv, exe)
	if guard == nil {
		return run(os.Args[1:], getenv, os.Stdout, os.Stderr, host{thread: th})
	}
	stops := make(chan os.Signal, 8)
	signal.Notify(stops, upgrade.StopSignals()...)
	code, reason := upgrade.Watch(upgrade.ReadyTimeout, func(serving func(), failed func(error)) int {
		return run(os.Args[1:], getenv, os.Stdout, os.Stderr, host{thread: th, serving: serving, failed: failed})
	}, func() {
		// The master loop runs with its own channel for signals; one caught before that
		// channel existed is raised again (a stop signal twice is a stop signal).
		signal.Stop(stops)
		for len(stops) > 0 {
			_ = syscall.Kill(os.Getpid(), (<-stops).(syscall.Signal))
		}
		guard.Release()
	})
	if reason == "" {
		return code
	}
	why := upgrade.RolledBack{Reason: reason}
	for len(stops) > 0 {
		why.Stops = append(why.Stops, (<-stops).(syscall.Signal))
	}
	fmt.Fprintf(os.Stderr, "gorn: binary upgrade failed (%s); restoring the previous binary\n", reason)
	th.Do(func() { err = guard.Rollback(why) })
	fmt.Fprintf(os.Stderr, "gorn: error: %v\n", err)
	return master.ExitError
}

// host is what run gets from the process around it.
type host struct {
	thread *worker.Thread // the main thread; nil: a thread of its own
	// serving is called once the master loop runs (the binary upgrade's "ready").
	serving func()
	// failed is told why serving ended in an error.
	failed func(error)
	// statsd is the master's StatsD client (--statsd-host).
	statsd *statsdSink
}

// run is gorn without os.Exit: it returns the process exit code.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer, h host) int {
	if len(args) > 0 && args[0] == "limits" {
		return runLimits(args[1:], getenv, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "bench" {
		return runBench(args[1:], stdout, stderr)
	}
	if want := getenv(upgrade.EnvFormats); want != "" {
		// An upgrade's pre-flight: refuse what this binary would misread.
		if err := upgrade.CheckFormats(want); err != nil {
			fmt.Fprintf(stderr, "gorn: error: %v\n", err)
			return master.ExitError
		}
	}
	if h.thread == nil {
		h.thread = worker.StartThread()
	}
	// Children's exits not routed to an owner (orphans) go to the master loop.
	orphans := make(chan master.Exit, 64)
	children := worker.NewReaper(orphans)
	loader := configFileLoader(children, h.thread)
	reparse := func() (*config.Config, error) {
		cfg, err := config.Parse(args, getenv, loader)
		if err == nil && !cfg.Help && !cfg.Version {
			err = resolvePython(cfg)
		}
		return cfg, err
	}
	cfg, err := reparse()
	if err != nil {
		var ue *config.UsageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "gorn: error: %s (see gorn --help)\n", ue.Msg)
			return master.ExitUsage
		}
		fmt.Fprintf(stderr, "gorn: error: %v\n", err)
		return master.ExitError
	}
	if cfg.Help {
		config.Usage(stdout)
		return master.ExitOK
	}
	if cfg.Version {
		fmt.Fprintf(stdout, "gorn %s\n", version)
		return master.ExitOK
	}
	if cfg.PrintConfig {
		config.Print(stdout, cfg)
		return master.ExitOK
	}
	logs, err := logfile.Open(cfg.ErrorLog, cfg.LogFormat, cfg.LogLevel, stderr, os.Stderr)
	if err != nil {
		fmt.Fprintf(stderr, "gorn: error: %v\n", err)
		return master.ExitError
	}
	defer logs.Close()
	h.statsd = newStatsdSink(cfg, logs)
	defer h.statsd.Close()
	log := logs.Logger
	if cfg.ConfigFile != "" {
		log.Info("read the config file", zap.String("config_file", cfg.ConfigFile))
	}
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if cfg.CheckConfig {
		return checkConfig(cfg, logs, h.thread, children)
	}
	code, err := serve(cfg, reparse, logs, getenv, h, children, orphans)
	if err != nil {
		log.Error(err.Error())
		if h.failed != nil {
			h.failed(err)
		}
	}
	return code
}

// serve binds, starts the master loop and returns its exit code.
func serve(cfg *config.Config, reparse func() (*config.Config, error), logs *logfile.Files, getenv func(string) string, h host, children *worker.Reaper, exits chan master.Exit) (int, error) {
	log := logs.Logger
	if os.Getpid() != 1 {
		// Orphaned grandchildren of workers are re-parented to us and reaped by Reap.
		_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	}
	exe, err := os.Executable()
	if err != nil {
		return master.ExitError, fmt.Errorf("finding the gorn binary: %w", err)
	}
	in, err := adoptUpgrade(getenv)
	if err != nil {
		return master.ExitError, err
	}
	var (
		listeners []*socket.Listener
		board     *scoreboard.Board
	)
	if in != nil {
		listeners, board = in.listeners, in.board
		if err := upgradeFault(); err != nil {
			return master.ExitError, err
		}
		if len(in.gone) > 0 {
			log.Warn("binary upgrade: handed-over workers are gone (exited during the hand-over)", zap.Ints("pids", in.gone))
		}
		if in.rolledBack != "" {
			log.Error("binary upgrade rolled back: the previous binary serves on with its workers", zap.String("reason", in.rolledBack), zap.Int("workers", len(in.handover.Workers)))
		} else {
			log.Info("binary upgrade: adopted the previous master's sockets and workers", zap.Int("workers", len(in.handover.Workers)))
		}
	} else {
		if listeners, err = bindAll(cfg, getenv); err != nil {
			return master.ExitError, err
		}
		if board, err = scoreboard.New(scoreboard.MaxSlots); err != nil {
			return master.ExitError, err
		}
	}
	defer board.Close()
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for _, l := range listeners {
		log.Info("listening", zap.String("address", l.String()))
	}
	if cfg.PidFile != "" {
		if err := writePidFile(cfg.PidFile); err != nil {
			return master.ExitError, err
		}
		defer os.Remove(cfg.PidFile)
	}

	var limitsInfo sizingInfo
	sizer := sizing.NewSizer(sizingSettings(cfg), sizing.SystemProbes(cgroup.Options{}), log, limitsInfo.decided)
	desired, why := sizer.Initial()
	log.Info(why, zap.Int("workers", desired))

	files := make([]*os.File, len(listeners))
	for i, l := range listeners {
		files[i] = l.File()
	}
	reload := newReloader(cfg, reparse, sizer, log.Named("reload"))
	reload.statsd = h.statsd
	wcfg := worker.Config{
		Python:    cfg.Python,
		Listeners: files,
		Board:     board,
		Stdout:    os.Stdout,
		Stderr:    logs.WorkerStderr(),
		Spec:      reload.current,
		Faults:    logs.WorkerFaults,
		Thread:    h.thread,
		Reaper:    children,
		Exits:     exits,
	}
	if in != nil {
		wcfg.Lifeline = &in.lifeline
	}
	spawner, err := worker.NewSpawner(wcfg)
	if err != nil {
		return master.ExitError, err
	}
	if in != nil {
		for _, w := range in.handover.Workers {
			if w.FaultFD > 0 {
				if err := spawner.AdoptFaults(w.FaultFD, w.Pid, w.Slot); err != nil {
					log.Warn("binary upgrade: a worker's stack dumps will not be logged", zap.Error(err))
				}
			}
		}
	}
	var adopted []master.HookWorker
	initial := desired
	if in != nil {
		initial = in.handover.Desired
		adopted = []master.HookWorker{}
		for _, w := range in.handover.Workers {
			adopted = append(adopted, master.HookWorker{Pid: w.Pid, Slot: w.Slot, Generation: w.Generation, Age: w.Age, MaxRequests: w.MaxRequests})
		}
	}
	serverHooks, err := startServerHooks(cfg, spawner, log)
	if err != nil {
		return master.ExitError, err
	}
	// After the master loop: on_exit runs once every worker is gone, as gunicorn's halt.
	defer serverHooks.close()
	sizer.SetOthers(serverHooks.others)
	reload.reread = func(next *config.Config) error { return serverHooks.reloaded(next, log.Named("hooks")) }

	signals := make(chan os.Signal, 16)
	if in != nil {
		for _, sig := range in.stops {
			log.Warn("acting on a signal the failed binary received", zap.String("signal", sig.String()))
			signals <- sig
		}
	}
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()

	mcfg := master.Config{
		Workers:           desired,
		Timeout:           cfg.Timeout,
		BootTimeout:       cfg.BootTimeout,
		GracefulTimeout:   cfg.GracefulTimeout,
		ShutdownDelay:     cfg.ShutdownDelay,
		MaxRequests:       cfg.MaxRequests,
		MaxRequestsJitter: cfg.MaxRequestsJitter,
		MaxWorkerMemory:   cfg.MaxWorkerMemory,
		Slots:             board.Slots(),
	}
	up := &upgrader{path: exe, args: os.Args, spawner: spawner, children: children, listeners: listeners, board: board}
	hooks := master.Hooks{
		Reload:        reload.reload,
		Resize:        sizer.Resize,
		ReopenLogs:    logs.Reopen,
		OOMKills:      sizer.OOMKills,
		MemoryCeiling: sizer.MemoryCeiling,
		Preflight: func() error {
			err := up.preflight()
			if err == nil {
				serverHooks.preExec(log.Named("hooks"))
			}
			return err
		},
		Upgrade: up.upgrade,
		Ready: func() {
			if err := sdNotify(getenv, "READY=1"); err != nil {
				log.Warn("notifying systemd", zap.Error(err))
			}
		},
	}
	serverHooks.wire(&hooks)
	if cfg.Workers == 0 {
		mcfg.ResizeInterval = cfg.ResizeInterval
	}
	// The workers' clock: heartbeats and busy times compare with it directly.
	clock := func() time.Duration { return time.Duration(scoreboard.Now()) }
	m := master.New(mcfg, spawner, hooks, log.Named("master"), clock, rand.IntN)
	if in != nil {
		m.Adopt(in.handover, spawner.Attach, in.rolledBack == "")
	}
	if cfg.MetricsBind != "" {
		stop, err := serveMetrics(cfg, m, listeners, limitsInfo.info, serverHooks.restarts(), serverHooks.processes, log)
		if err != nil {
			return master.ExitError, err
		}
		defer stop()
	}
	h.thread.Do(func() {
		if err := setProcName(procName); err != nil {
			log.Debug("naming the process", zap.Error(err))
		}
	})
	if h.statsd != nil {
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		var backlog []*socket.Listener
		if cfg.BacklogMetric {
			backlog = listeners
		}
		go h.statsd.reportWorkers(ctx, m, backlog)
	}
	// The hook host (the mold, importing the app) started before the set-up above: it is
	// waited for only now, before the first worker. Until then a stop signal ends gorn
	// at once, as before the app is imported without --preload.
	err = serverHooks.begin(cfg, spawner, initial, adopted, log)
	if ee := (*hookhost.ExitError)(nil); errors.As(err, &ee) && ee.Status.Exited() && ee.Status.ExitStatus() == master.ExitAppLoad {
		return master.ExitAppLoad, err
	}
	if err != nil {
		return master.ExitError, err
	}
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	if h.serving != nil {
		go func() {
			// The loop answers its first query once it runs.
			if _, err := m.Snapshot(context.Background()); err == nil {
				h.serving()
			}
		}()
	}
	memory := make(chan master.MemorySample, 1)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	go watchMemory(watchCtx, m, "", memorySampleInterval, memory)
	return m.Run(master.Inputs{Signals: signals, Exits: exits, Ticks: ticker.C, Ready: spawner.Readies(), Memory: memory}), nil
}

// bindAll binds every address, or adopts systemd's sockets (then other binds are ignored,
// as gunicorn does).
func bindAll(cfg *config.Config, getenv func(string) string) ([]*socket.Listener, error) {
	ls, err := socket.FromSystemd(getenv, os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("adopting systemd sockets: %w", err)
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
	if len(ls) > 0 {
		return ls, nil
	}
	addrs := make([]socket.Address, len(cfg.Binds))
	for i, b := range cfg.Binds {
		if addrs[i], err = socket.ParseAddress(b); err != nil {
			return nil, err
		}
	}
	return socket.Bind(addrs, socket.Options{Backlog: cfg.Backlog, ReusePort: cfg.ReusePort})
}

// workerSpec is how the configuration starts workers.
func workerSpec(cfg *config.Config) worker.Spec {
	return worker.Spec{Dir: cfg.Chdir, Env: workerEnv(cfg), Credential: cfg.Credential, Settings: config.WorkerSettings(cfg, "gorn/"+version)}
}

// workerEnv is the master's environment plus -e pairs, minus gorn's own plumbing.
func workerEnv(cfg *config.Config) []string {
	var env []string
	for _, kv := range upgrade.CleanEnv(os.Environ()) {
		if !strings.HasPrefix(kv, "GORN_WORKER=") {
			env = append(env, kv)
		}
	}
	return append(env, cfg.Env...)
}

// writePidFile writes the pid atomically: a temporary file renamed into place.
func writePidFile(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".gorn-pid-*")
	if err != nil {
		return fmt.Errorf("writing pid file: %w", err)
	}
	_, err = fmt.Fprintf(tmp, "%d\n", os.Getpid())
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing pid file %s: %w", path, err)
	}
	return nil
}
