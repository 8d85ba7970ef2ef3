package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gornhq/gorn/internal/cgroup"
	"github.com/gornhq/gorn/internal/sizing"
	"github.com/gornhq/gorn/master"
)

const limitsUsage = `usage: gorn limits [--json] [--worker-class CLASS] [--cpus N] [--pid PID | --worker-memory SIZE]

Print the CPU and memory limits gorn detects for this process (CPU affinity, cgroup CPU
quota and memory limit with the files they came from) and the worker count it would run.

  --json                 print one JSON object instead of text
  -k, --worker-class C   sync (default), gthread, gevent, eventlet or asgi
  --cpus N               CPUs to size for, e.g. 1.5 or 1500m (default $GORN_CPUS, else detected)
  --pid PID              measure the workers of the gorn master PID (1 in its container):
                         the memory cap then uses their real cost
  --worker-memory SIZE   the memory one more worker costs (its USS, e.g. 40M), when no
                         running gorn can be measured (default: an estimate of 64MiB)

Under a memory limit the cap is floor((85% of the limit - master - shared) / USS): USS is
the memory only one worker maps (gorn_worker_uss_bytes), what one more adds; the pages the
workers share (libraries, a preloaded app) count once. A running gorn measures its first
worker before it starts the others.

$WEB_CONCURRENCY, when set, is the worker count, as for gorn itself.

A Kubernetes pod with a CPU request but no CPU limit has no quota, and sees every CPU of
the node. Pass its request instead:

  env:
  - name: CPU_REQUEST
    valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}
  - name: GORN_CPUS
    value: "$(CPU_REQUEST)m"
`

// limitsReport is the output of `gorn limits --json`. The keys are stable and always
// present; a value that is unknown or does not exist is null.
//
//	affinity               number of CPUs in the sched_getaffinity mask
//	cpu.cgroup_version     1 or 2: the hierarchy holding the cpu controller; null if none
//	cpu.cgroup_dir         the process's cpu cgroup directory; null if not found or visible
//	cpu.quota_us           the tightest CFS quota from that directory up to the mount
//	cpu.period_us          its period; null with the quota when there is no quota
//	cpu.quota_cpus         quota_us / period_us, e.g. 1.5
//	cpu.quota_file         the file it came from (cpu.max or cpu.cfs_quota_us)
//	memory.cgroup_version  as for cpu, for the memory controller
//	memory.cgroup_dir      as for cpu
//	memory.limit_bytes     the tightest memory limit; null when unlimited
//	memory.limit_file      memory.max, memory.high, memory.limit_in_bytes or memory.stat
//	memory.workers         how many workers fit under the limit at worker_uss_bytes each;
//	                       null when there is no limit
//	memory.workers_by_pss  how many would fit at worker_pss_bytes each (nothing shared);
//	                       null unless measured (--pid)
//	memory.worker_uss_bytes  the cost of one more worker: measured (the largest USS),
//	                       --worker-memory, or the estimate
//	memory.worker_pss_bytes  the largest measured worker PSS; null unless measured
//	memory.shared_bytes    what the workers share plus gorn's other processes (hook host,
//	                       mold), counted once; null unless measured
//	memory.worker_source   "measured" (--pid), "--worker-memory" or "estimate"
//	master_rss_bytes       this process's resident set size; null if unreadable
//	cpus                   the CPU count sized for
//	cpus_source            "--cpus", "GORN_CPUS", "quota" or "affinity"
//	worker_class           the worker class sized for
//	workers                the worker count gorn would run
//	workers_source         "WEB_CONCURRENCY" when set, else "cpus"
//	explanation            the log line, e.g. "workers=4 (sync: 2*1.5+1; cpu quota ...)"
//	notes                  files skipped as unreadable or malformed, and similar; [] if none
type limitsReport struct {
	Affinity       int          `json:"affinity"`
	CPU            cpuReport    `json:"cpu"`
	Memory         memoryReport `json:"memory"`
	MasterRSSBytes *int64       `json:"master_rss_bytes"`
	CPUs           float64      `json:"cpus"`
	CPUsSource     string       `json:"cpus_source"`
	WorkerClass    string       `json:"worker_class"`
	Workers        int          `json:"workers"`
	WorkersSource  string       `json:"workers_source"`
	Explanation    string       `json:"explanation"`
	Notes          []string     `json:"notes"`
}

