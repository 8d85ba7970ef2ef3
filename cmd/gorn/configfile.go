package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/gornhq/gorn/config"
	"github.com/gornhq/gorn/worker"
)

// configFileTimeout bounds a config file's evaluation: on HUP the master loop waits for it.
const configFileTimeout = 10 * time.Second

// loadConfigFile runs the config file in the given interpreter, as gunicorn executes it in
// its own; whatever the file prints goes to stderr. It is the config package's Loader.
func loadConfigFile(python, source string) (*config.FileSettings, error) {
	ctx, cancel := context.WithTimeout(context.Background(), configFileTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-c", worker.ConfigFileScript(), source)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("still running after %s", configFileTimeout)
	} else if errors.Is(err, syscall.ECHILD) {
		// On HUP the master's reaper (wait4(-1)) may collect the exit status first; the
		// output, read to its end regardless, says whether the evaluation succeeded.
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("evaluating config file %s with %s: %w", source, python, err)
	}
	var fs config.FileSettings
	if err := json.Unmarshal(out.Bytes(), &fs); err != nil {
		return nil, fmt.Errorf("evaluating config file %s: unexpected output %q", source, out.String())
	}
	if fs.Error != "" {
		return nil, fmt.Errorf("config file %s: %s", source, fs.Error)
	}
	return &fs, nil
}
