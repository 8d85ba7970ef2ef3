package main

import (
	"fmt"
	"os"
	"sync"

	"go.uber.org/zap"

	"github.com/gornhq/gorn/config"
	"github.com/gornhq/gorn/internal/hookhost"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/worker"
)

// serverHooks wires the config file's master-side hooks (gunicorn's on_starting,
// when_ready, pre_fork, child_exit, ...) to the hook host, which with --preload is also
// the mold the workers are forked from. Without a host (no --preload and the file defines
// no master-side hook) every method is a no-op and the master gets nil hooks.
type serverHooks struct {
	host    *hookhost.Host
	preload bool
	aborted bool // begin failed: the host is gone, close has nothing to do

	mu   sync.Mutex
	spec worker.Spec // the configuration the host is (re)started with
}

// startServerHooks starts the hook host when the config file defines a master-side hook
// or --preload is set (then it imports the app first, and the spawner forks the workers
// from it). It does not wait for it: the master sets itself up meanwhile, and begin
// waits before the first worker.
func startServerHooks(cfg *config.Config, spawner *worker.Spawner, log *zap.Logger) (*serverHooks, error) {
	sh := &serverHooks{spec: workerSpec(cfg), preload: cfg.Preload}
	if len(cfg.MasterHooks) == 0 && !cfg.Preload {
		return sh, nil
	}
	log = log.Named("hooks")
	host, err := hookhost.Start(hookhost.Config{
		Start: func(conn *os.File, owner chan<- master.Exit) (*os.Process, error) {
			sh.mu.Lock()
			spec := sh.spec
			sh.mu.Unlock()
			return spawner.StartHost(spec, conn, owner)
		},
		Timeout:     cfg.Timeout,
		LoadTimeout: cfg.BootTimeout,
		Log:         log,
	})
	if err != nil {
		return nil, fmt.Errorf("starting the hook host: %w", err)
	}
	sh.host = host
	return sh, nil
}

// begin waits, with --preload, until the mold has imported the app (then the spawner forks
// the workers from it), and runs on_starting, nworkers_changed(desired, None), and
// when_ready, which gunicorn's arbiter runs after binding and before its first worker.
// adopted are the workers a binary upgrade handed over.
func (sh *serverHooks) begin(cfg *config.Config, spawner *worker.Spawner, desired int, adopted []master.HookWorker, log *zap.Logger) error {
	host := sh.host
	if host == nil {
		return nil
	}
	log = log.Named("hooks")
	if cfg.Preload {
		if err := host.Ready(); err != nil {
			host.Abort()
			sh.aborted = true
			return fmt.Errorf("--preload: the mold could not import the app (see its error above): %w", err)
		}
		log.Info("mold ready: the app is imported once and the workers are forked from it", zap.Int("pid", host.Pid()), zap.Strings("hooks", cfg.MasterHooks))
		spawner.ForkFrom(func(req master.SpawnRequest, fault *os.File) (int, error) {
			return host.Fork(master.HookWorker{Slot: req.Slot, Generation: req.Generation, Age: req.Age}, req.Workers, fault)
		})
	} else {
		log.Info("hook host started: the config file's server hooks run there", zap.Int("pid", host.Pid()), zap.Strings("hooks", cfg.MasterHooks))
	}
	sh.call("on_starting", nil, log)
	host.WorkersChanged(desired, -1)
	if adopted != nil {
		host.Adopt(adopted, desired)
	}
	sh.call("when_ready", nil, log)
	return nil
}

func (sh *serverHooks) call(name string, fields map[string]any, log *zap.Logger) {
	if err := sh.host.Call(name, fields); err != nil {
		log.Debug("server hook", zap.String("hook", name), zap.Error(err))
	}
}

// wire adds the per-worker hooks to the master's.
func (sh *serverHooks) wire(h *master.Hooks) {
	if sh.host == nil {
		return
	}
	h.Spawned, h.ChildExit, h.WorkersChanged = sh.host.Spawned, sh.host.ChildExit, sh.host.WorkersChanged
	if !sh.preload {
		h.PreFork = sh.host.PreFork // the mold runs it itself, before forking
	}
}

// reloaded runs on_reload in the host with the re-read configuration (the host evaluates
// the config file again first, as gunicorn's reload does). With --preload it builds a new
// mold from the code as it is now instead, which runs on_reload; if the new code does not
// import, the reload fails and the old mold keeps forking. It runs in the reload's
// goroutine, before the master rolls the workers.
func (sh *serverHooks) reloaded(next *config.Config, log *zap.Logger) error {
	if sh.host == nil {
		return nil
	}
	spec := workerSpec(next)
	sh.mu.Lock()
	old := sh.spec
	sh.spec = spec
	sh.mu.Unlock()
	if !sh.preload {
		sh.call("on_reload", map[string]any{"settings": spec.Settings}, log)
		return nil
	}
	if err := sh.host.Replace("on_reload"); err != nil {
		sh.mu.Lock()
		sh.spec = old
		sh.mu.Unlock()
		return fmt.Errorf("reload failed: the new code does not import in a new mold (see its error above); the old mold keeps forking: %w", err)
	}
	log.Info("new mold ready: the workers are replaced from the new code", zap.Int("pid", sh.host.Pid()))
	return nil
}

// preExec runs pre_exec before a binary upgrade execs the new master.
func (sh *serverHooks) preExec(log *zap.Logger) {
	if sh.host != nil {
		sh.call("pre_exec", nil, log)
	}
}

// restarts counts hook host restarts, for gorn_hook_host_restarts_total; nil without one.
func (sh *serverHooks) restarts() func() uint64 {
	if sh.host == nil {
		return nil
	}
	return sh.host.Restarts
}

// processes are gorn's processes other than the workers, by role, for the memory metrics:
// the master and, when there is one, the hook host.
func (sh *serverHooks) processes() map[string]int {
	procs := map[string]int{"master": os.Getpid()}
	for _, pid := range sh.others() {
		role := "hooks"
		if sh.preload {
			role = "mold"
		}
		procs[role] = pid
	}
	return procs
}

// others are gorn's processes besides the master and the workers (the hook host), for
// the memory cap of the sizing.
func (sh *serverHooks) others() []int {
	if sh.host != nil {
		if pid := sh.host.Pid(); pid > 0 {
			return []int{pid}
		}
	}
	return nil
}

// close runs on_exit and ends the host.
func (sh *serverHooks) close() {
	if sh.host != nil && !sh.aborted {
		sh.host.Close()
	}
}