type cpuReport struct {
	CgroupVersion *int     `json:"cgroup_version"`
	CgroupDir     *string  `json:"cgroup_dir"`
	QuotaUS       *int64   `json:"quota_us"`
	PeriodUS      *int64   `json:"period_us"`
	QuotaCPUs     *float64 `json:"quota_cpus"`
	QuotaFile     *string  `json:"quota_file"`
}

type memoryReport struct {
	CgroupVersion  *int    `json:"cgroup_version"`
	CgroupDir      *string `json:"cgroup_dir"`
	LimitBytes     *int64  `json:"limit_bytes"`
	LimitFile      *string `json:"limit_file"`
	Workers        *int    `json:"workers"`
	WorkersByPSS   *int    `json:"workers_by_pss"`
	WorkerUSSBytes int64   `json:"worker_uss_bytes"`
	WorkerPSSBytes *int64  `json:"worker_pss_bytes"`
	SharedBytes    *int64  `json:"shared_bytes"`
	WorkerSource   string  `json:"worker_source"`
}

// estimatedWorkerUSS is the memory one more worker is assumed to cost when none can be
// measured: above the Flask example's workers (gorn_worker_uss_bytes 21MiB each after 200
// requests, -w 2) and the 34MiB one more Django admin worker adds in issue 14's measurement.
const estimatedWorkerUSS = 64 << 20

// runLimits implements `gorn limits`; it returns the exit code.
func runLimits(args []string, env func(string) string, stdout, stderr io.Writer) int {
	return limitsCommand(args, env, stdout, stderr, cgroup.Options{})
}

// limitsCommand is runLimits with the detection options exposed for tests, which pass a
// fixture root and a fake affinity. The master's RSS is read from <opts.Root>/proc.
func limitsCommand(args []string, env func(string) string, stdout, stderr io.Writer, opts cgroup.Options) int {
	fs := flag.NewFlagSet("gorn limits", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "")
	class := fs.String("worker-class", "sync", "")
	fs.StringVar(class, "k", "sync", "")
	cpusFlag := fs.String("cpus", "", "")
	pid := fs.Int("pid", 0, "")
	workerMemory := fs.String("worker-memory", "", "")
	usage := func(err error) int {
		fmt.Fprintf(stderr, "gorn limits: error: %v (see gorn limits --help)\n", err)
		return master.ExitUsage
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, limitsUsage)
			return master.ExitOK
		}
		return usage(err)
	}
	if fs.NArg() > 0 {
		return usage(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}

	in := sizing.Input{Class: *class}
	cpus, cpusFrom := *cpusFlag, "--cpus"
	if cpus == "" {
		cpus, cpusFrom = env("GORN_CPUS"), "GORN_CPUS"
	}
	if cpus != "" {
		c, err := sizing.ParseCPUs(cpus)
		if err != nil {
			return usage(fmt.Errorf("%s: %w", cpusFrom, err))
		}
		in.CPUs, in.CPUsFrom = c, cpusFrom
	}
	if s := env("WEB_CONCURRENCY"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return usage(fmt.Errorf("WEB_CONCURRENCY=%q: want a whole number >= 1", s))
		}
		in.Workers, in.WorkersFrom = n, "WEB_CONCURRENCY"
	}

	in.Limits = cgroup.Detect(opts)
	procRoot := ""
	if opts.Root != "" {
		procRoot = filepath.Join(opts.Root, "proc")
	}
	switch {
	case *pid != 0 && *workerMemory != "":
		return usage(errors.New("--pid and --worker-memory: give one"))
	case *pid != 0:
		workers, others, err := masterChildren(procRoot, *pid)
		if err != nil {
			return usage(err)
		}
		read := func(p int) (sizing.Footprint, error) { return sizing.ReadFootprint(procRoot, p) }
		in.Memory = sizing.MeasureMemory(read, workers, others)
		if in.Memory.WorkerUSS == 0 {
			return usage(fmt.Errorf("--pid %d: no gorn worker's memory could be read among its children", *pid))
		}
		in.Memory.WorkerFrom = fmt.Sprintf("measured: the largest USS of pid %d's %d workers", *pid, len(workers))
	case *workerMemory != "":
		n, err := sizing.ParseBytes(*workerMemory)
		if err != nil || n <= 0 {
			return usage(fmt.Errorf("--worker-memory %q: want a size such as 40M", *workerMemory))
		}
		in.Memory = sizing.Memory{WorkerUSS: n, WorkerFrom: "--worker-memory"}
	default:
		in.Memory = sizing.Memory{WorkerUSS: estimatedWorkerUSS, WorkerFrom: "estimate"}
	}
	masterPid := opts.PID
	if *pid != 0 {
		masterPid = *pid
	}
	rss, rssErr := sizing.ReadRSS(procRoot, masterPid)
	if rssErr == nil {
		in.Memory.Master = rss
	}
	plan, err := sizing.Decide(in)
	if err != nil {
		return usage(err)
	}

	r := newLimitsReport(in, plan)
	if rssErr == nil {
		r.MasterRSSBytes = &rss
	} else {
		r.Notes = append(r.Notes, rssErr.Error())
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			fmt.Fprintf(stderr, "gorn limits: error: writing JSON: %v\n", err)
			return master.ExitError
		}
		return master.ExitOK
	}
	writeLimitsText(stdout, in.Limits, r)
	return master.ExitOK
}

