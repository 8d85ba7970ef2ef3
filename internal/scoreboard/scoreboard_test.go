package scoreboard

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/testenv"
)

// TestPythonWriterGoReader checks the contract from both ends: the real Python scoreboard
// writer (gorn_worker/scoreboard.py) fills a slot, and Go reads every word where
// worker/CONTRACT.md says it is.
func TestPythonWriterGoReader(t *testing.T) {
	py := testenv.Python(t)
	b, err := New(4)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, file, _, _ := runtime.Caller(0)
	pkg := filepath.Join(filepath.Dir(file), "..", "..", "worker", "pyworker")
	script := `
import os
from gorn_worker.scoreboard import Scoreboard, STATE_READY
sb = Scoreboard(3, 2)
sb.boot(7, os.getpid())
sb.set_state(STATE_READY)
sb.request_start("POST", "/items")
sb.request_end("POST", 201, 3_000_000, 42)      # 3 ms -> bucket le=0.005
sb.request_end("GET", 404, 2_000_000_000, 10)   # 2 s  -> bucket le=2.5
sb.request_start("DELETE", "/hung/" + "x" * 300)
print(os.getpid())
`
	cmd := exec.Command(py, "-c", script)
	cmd.Dir = pkg
	cmd.ExtraFiles = []*os.File{b.File()}
	before := Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	s := b.Read(2)
	if s.Generation != 7 || s.State != StateReady || s.Requests != 2 || s.PID == 0 {
		t.Errorf("header: %+v", s)
	}
	if s.Heartbeat < before || s.BusySince < before || time.Duration(Now()-s.BusySince) > time.Minute {
		t.Errorf("times not CLOCK_MONOTONIC ns: heartbeat %d busy %d now %d", s.Heartbeat, s.BusySince, Now())
	}
	if s.Counters[2][1] != 1 || s.Counters[0][3] != 1 {
		t.Errorf("counters: POST 2xx=%d GET 4xx=%d", s.Counters[2][1], s.Counters[0][3])
	}
	if s.Histogram[2] != 1 || s.Histogram[10] != 1 || s.DurationSum != 2_003_000 || s.BytesSent != 52 {
		t.Errorf("histogram %v sum %d bytes %d", s.Histogram, s.DurationSum, s.BytesSent)
	}
	if len(s.Desc) != DescBytes || s.Desc[:12] != "DELETE /hung" {
		t.Errorf("desc %q (len %d)", s.Desc, len(s.Desc))
	}
	if other := b.Read(1); other.PID != 0 || other.Requests != 0 {
		t.Errorf("a neighbouring slot was written: %+v", other)
	}
	b.Reset(2)
	if s := b.Read(2); s.PID != 0 || s.Requests != 0 || s.Desc != "" {
		t.Errorf("after Reset: %+v", s)
	}
}
