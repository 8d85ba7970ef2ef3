package test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/cgroup"
	"github.com/gornhq/gorn/internal/testenv"
)

// benchReport is the part of `gorn bench --json` the tests read.
type benchReport struct {
	Isolation string `json:"isolation"`
	Runs      []struct {
		Class          string  `json:"class"`
		Workers        int     `json:"workers"`
		Layout         string  `json:"layout"`
		Pods           int     `json:"pods"`
		Requests       int64   `json:"requests"`
		Errors         int64   `json:"errors"`
		RPS            float64 `json:"rps"`
		P50            float64 `json:"p50_ms"`
		P90            float64 `json:"p90_ms"`
		P99            float64 `json:"p99_ms"`
		Max            float64 `json:"max_ms"`
		CPULimit       float64 `json:"cpu_limit"`
		CPUUsed        float64 `json:"cpu_used"`
		Periods        int64   `json:"nr_periods"`
		PSSBytes       int64   `json:"pss_bytes"`
		GeneratorBound bool    `json:"generator_bound"`
		OtherCPU       float64 `json:"other_cpu"`
	} `json:"runs"`
	GornPicks []struct {
		Workers int `json:"workers"`
	} `json:"gorn_picks"`
	Recommendation struct {
		Index  int    `json:"index"`
		Reason string `json:"reason"`
	} `json:"recommendation"`
}

// needCgroups ends a test that creates cgroups unless it can (root, a writable cpu
// hierarchy): a skip, or a failure under GORN_TEST_STRICT=1.
func needCgroups(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "not root"
	} else if c := cgroup.Detect(cgroup.Options{}).CPU; c.Mount == "" {
		why = "no visible cpu cgroup hierarchy"
	} else if err := syscall.Access(c.Mount, 2); err != nil {
		why = "the cpu cgroup hierarchy is not writable"
	}
	if why != "" {
		testenv.Missing(t, "gorn bench needs cgroups: %s", why)
	}
}

// benchGroups lists the cgroups gorn bench made that exist now.
func benchGroups() []string {
	c := cgroup.Detect(cgroup.Options{}).CPU
	if c.Mount == "" {
		return nil
	}
	g, _ := filepath.Glob(filepath.Join(c.Mount, "gorn-bench-run-*"))
	return g
}

// runBench runs `gorn bench` in examples/flask and returns stdout; it fails the test on a
// non-zero exit.
func runBench(t *testing.T, args ...string) string {
	t.Helper()
	before := benchGroups()
	cmd := exec.Command(gornBin, append([]string{"bench", "--python", python(t)}, args...)...)
	cmd.Dir = filepath.Join(repoRoot, "examples", "flask")
	cmd.Env = cleanEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("gorn bench %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, out.String(), errb.String())
	}
	if errb.Len() > 0 {
		t.Errorf("stderr is not a terminal, yet it got output:\n%s", errb.String())
	}
	checkNoLeftovers(t, before)
	return out.String()
}

func checkNoLeftovers(t *testing.T, before []string) {
	t.Helper()
	for _, g := range benchGroups() {
		if !slices.Contains(before, g) {
			t.Errorf("gorn bench left the cgroup %s behind", g)
		}
	}
}

func parseReport(t *testing.T, out string) benchReport {
	t.Helper()
	var r benchReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("parsing the JSON report: %v\n%s", err, out)
	}
	return r
}