func newLimitsReport(in sizing.Input, plan sizing.Plan) limitsReport {
	l := in.Limits
	r := limitsReport{
		Affinity:      l.Affinity,
		CPUs:          plan.CPUs,
		CPUsSource:    plan.CPUSource,
		WorkerClass:   in.Class,
		Workers:       plan.Workers,
		WorkersSource: "cpus",
		Explanation:   plan.Explanation,
		Notes:         append([]string{}, l.Notes...),
	}
	if in.WorkersFrom != "" {
		r.WorkersSource = in.WorkersFrom
	}
	r.CPU.CgroupVersion, r.CPU.CgroupDir = controllerReport(l.CPU)
	if q := l.CPUQuota; q != nil {
		cpus := q.CPUs()
		r.CPU.QuotaUS, r.CPU.PeriodUS, r.CPU.QuotaCPUs, r.CPU.QuotaFile = &q.Quota, &q.Period, &cpus, &q.File
	}
	r.Memory.CgroupVersion, r.Memory.CgroupDir = controllerReport(l.Memory)
	if m := l.MemoryLimit; m != nil {
		r.Memory.LimitBytes, r.Memory.LimitFile = &m.Bytes, &m.File
		r.Memory.Workers = &plan.MemoryWorkers
	}
	mem := in.Memory
	r.Memory.WorkerUSSBytes = mem.WorkerUSS
	r.Memory.WorkerSource = "estimate"
	switch {
	case mem.WorkerPSS > 0:
		shared := mem.Shared + mem.Others
		r.Memory.WorkerPSSBytes, r.Memory.SharedBytes, r.Memory.WorkerSource = &mem.WorkerPSS, &shared, "measured"
		if l.MemoryLimit != nil {
			r.Memory.WorkersByPSS = &plan.MemoryWorkersByPSS
		}
	case mem.WorkerFrom == "--worker-memory":
		r.Memory.WorkerSource = mem.WorkerFrom
	}
	return r
}

