package config

import "github.com/gornhq/gorn/worker"

// WorkerSettings is the configuration's part of the workers' settings ($GORN_WORKER):
// every option with a worker key, plus the app and the Server header. The spawner adds
// what differs per worker (slot, generation, fds).
func WorkerSettings(c *Config, serverSoftware string) worker.Settings {
	opts := map[string]any{"app": c.App, "server_software": serverSoftware}
	for _, o := range Options() {
		if o.Worker != "" {
			opts[o.Worker] = o.workerValue(c)
		}
	}
	return worker.Settings{Options: opts}
}