// TestBenchSweepFindsThePlateau: the example's /work route (1 ms of CPU, 8 ms of waiting)
// under a 1-CPU cgroup: one sync worker idles the CPU while it waits, three serve about
// three times as much (the README's table), and gorn's pick is 3. Mostly waiting, the
// route keeps the ratio clear even when other tests share the machine's two CPUs. Each request
// comes on a new connection: a sync worker serves a kept-alive connection's requests
// itself, so with keep-alive the spread of connections over workers would add noise.
func TestBenchSweepFindsThePlateau(t *testing.T) {
	needCgroups(t)
	out := runBench(t, "--isolation", "cgroup", "--cpus", "1", "--workers", "1,3", "--duration", "1500ms", "--warmup", "300ms",
		"--no-keepalive", "--url", "/work?cpu_ms=1&io_ms=8", "--json", "app:app")
	r := parseReport(t, out)
	if !strings.HasPrefix(r.Isolation, "cgroup v") || len(r.Runs) != 2 || len(r.GornPicks) != 1 || r.GornPicks[0].Workers != 3 {
		t.Fatalf("report: %s", out)
	}
	for _, run := range r.Runs {
		switch {
		case run.Requests < 20 || run.Errors != 0:
			t.Errorf("%d workers: %d requests, %d errors", run.Workers, run.Requests, run.Errors)
		case !(0 < run.P50 && run.P50 <= run.P90 && run.P90 <= run.P99 && run.P99 <= run.Max):
			t.Errorf("%d workers: percentiles out of order: %v %v %v %v", run.Workers, run.P50, run.P90, run.P99, run.Max)
		case run.CPULimit != 1 || run.CPUUsed <= 0 || run.CPUUsed > 1.15:
			t.Errorf("%d workers: used %.2f of a %.2f CPU limit", run.Workers, run.CPUUsed, run.CPULimit)
		case run.Periods <= 0:
			t.Errorf("%d workers: no CFS periods counted", run.Workers)
		case run.PSSBytes < int64(run.Workers)*(8<<20):
			t.Errorf("%d workers: PSS %d bytes is too little for a master and Flask workers", run.Workers, run.PSSBytes)
		case run.GeneratorBound:
			t.Errorf("%d workers: generator-bound at a few hundred req/s", run.Workers)
		}
	}
	one, three := r.Runs[0], r.Runs[1]
	if others := max(one.OtherCPU, three.OtherCPU); others > 0.5 {
		// Other tests took a quarter of the machine or more: the server got less CPU than
		// its quota and the comparison measures them. The numbers above were still sane.
		t.Logf("the machine was busy (other processes used up to %.2f CPUs): not comparing throughput", others)
		return
	}
	if three.RPS < 1.8*one.RPS || three.CPUUsed < one.CPUUsed {
		t.Errorf("3 workers %.0f req/s (%.2f CPU) against 1 worker %.0f (%.2f): no gain from filling the CPU while requests wait",
			three.RPS, three.CPUUsed, one.RPS, one.CPUUsed)
	}
	if r.Recommendation.Index != 1 || !strings.Contains(r.Recommendation.Reason, "3 sync workers") {
		t.Errorf("recommendation: %+v", r.Recommendation)
	}
}

// TestBenchLayoutsRunTwoPods: "2x0.5" is two gorns, each in its own half-CPU cgroup,
// sizing itself (2 sync workers each), with the load spread over both.
func TestBenchLayoutsRunTwoPods(t *testing.T) {
	needCgroups(t)
	out := runBench(t, "--isolation", "cgroup", "--layouts", "1x1,2x0.5", "--duration", "1s", "--warmup", "200ms",
		"--url", "/work?cpu_ms=1&io_ms=2", "app:app")
	for _, want := range []string{"layout", "1x1", "2x0.5", "recommendation: layout"} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks %q:\n%s", want, out)
		}
	}
	// The text table: one row per layout, its workers in the third column.
	rows := map[string][]string{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 3 && (f[0] == "1x1" || f[0] == "2x0.5") {
			rows[f[0]] = f
		}
	}
	if rows["1x1"] == nil || rows["1x1"][2] != "3" || rows["2x0.5"] == nil || rows["2x0.5"][2] != "4" {
		t.Errorf("want 3 workers in one 1-CPU pod and 2+2 in two half-CPU pods:\n%s", out)
	}
}

