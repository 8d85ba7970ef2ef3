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
// when_ready, pre_fork, child_exit, ...) to the hook host. Without a host (the file
// defines none) every method is a no-op and the master gets nil hooks.
type serverHooks struct {
	host *hookhost.Host

	mu   sync.Mutex
	spec worker.Spec // the configuration the host is (re)started with
}

// startServerHooks starts the hook host when the config file defines a master-side hook,
// and runs on_starting, nworkers_changed(desired, None), and when_ready, which gunicorn's
// arbiter runs after binding and before its first worker. adopted are the workers a
// binary upgrade handed over.
func startServerHooks(cfg *config.Config, spawner *worker.Spawner, desired int, adopted []master.HookWorker, log *zap.Logger) (*serverHooks, error) {
	sh := &serverHooks{spec: workerSpec(cfg)}
	if len(cfg.MasterHooks) == 0 {
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
		Timeout: cfg.Timeout,
		Log:     log,
	})
	if err != nil {
		return nil, fmt.Errorf("starting the hook host for %s: %w", cfg.ConfigFile, err)
	}
	sh.host = host
	log.Info("hook host started: the config file's server hooks run there", zap.Int("pid", host.Pid()), zap.Strings("hooks", cfg.MasterHooks))
	sh.call("on_starting", nil, log)
	host.WorkersChanged(desired, -1)
	if adopted != nil {
		host.Adopt(adopted, desired)
	}
	sh.call("when_ready", nil, log)
	return sh, nil
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
	h.PreFork, h.Spawned, h.ChildExit, h.WorkersChanged = sh.host.PreFork, sh.host.Spawned, sh.host.ChildExit, sh.host.WorkersChanged
}

// reloaded runs on_reload in the host with the re-read configuration (the host evaluates
// the config file again first, as gunicorn's reload does). It runs in the reload's
// goroutine, before the master rolls the workers.
func (sh *serverHooks) reloaded(next *config.Config, log *zap.Logger) {
	if sh.host == nil {
		return
	}
	spec := workerSpec(next)
	sh.mu.Lock()
	sh.spec = spec
	sh.mu.Unlock()
	sh.call("on_reload", map[string]any{"settings": spec.Settings}, log)
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
		procs["hooks"] = pid
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
	if sh.host != nil {
		sh.host.Close()
	}
}
