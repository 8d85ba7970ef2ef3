package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/gornhq/gorn/internal/cgroup"
)

// limitsRoot writes a miniature filesystem root: a hybrid host whose v1 cpu cgroup has a
// quota of 1.5 CPUs and whose v1 memory cgroup has a 512MiB limit; the master's RSS is 20MiB.
func limitsRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"proc/self/cgroup": "4:memory:/pod\n1:cpu,cpuacct:/pod\n0::/pod\n",
		"proc/self/mountinfo": "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n" +
			"35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
			"41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
		"proc/self/status": "Name:\tgorn\nVmRSS:\t   20480 kB\n",
		"sys/fs/cgroup/cpu,cpuacct/pod/cpu.cfs_quota_us":      "150000\n",
		"sys/fs/cgroup/cpu,cpuacct/pod/cpu.cfs_period_us":     "100000\n",
		"sys/fs/cgroup/memory/pod/memory.limit_in_bytes":      "536870912\n",
		"sys/fs/cgroup/memory/memory.limit_in_bytes":          "9223372036854771712\n",
		"sys/fs/cgroup/unified/pod/cpu.max":                   "10000 100000\n",
		"sys/fs/cgroup/cpu,cpuacct/pod/cpu.shares":            "1536\n",
		"sys/fs/cgroup/memory/pod/memory.oom_control":         "oom_kill 0\n",
		"sys/fs/cgroup/cpu,cpuacct/pod/cpuset.effective_cpus": "0-1\n",
	}
	for name, text := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func limitsOpts(root string, affinity int) cgroup.Options {
	return cgroup.Options{Root: root, Affinity: func(int) (int, error) { return affinity, nil }}
}

func envOf(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestLimitsJSON(t *testing.T) {
	root := limitsRoot(t)
	var stdout, stderr bytes.Buffer
	code := limitsCommand([]string{"--json"}, envOf(nil), &stdout, &stderr, limitsOpts(root, 2))
	if code != 0 {
		t.Fatalf("exit code %d, stderr %q", code, stderr.String())
	}
	var got map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout.String())
	}

	// The key set is a contract: scripts read it.
	wantKeys := []string{"affinity", "cpu", "cpus", "cpus_source", "explanation", "master_rss_bytes", "memory",
		"notes", "worker_class", "workers", "workers_source"}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, wantKeys) {
		t.Errorf("keys = %v, want %v", keys, wantKeys)
	}
	cpu, _ := got["cpu"].(map[string]any)
	if keys := slices.Sorted(maps.Keys(cpu)); !slices.Equal(keys, []string{"cgroup_dir", "cgroup_version", "period_us", "quota_cpus", "quota_file", "quota_us"}) {
		t.Errorf("cpu keys = %v", keys)
	}
	mem, _ := got["memory"].(map[string]any)
	if keys := slices.Sorted(maps.Keys(mem)); !slices.Equal(keys, []string{"cgroup_dir", "cgroup_version", "limit_bytes", "limit_file",
		"shared_bytes", "worker_pss_bytes", "worker_source", "worker_uss_bytes", "workers", "workers_by_pss"}) {
		t.Errorf("memory keys = %v", keys)
	}

	want := map[string]any{
		"affinity": 2.0,
		"cpu": map[string]any{
			"cgroup_version": 1.0,
			"cgroup_dir":     "/sys/fs/cgroup/cpu,cpuacct/pod",
			"quota_us":       150000.0,
			"period_us":      100000.0,
			"quota_cpus":     1.5,
			"quota_file":     "/sys/fs/cgroup/cpu,cpuacct/pod/cpu.cfs_quota_us",
		},
		"memory": map[string]any{
			"cgroup_version": 1.0,
			"cgroup_dir":     "/sys/fs/cgroup/memory/pod",
			"limit_bytes":    536870912.0,
			"limit_file":     "/sys/fs/cgroup/memory/pod/memory.limit_in_bytes",
			// (435.2 MiB - 20 MiB master) / the 64 MiB estimate
			"workers":          6.0,
			"workers_by_pss":   nil,
			"worker_uss_bytes": 67108864.0,
			"worker_pss_bytes": nil,
			"shared_bytes":     nil,
			"worker_source":    "estimate",
		},
		"master_rss_bytes": 20971520.0,
		"cpus":             1.5,
		"cpus_source":      "quota",
		"worker_class":     "sync",
		"workers":          4.0,
		"workers_source":   "cpus",
		"explanation":      "workers=4 (sync: 2*1.5+1; cpu quota 150000/100000 from cgroup v1 /sys/fs/cgroup/cpu,cpuacct/pod/cpu.cfs_quota_us, affinity 2)",
		"notes":            []any{},
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", "  ")
		w, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("JSON:\n%s\nwant:\n%s", g, w)
	}
}

