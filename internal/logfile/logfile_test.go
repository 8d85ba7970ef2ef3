package logfile

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zapcore"
)

// TestReopenAfterRotation: logrotate renames the file and sends USR1; the lines after the
// reopen go to a new file at the path, and workers started then inherit that one.
func TestReopenAfterRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "error.log")
	lf, err := Open(path, "json", "info", os.Stderr, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	lf.Logger.Info("before")
	before := lf.WorkerStderr()
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	lf.Reopen()
	lf.Logger.Info("after")
	if lf.WorkerStderr() == before {
		t.Error("workers would still inherit the rotated file")
	}
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !strings.Contains(string(old), `"before"`) || strings.Contains(string(old), `"after"`) {
		t.Errorf("rotated file: %q", old)
	}
	if !strings.Contains(string(cur), `"after"`) || !strings.Contains(string(cur), "log files reopened") {
		t.Errorf("new file: %q", cur)
	}
}

func TestFormatsAndLevels(t *testing.T) {
	var buf bytes.Buffer
	lf, err := Open("-", "json", "warning", &buf, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	lf.Logger.Info("hidden")
	lf.Logger.Warn("shown")
	var rec map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &rec); err != nil || rec["msg"] != "shown" {
		t.Errorf("json output %q: %v", buf.String(), err)
	}
	if lf.WorkerStderr() != os.Stderr {
		t.Error("without a file, workers inherit stderr")
	}
	buf.Reset()
	NewLogger("text", "debug", zapcore.AddSync(&buf)).Debug("plain")
	if !strings.Contains(buf.String(), "DEBUG plain") || !strings.HasPrefix(buf.String(), "[") {
		t.Errorf("text output %q", buf.String())
	}
}

func TestOpenFailsClearly(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "missing", "error.log"), "text", "info", os.Stderr, os.Stderr)
	if err == nil || !strings.HasPrefix(err.Error(), "opening log file: ") {
		t.Errorf("error %v", err)
	}
}
