package main

import (
	"fmt"
	"os"

	"go.uber.org/zap"

	"github.com/gornhq/gorn/internal/scoreboard"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/worker"
)

// checkConfig loads the app once in a worker that binds and serves nothing (gunicorn's
// --check-config): exit 0 if it imports, 4 if not.
func checkConfig(cfg *Config, logs *logFiles) int {
	log := logs.logger
	board, err := scoreboard.New(1)
	if err != nil {
		log.Error(err.Error())
		return master.ExitError
	}
	defer board.Close()
	settings := workerSettings(cfg)
	settings.Check = true
	sp, err := worker.NewSpawner(worker.Config{
		Python: cfg.Python, Dir: cfg.Chdir, Env: workerEnv(cfg), Board: board,
		Stdout: logs.stdout, Stderr: logs.workerStderr(),
		Settings: func() worker.Settings { return settings },
	})
	if err != nil {
		log.Error(err.Error())
		return master.ExitError
	}
	proc, err := sp.Spawn(master.SpawnRequest{Workers: 1})
	if err != nil {
		log.Error(err.Error())
		return master.ExitBootFailure
	}
	ws, err := proc.(*worker.Process).Wait()
	switch {
	case err != nil:
		log.Error(err.Error())
		return master.ExitError
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
