package main

import (
	"os"
	"path/filepath"
)

// ownVenv returns getenv with one difference: when VIRTUAL_ENV is unset and the gorn binary
// at exe lies in a virtual environment's bin directory (pip install gorn put it there), it
// reports that environment, so gorn runs the Python it was installed with, as if the
// environment were activated. A symlink to gorn counts where it points.
func ownVenv(getenv func(string) string, exe string) func(string) string {
	if exe == "" {
		return getenv
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	venv := filepath.Dir(filepath.Dir(exe))
	if _, err := os.Stat(filepath.Join(venv, "pyvenv.cfg")); err != nil {
		return getenv
	}
	return func(key string) string {
		v := getenv(key)
		if key == "VIRTUAL_ENV" && v == "" {
			return venv
		}
		return v
	}
}
