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

// TestWorkerFaults: a faulthandler dump read from a worker's pipe becomes one record per
// line naming the worker: JSON objects, or text lines with the worker's own prefix.
func TestWorkerFaults(t *testing.T) {
	dump := "Fatal Python error: Aborted\n\nCurrent thread 0x00007f (most recent call first):\n  File \"app.py\", line 7 in slow\n"
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		lf, err := Open("-", format, "info", &buf, os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { lf.WorkerFaults(r, 4242, 3); close(done) }()
		w.WriteString(dump[:20]) // faulthandler writes a line in pieces
		w.WriteString(dump[20:])
		w.Close()
		<-done
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(lines) != 3 {
			t.Fatalf("%s: %d records for 3 non-blank lines: %q", format, len(lines), buf.String())
		}
		for i, want := range []string{"Fatal Python error: Aborted", "Current thread 0x00007f (most recent call first):", `  File "app.py", line 7 in slow`} {
			if format == "json" {
				var rec map[string]any
				if err := json.Unmarshal([]byte(lines[i]), &rec); err != nil {
					t.Fatalf("record %q: %v", lines[i], err)
				}
				if rec["msg"] != want || rec["pid"] != 4242.0 || rec["slot"] != 3.0 || rec["logger"] != "worker.faulthandler" || rec["level"] != "error" {
					t.Errorf("record %v", rec)
				}
			} else if !strings.HasPrefix(lines[i], "[") || !strings.HasSuffix(lines[i], "] [4242] [ERROR] worker[3] faulthandler: "+want) {
				t.Errorf("text line %q", lines[i])
			}
		}
	}
}