// masterChildren lists the children of the gorn master pid from
// <procRoot>/<pid>/task/*/children: its workers (their command line names them "gorn:
// worker"), and its other processes (the hook host, a preload mold).
func masterChildren(procRoot string, pid int) (workers, others []int, err error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	tasks, err := filepath.Glob(filepath.Join(procRoot, strconv.Itoa(pid), "task", "*", "children"))
	if err != nil || len(tasks) == 0 {
		return nil, nil, fmt.Errorf("--pid %d: no such process, or its children are not listed in %s", pid, procRoot)
	}
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, fmt.Errorf("--pid %d: %w", pid, err)
		}
		for _, field := range strings.Fields(string(b)) {
			child, err := strconv.Atoi(field)
			if err != nil {
				continue
			}
			cmdline, _ := os.ReadFile(filepath.Join(procRoot, field, "cmdline"))
			if strings.Contains(string(cmdline), "gorn: worker") {
				workers = append(workers, child)
			} else {
				others = append(others, child)
			}
		}
	}
	return workers, others, nil
}

func controllerReport(c cgroup.Controller) (*int, *string) {
	var v *int
	var d *string
	if c.Version != 0 {
		v = &c.Version
	}
	if c.Dir != "" {
		d = &c.Dir
	}
	return v, d
}

func writeLimitsText(w io.Writer, l cgroup.Limits, r limitsReport) {
	fmt.Fprintf(w, "affinity:       %d CPUs\n", l.Affinity)
	fmt.Fprintf(w, "cpu cgroup:     %s\n", describeController(l.CPU))
	if q := l.CPUQuota; q != nil {
		fmt.Fprintf(w, "cpu quota:      %d/%d = %s CPUs, from cgroup v%d %s\n",
			q.Quota, q.Period, sizing.FormatCPUs(q.CPUs()), q.Version, q.File)
	} else {
		fmt.Fprintf(w, "cpu quota:      none\n")
	}
	fmt.Fprintf(w, "memory cgroup:  %s\n", describeController(l.Memory))
	if m := l.MemoryLimit; m != nil {
		fmt.Fprintf(w, "memory limit:   %s (%d bytes), from cgroup v%d %s\n", sizing.FormatBytes(m.Bytes), m.Bytes, m.Version, m.File)
	} else {
		fmt.Fprintf(w, "memory limit:   none\n")
	}
	if r.MasterRSSBytes != nil {
		fmt.Fprintf(w, "master rss:     %s\n", sizing.FormatBytes(*r.MasterRSSBytes))
	}
	fmt.Fprintf(w, "cpus:           %s (%s)\n", sizing.FormatCPUs(r.CPUs), r.CPUsSource)
	fmt.Fprintln(w, r.Explanation)
	m := r.Memory
	switch m.WorkerSource {
	case "measured":
		fmt.Fprintf(w, "worker memory:  USS %s (one more worker), PSS %s; shared %s (counted once); measured\n",
			sizing.FormatBytes(m.WorkerUSSBytes), sizing.FormatBytes(*m.WorkerPSSBytes), sizing.FormatBytes(*m.SharedBytes))
	default:
		fmt.Fprintf(w, "worker memory:  USS %s (one more worker), from %s; --pid PID measures a running gorn's\n",
			sizing.FormatBytes(m.WorkerUSSBytes), m.WorkerSource)
	}
	if l.MemoryLimit != nil {
		fmt.Fprintf(w, "memory cap:     %d workers = floor((%d%% of %s - master - shared) / USS)", *m.Workers,
			int(sizing.MemoryShare*100), sizing.FormatBytes(l.MemoryLimit.Bytes))
		if m.WorkersByPSS != nil {
			fmt.Fprintf(w, "; %d if each cost its PSS", *m.WorkersByPSS)
		}
		fmt.Fprintln(w)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func describeController(c cgroup.Controller) string {
	switch {
	case c.Version == 0:
		return "not found"
	case c.Dir == "":
		return fmt.Sprintf("v%d %s (not visible)", c.Version, c.Path)
	default:
		return fmt.Sprintf("v%d %s", c.Version, c.Dir)
	}
}