func TestLimitsJSONNoLimits(t *testing.T) {
	root := t.TempDir() // no /proc, no /sys: nothing detected, nothing fails
	var stdout, stderr bytes.Buffer
	code := limitsCommand([]string{"--json", "--worker-class", "gthread"}, envOf(nil), &stdout, &stderr, limitsOpts(root, 3))
	if code != 0 {
		t.Fatalf("exit code %d, stderr %q", code, stderr.String())
	}
	var got struct {
		CPU         map[string]any `json:"cpu"`
		Memory      map[string]any `json:"memory"`
		MasterRSS   *int64         `json:"master_rss_bytes"`
		Workers     int            `json:"workers"`
		CPUsSource  string         `json:"cpus_source"`
		Explanation string         `json:"explanation"`
		Notes       []string       `json:"notes"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout.String())
	}
	for k, v := range got.CPU {
		if v != nil {
			t.Errorf("cpu.%s = %v, want null", k, v)
		}
	}
	for k, v := range got.Memory {
		if v != nil && k != "worker_uss_bytes" && k != "worker_source" {
			t.Errorf("memory.%s = %v, want null", k, v)
		}
	}
	if got.Memory["worker_source"] != "estimate" {
		t.Errorf("memory.worker_source = %v, want the estimate", got.Memory["worker_source"])
	}
	if len(got.CPU) != 6 || len(got.Memory) != 10 {
		t.Errorf("null keys must still be present: cpu %v, memory %v", got.CPU, got.Memory)
	}
	if got.MasterRSS != nil || got.Workers != 3 || got.CPUsSource != "affinity" || len(got.Notes) == 0 {
		t.Errorf("got %+v", got)
	}
	if !strings.Contains(got.Explanation, "no cpu quota: counting the node's 3 CPUs") ||
		!strings.Contains(got.Explanation, "GORN_CPUS") {
		t.Errorf("explanation %q does not say where the count came from and how to pass the request", got.Explanation)
	}
}

func TestLimitsOverrides(t *testing.T) {
	root := limitsRoot(t)
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		workers int
		cpus    float64
		source  string
	}{
		{name: "--cpus in millicores", args: []string{"--cpus", "500m"}, workers: 2, cpus: 0.5, source: "--cpus"},
		{name: "GORN_CPUS", env: map[string]string{"GORN_CPUS": "2.5"}, workers: 6, cpus: 2.5, source: "GORN_CPUS"},
		{name: "--cpus beats GORN_CPUS", args: []string{"--cpus=1"}, env: map[string]string{"GORN_CPUS": "8"},
			workers: 3, cpus: 1, source: "--cpus"},
		{name: "WEB_CONCURRENCY", env: map[string]string{"WEB_CONCURRENCY": "7"}, workers: 7, cpus: 1.5, source: "quota"},
		{name: "asgi", args: []string{"-k", "asgi"}, workers: 2, cpus: 1.5, source: "quota"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := limitsCommand(append([]string{"--json"}, tt.args...), envOf(tt.env), &stdout, &stderr, limitsOpts(root, 2))
			if code != 0 {
				t.Fatalf("exit code %d, stderr %q", code, stderr.String())
			}
			var got limitsReport
			if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got.Workers != tt.workers || got.CPUs != tt.cpus || got.CPUsSource != tt.source {
				t.Errorf("workers %d cpus %v from %q, want %d %v %q", got.Workers, got.CPUs, got.CPUsSource,
					tt.workers, tt.cpus, tt.source)
			}
		})
	}
}

func TestLimitsText(t *testing.T) {
	root := limitsRoot(t)
	var stdout, stderr bytes.Buffer
	if code := limitsCommand(nil, envOf(nil), &stdout, &stderr, limitsOpts(root, 2)); code != 0 {
		t.Fatalf("exit code %d, stderr %q", code, stderr.String())
	}
	for _, want := range []string{
		"affinity:       2 CPUs\n",
		"cpu cgroup:     v1 /sys/fs/cgroup/cpu,cpuacct/pod\n",
		"cpu quota:      150000/100000 = 1.5 CPUs, from cgroup v1 /sys/fs/cgroup/cpu,cpuacct/pod/cpu.cfs_quota_us\n",
		"memory limit:   512MiB (536870912 bytes), from cgroup v1 /sys/fs/cgroup/memory/pod/memory.limit_in_bytes\n",
		"master rss:     20MiB\n",
		"workers=4 (sync: 2*1.5+1; cpu quota 150000/100000",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestLimitsUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		code int
	}{
		{name: "help", args: []string{"--help"}, code: 0},
		{name: "unknown flag", args: []string{"--bogus"}, code: 2},
		{name: "bad --cpus", args: []string{"--cpus", "lots"}, code: 2},
		{name: "zero --cpus", args: []string{"--cpus", "0"}, code: 2},
		{name: "bad GORN_CPUS", env: map[string]string{"GORN_CPUS": "-1"}, code: 2},
		{name: "bad WEB_CONCURRENCY", env: map[string]string{"WEB_CONCURRENCY": "many"}, code: 2},
		{name: "unknown class", args: []string{"--worker-class", "tornado"}, code: 2},
		{name: "extra argument", args: []string{"app:app"}, code: 2},
		{name: "bad --worker-memory", args: []string{"--worker-memory", "lots"}, code: 2},
		{name: "--pid and --worker-memory", args: []string{"--pid", "1", "--worker-memory", "40M"}, code: 2},
		{name: "--pid of nothing", args: []string{"--pid", "999999"}, code: 2},
	}
	root := limitsRoot(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := limitsCommand(tt.args, envOf(tt.env), &stdout, &stderr, limitsOpts(root, 2))
			if code != tt.code {
				t.Errorf("exit code %d, want %d", code, tt.code)
			}
			if tt.code == 0 {
				if !strings.HasPrefix(stdout.String(), "usage: gorn limits") {
					t.Errorf("help output %q", stdout.String())
				}
				return
			}
			msg := stderr.String()
			if stdout.Len() != 0 || strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "gorn limits: error: ") {
				t.Errorf("want one error line on stderr and nothing on stdout; got stderr %q stdout %q", msg, stdout.String())
			}
		})
	}
}

// TestLimitsMemoryCap: under the 512MiB limit, the cap at a given marginal cost, and
// measured from the processes of a running gorn master (pid 500: two workers, sharing
// most of their memory, and a hook host).
func TestLimitsMemoryCap(t *testing.T) {
	root := limitsRoot(t)
	run := func(args ...string) limitsReport {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := limitsCommand(append([]string{"--json", "--cpus", "8"}, args...), envOf(nil), &stdout, &stderr, limitsOpts(root, 2)); code != 0 {
			t.Fatalf("exit code %d, stderr %q", code, stderr.String())
		}
		var r limitsReport
		if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	// (435.2 - 20) / 100: 4 of the CPU rule's 17.
	if r := run("--worker-memory", "100M"); r.Workers != 4 || *r.Memory.Workers != 4 || r.Memory.WorkerSource != "--worker-memory" ||
		!strings.Contains(r.Explanation, "memory cap: 4 workers fit") {
		t.Errorf("at 100M a worker: workers %d, memory %+v, %q", r.Workers, r.Memory, r.Explanation)
	}
	for pid, files := range map[string]map[string]string{
		"500": {"task/500/children": "501 502 503 ", "status": "VmRSS:\t   20480 kB\n"},
		"501": {"cmdline": "python\x00/proc/self/fd/9\x00gorn: worker [app:app] slot=0\x00", "smaps_rollup": "Rss: 90000 kB\nPss: 40960 kB\nPrivate_Clean: 1024 kB\nPrivate_Dirty: 19456 kB\n"},
		"502": {"cmdline": "python\x00/proc/self/fd/9\x00gorn: worker [app:app] slot=1\x00", "smaps_rollup": "Rss: 90000 kB\nPss: 40960 kB\nPrivate_Dirty: 20480 kB\n"},
		"503": {"cmdline": "python\x00-c\x00hookhost\x00", "smaps_rollup": "Rss: 50000 kB\nPss: 30720 kB\nPrivate_Dirty: 10240 kB\n"},
	} {
		for name, text := range files {
			p := filepath.Join(root, "proc", pid, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// USS 20MiB; shared 2*20 + the host's 30 = 70MiB: (435.2 - 20 - 70) / 20 = 17; by PSS
	// (435.2 - 20 - 30) / 40 = 9.
	r := run("--pid", "500")
	if r.Workers != 17 || *r.Memory.Workers != 17 || *r.Memory.WorkersByPSS != 9 || r.Memory.WorkerSource != "measured" ||
		r.Memory.WorkerUSSBytes != 20<<20 || *r.Memory.WorkerPSSBytes != 40<<20 || *r.Memory.SharedBytes != 70<<20 {
		t.Errorf("measured: workers %d, memory %+v", r.Workers, r.Memory)
	}
	var stdout, stderr bytes.Buffer
	limitsCommand([]string{"--pid", "500"}, envOf(nil), &stdout, &stderr, limitsOpts(root, 2))
	for _, want := range []string{"worker memory:  USS 20MiB (one more worker), PSS 40MiB; shared 70MiB (counted once); measured\n",
		"memory cap:     17 workers = floor((85% of 512MiB - master - shared) / USS); 9 if each cost its PSS\n"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, stdout.String())
		}
	}
}
