package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/loadgen"
	"github.com/gornhq/gorn/internal/testenv"
)

// leakyApp grows a list by 64 KiB of written bytes on every request to /leak: unique
// memory of the worker that served it, which only its exit frees.
const leakyApp = `import os, time
LEAK = []
def application(environ, start_response):
    if environ["PATH_INFO"] == "/leak":
        LEAK.append(b"x" * (64 << 10))
        time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d %d" % (os.getpid(), len(LEAK))]
`

// TestMaxWorkerMemoryUnderLoad: workers that leak are replaced once their USS passes
// --max-worker-memory, each after its request with its replacement ready first: no
// request fails, and the exits are counted with reason "memory".
func TestMaxWorkerMemoryUnderLoad(t *testing.T) {
	testenv.Short(t, "runs load for several seconds")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "leaky.py"), []byte(leakyApp), 0o644); err != nil {
		t.Fatal(err)
	}
	g := startGorn(t, gornOpts{dir: dir}, "-w", "2", "--max-worker-memory", "32M", "--metrics-bind", "127.0.0.1:0", "leaky")
	maddr := g.metricsAddr()
	l := loadgen.Start(g.addr, 4, "/leak", "/")
	deadline := time.Now().Add(60 * time.Second)
	for g.logs.count(`"reason":"memory"`) < 3 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	fails := l.Finish()
	t.Logf("load: %s; replaced for memory: %d", l, g.logs.count(`"reason":"memory"`))
	if len(fails) > 0 {
		t.Errorf("%d failed requests:\n%s", len(fails), strings.Join(fails, "\n"))
	}
	if n := g.logs.count(`"reason":"memory"`); n < 3 {
		t.Fatalf("%d workers replaced for memory in 60 s of leaking, want 3", n)
	}
	if g.logs.count("past --max-worker-memory") < 3 {
		t.Error("the replacements are not logged with the limit")
	}
	m := scrape(t, maddr)
	if got := m[`gorn_worker_exits_total{reason="memory"}`]; got < 3 {
		t.Errorf(`gorn_worker_exits_total{reason="memory"} = %v, want >= 3`, got)
	}
	// The leak is bounded: a live worker is at most a second of leaking past the limit.
	for slot := 0; slot < 2; slot++ {
		if uss := m[`gorn_worker_uss_bytes{slot="`+string(rune('0'+slot))+`"}`]; uss > 128<<20 {
			t.Errorf("slot %d: USS %.0f MiB, far past the 32 MiB limit", slot, uss/(1<<20))
		}
	}
}

// TestLimitsMeasuresARunningGorn: `gorn limits --pid` reads the workers of a running master
// (here forked from a --preload mold) and reports both numbers: what one more worker costs
// (USS) and what each holds (PSS), and what they share with the mold.
func TestLimitsMeasuresARunningGorn(t *testing.T) {
	g := startGorn(t, gornOpts{}, "--preload", "-w", "2", "app:app")
	out, err := exec.Command(gornBin, "limits", "--json", "--pid", strconv.Itoa(g.cmd.Process.Pid)).CombinedOutput()
	if err != nil {
		t.Fatalf("gorn limits --pid: %v\n%s", err, out)
	}
	var r struct {
		Memory struct {
			WorkerUSS int64  `json:"worker_uss_bytes"`
			WorkerPSS *int64 `json:"worker_pss_bytes"`
			Shared    *int64 `json:"shared_bytes"`
			Source    string `json:"worker_source"`
		} `json:"memory"`
		MasterRSS *int64 `json:"master_rss_bytes"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	m := r.Memory
	if m.Source != "measured" || m.WorkerPSS == nil || m.Shared == nil || m.WorkerUSS <= 0 || m.WorkerUSS >= *m.WorkerPSS || *m.Shared <= 0 {
		t.Errorf("want measured, 0 < USS < PSS, shared > 0; got %s", out)
	}
	if r.MasterRSS == nil || *r.MasterRSS <= 0 {
		t.Errorf("the master's RSS is not the running master's: %s", out)
	}
}
