package main

import (
	"fmt"
	"os"

	"go.uber.org/zap"

	"github.com/gornhq/gorn/config"
	"github.com/gornhq/gorn/internal/scoreboard"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/worker"
)

// checkConfig loads the app once in a worker that binds and serves nothing (gunicorn's
// --check-config): exit 0 if it imports, 4 if not.
func checkConfig(cfg *config.Config, logs *logFiles, thread *worker.Thread, children *worker.Reaper) int {
	log := logs.logger
	board, err := scoreboard.New(1)
	if err != nil {
		log.Error(err.Error())
		return master.ExitError
	}
	defer board.Close()
	spec := workerSpec(cfg)
	spec.Settings.Check = true
	exited := make(chan master.Exit, 1)
	sp, err := worker.NewSpawner(worker.Config{
		Python: cfg.Python, Board: board, Stdout: logs.stdout, Stderr: logs.workerStderr(),
		Spec:   func() worker.Spec { return spec },
		Thread: thread, Reaper: children, Exits: exited,
	})
	if err != nil {
		log.Error(err.Error())
		return master.ExitError
	}
	proc, err := sp.Spawn(master.SpawnRequest{Workers: 1})()
	if err != nil {
		log.Error(err.Error())
		return master.ExitBootFailure
	}
	ws := (<-exited).Status
	proc.Release()
	switch {
	case ws.Exited() && ws.ExitStatus() == 0:
		fmt.Fprintf(os.Stdout, "%s: the application loads\n", cfg.App)
		return master.ExitOK
	case ws.Exited() && ws.ExitStatus() == master.ExitAppLoad:
		log.Error("the application failed to load", zap.String("app", cfg.App))
		return master.ExitAppLoad
	default:
		log.Error("the worker failed", zap.String("status", fmt.Sprint(ws)))
		return master.ExitBootFailure
	}
}
