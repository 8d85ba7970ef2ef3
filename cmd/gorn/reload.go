package main

import (
	"fmt"
	"os/exec"

	"go.uber.org/zap"

	"github.com/gornhq/gorn/config"
	"github.com/gornhq/gorn/internal/sizing"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/worker"
)

// reloader re-reads the configuration on HUP (command line, environment and config file,
// as gunicorn does) and applies it: the next generation of workers starts with the new
// worker settings, and the master's policy takes the new timeouts, recycling and worker
// count. The configuration is evaluated off the loop (reload); everything that changes the
// reloader's state runs on the loop (apply, current), so it needs no lock.
type reloader struct {
	applied *config.Config
	reparse func() (*config.Config, error)
	spec    worker.Spec
	sizer   *sizing.Sizer
	log     *zap.Logger
	// reread, if set, is told the evaluated configuration in the reload's goroutine, before
	// the loop applies it (the hook host runs on_reload).
	reread func(*config.Config) error
	statsd *statsdSink // nil in tests
}

func newReloader(cfg *config.Config, reparse func() (*config.Config, error), s *sizing.Sizer, log *zap.Logger) *reloader {
	return &reloader{applied: cfg, reparse: reparse, spec: workerSpec(cfg), sizer: s, log: log}
}

// current is the spawner's view of the configuration.
func (r *reloader) current() worker.Spec { return r.spec }

// reload is the master's Reload hook: it evaluates the configuration (the config file runs
// in a Python child) in the hook's goroutine and returns the step that applies it.
func (r *reloader) reload(mc master.Config) (func() master.Config, error) {
	next, err := r.reparse()
	if err != nil {
		return nil, fmt.Errorf("re-reading the configuration: %w", err)
	}
	if r.reread != nil {
		if err := r.reread(next); err != nil {
			return nil, err
		}
	}
	// A changed StatsD address gets its client here, off the loop (dialling may resolve a
	// host name). r.applied is only read: no apply runs while a reload does.
	var sd func()
	if r.statsd != nil && statsdChanged(r.applied, next) {
		c := r.statsd.dial(next)
		sd = func() { r.statsd.swap(c) }
	}
	return func() master.Config {
		if sd != nil {
			sd()
		}
		return r.apply(mc, next)
	}, nil
}

// apply takes the evaluated configuration next; it runs on the master loop.
func (r *reloader) apply(mc master.Config, next *config.Config) master.Config {
	for _, w := range next.Warnings {
		r.log.Warn(w)
	}
	for _, ch := range config.StartOnlyChanges(r.applied, next) {
		r.log.Warn("a setting changed that applies only at start; restart or send USR2 to apply it",
			zap.String("setting", ch.Setting), zap.String("running", ch.Running), zap.String("configured", ch.Configured))
	}
	mc.Timeout, mc.BootTimeout, mc.GracefulTimeout = next.Timeout, next.BootTimeout, next.GracefulTimeout
	mc.ShutdownDelay, mc.MaxRequests, mc.MaxRequestsJitter = next.ShutdownDelay, next.MaxRequests, next.MaxRequestsJitter
	mc.MaxWorkerMemory = next.MaxWorkerMemory
	mc.ResizeInterval = 0
	switch {
	case next.Workers > 0:
		mc.Workers = next.Workers
	case r.applied.Workers > 0:
		r.log.Info("the worker count is now sized from the limits", zap.Duration("resize_interval", next.ResizeInterval))
		fallthrough
	default:
		mc.ResizeInterval = next.ResizeInterval
	}
	// Sizing inputs (--cpus, --max-workers, -w) take effect at the next resize.
	next.Python = r.applied.Python // resolved at start; a changed one was warned about above
	r.sizer.SetSettings(sizingSettings(next))
	r.applied, r.spec = next, workerSpec(next)
	r.log.Info("configuration re-read", zap.String("config_file", next.ConfigFile), zap.String("app", next.App))
	return mc
}

// resolvePython finds the interpreter on $PATH, as exec would.
func resolvePython(cfg *config.Config) error {
	py, err := exec.LookPath(cfg.Python)
	if err != nil {
		return fmt.Errorf("no Python interpreter %q: set --python or VIRTUAL_ENV: %w", cfg.Python, err)
	}
	cfg.Python = py
	return nil
}
