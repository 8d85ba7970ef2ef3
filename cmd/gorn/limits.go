package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	"github.com/gornhq/gorn/internal/cgroup"
	"github.com/gornhq/gorn/internal/sizing"
	"github.com/gornhq/gorn/master"
)

const limitsUsage = `usage: gorn limits [--json] [--worker-class CLASS] [--cpus N]

Print the CPU and memory limits gorn detects for this process (CPU affinity, cgroup CPU
quota and memory limit with the files they came from) and the worker count it would run.

  --json                 print one JSON object instead of text
  -k, --worker-class C   sync (default), gthread, gevent, eventlet or asgi
  --cpus N               CPUs to size for, e.g. 1.5 or 1500m (default $GORN_CPUS, else detected)

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
	CgroupVersion *int    `json:"cgroup_version"`
	CgroupDir     *string `json:"cgroup_dir"`
	LimitBytes    *int64  `json:"limit_bytes"`
	LimitFile     *string `json:"limit_file"`
}

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
	rss, rssErr := sizing.ReadRSS(procRoot, opts.PID)
	if rssErr == nil {
		in.MasterBytes = rss
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
	}
	return r
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
	if l.MemoryLimit != nil {
		fmt.Fprintf(w, "memory cap:     at most floor((%d%% of %s - master rss) / worker PSS) workers, "+
			"applied once the first worker's PSS is measured\n", int(sizing.MemoryShare*100), sizing.FormatBytes(l.MemoryLimit.Bytes))
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
