package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/gornhq/gorn/config"
	"github.com/gornhq/gorn/worker"
)

// configFileTimeout bounds a config file's evaluation.
const configFileTimeout = 10 * time.Second

// configFileLoader is the config package's Loader: it evaluates config files in children
// started on thread and reaped by children, the process's one reaper.
func configFileLoader(children *worker.Reaper, thread *worker.Thread) config.Loader {
	return func(python, source string) (*config.FileSettings, error) {
		return loadConfigFile(children, thread, python, source)
	}
}

// loadConfigFile runs the config file in the given interpreter, as gunicorn executes it in
// its own; whatever the file prints goes to stderr. It blocks its caller (on HUP, the
// reload's own goroutine) until the evaluation ends or times out.
func loadConfigFile(children *worker.Reaper, thread *worker.Thread, python, source string) (*config.FileSettings, error) {
	fail := func(err error) (*config.FileSettings, error) {
		return nil, fmt.Errorf("evaluating config file %s with %s: %w", source, python, err)
	}
	path, err := exec.LookPath(python)
	if err != nil {
		return fail(err)
	}
	res, err := runChild(children, thread, childCmd{path: path, args: []string{python, "-c", worker.ConfigFileScript(), source},
		stderr: os.Stderr, timeout: configFileTimeout})
	if err != nil {
		return fail(err)
	}
	if !res.status.Exited() || res.status.ExitStatus() != 0 {
		return fail(fmt.Errorf("the evaluator ended with %s", exitStatus(res.status)))
	}
	var fs config.FileSettings
	if err := json.Unmarshal(res.output, &fs); err != nil {
		return nil, fmt.Errorf("evaluating config file %s: unexpected output %q", source, res.output)
	}
	if fs.Error != "" {
		return nil, fmt.Errorf("config file %s: %s", source, fs.Error)
	}
	return &fs, nil
}