// TestBenchReplaysGornsAccessLog: an access log written by gorn itself drives the load,
// under the unprivileged affinity fallback, which the report names as weaker.
func TestBenchReplaysGornsAccessLog(t *testing.T) {
	access := filepath.Join(t.TempDir(), "access.log")
	g := startGorn(t, gornOpts{}, "-w", "1", "--access-logfile", access, "app:app")
	for _, p := range []string{"/", "/json", "/json", "/work?cpu_ms=1&io_ms=1"} {
		if code, _ := get(t, g.url(p)); code != 200 {
			t.Fatalf("GET %s: %d", p, code)
		}
	}
	resp, err := client().Post(g.url("/echo"), "text/plain", strings.NewReader("hello"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST /echo: %v %v", resp, err)
	}
	resp.Body.Close()
	g.signal(syscall.SIGTERM)
	g.wait(15 * time.Second)
	if n := strings.Count(readFile(t, access), "\n"); n != 5 {
		t.Fatalf("the access log has %d lines, want 5", n)
	}

	out := runBench(t, "--isolation", "affinity", "--cpus", "1", "--workers", "2", "--duration", "700ms", "--warmup", "0s",
		"--connections", "4", "--requests", access, "--json", "app:app")
	r := parseReport(t, out)
	if !strings.Contains(r.Isolation, "affinity") || !strings.Contains(r.Isolation, "weaker") {
		t.Errorf("the fallback is not named as weaker: %q", r.Isolation)
	}
	if len(r.Runs) != 1 || r.Runs[0].Requests < 20 || r.Runs[0].Errors != 0 || r.Runs[0].Periods != -1 {
		t.Errorf("replay run: %s", out)
	}
}

// TestBenchInterruptCleansUp: SIGINT in the middle of a long run stops it at once, stops
// the server and removes its cgroup, and still prints what was measured.
func TestBenchInterruptCleansUp(t *testing.T) {
	needCgroups(t)
	before := benchGroups()
	cmd := exec.Command(gornBin, "bench", "--python", python(t), "--isolation", "cgroup", "--workers", "2", "--duration", "5m", "app:app")
	cmd.Dir = filepath.Join(repoRoot, "examples", "flask")
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	var servers []int
	for len(servers) < 3 && time.Now().Before(deadline) { // the master and two workers
		time.Sleep(100 * time.Millisecond)
		servers = childPids(cmd.Process.Pid)
		for _, p := range slices.Clone(servers) {
			servers = append(servers, childPids(p)...)
		}
	}
	if len(servers) < 3 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the server did not start: %v\n%s", servers, out.String())
	}
	time.Sleep(500 * time.Millisecond) // into the measurement
	start := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 || time.Since(start) > 15*time.Second {
		t.Errorf("exit %d (%v) after %s, want 130 soon", code, err, time.Since(start))
	}
	if !strings.Contains(out.String(), "interrupted") {
		t.Errorf("the output does not say it was interrupted:\n%s", out.String())
	}
	for _, p := range servers {
		if syscall.Kill(p, 0) == nil {
			if b, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/stat"); !strings.Contains(string(b), ") Z ") {
				t.Errorf("server process %d survived the bench", p)
			}
		}
	}
	checkNoLeftovers(t, before)
}

// TestBenchUnprivilegedFallsBack: a user who cannot create cgroups gets the affinity
// fallback, and the report says so and why. As root the test drops to nobody, with
// Debian's python3 (the runtime needs only the standard library) and a plain WSGI app in
// a directory that user can read.
func TestBenchUnprivilegedFallsBack(t *testing.T) {
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		testenv.Missing(t, "no %s: %v", py, err)
	}
	dir, err := os.MkdirTemp("", "gorn-bench-nobody-") // t.TempDir's parent is private
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "gorn")
	data, err := os.ReadFile(gornBin)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "hello.py"), `def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
`)
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "bench", "--python", py, "--workers", "1", "--duration", "500ms", "--warmup", "0s",
		"--connections", "2", "--json", "hello")
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), "HOME="+dir)
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("gorn bench as an unprivileged user: %v\n%s\n%s", err, out.String(), errb.String())
	}
	var r struct {
		Isolation string `json:"isolation"`
		Note      string `json:"isolation_note"`
		Runs      []struct {
			Requests int64 `json:"requests"`
			Errors   int64 `json:"errors"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(r.Isolation, "affinity") || !strings.Contains(r.Isolation, "weaker") ||
		!strings.Contains(r.Note, "needs root") || !strings.Contains(r.Note, "falling back to CPU affinity") {
		t.Errorf("the fallback is not said: %q / %q", r.Isolation, r.Note)
	}
	if len(r.Runs) != 1 || r.Runs[0].Requests < 20 || r.Runs[0].Errors != 0 {
		t.Errorf("runs: %s", out.String())
	}
}
