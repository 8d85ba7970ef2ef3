// Package sizing decides how many workers gorn runs, and says why in one line.
//
// The policy (Decide, Adapt, ForCPUs, MemoryFit, ParseCPUs) is pure: it works on values
// that package cgroup detected and the caller measured. The only I/O here is ReadPSS,
// ReadRSS, ReadFootprint and ReadCPUTime, which read a process's footprint and CPU time from /proc.
//
//	cpus    = --cpus / GORN_CPUS if given, else min(affinity, cgroup CPU quota)
//	workers = -w / WEB_CONCURRENCY if given, else by worker class:
//	            sync:                           round(2*cpus + 1), at least 2
//	            gthread, gevent, eventlet, asgi: ceil(cpus), at least 1
//	memory  = at most floor((85% of the memory limit - fixed) / marginal), at least 1, where
//	          marginal = a worker's USS (the pages only it maps: what one more adds) and
//	          fixed = the master + gorn's other processes (hook host, preload mold) + what
//	          the workers share, counted once (the sum of their PSS - USS)
//	ceiling = --max-workers
//	load    = sync pools busy > 85% on < 75% of the CPUs grow by one per resize, up to
//	          4*cpus+1; pools busy < 40% shrink back toward the CPU rule (Adapt)
//
// An explicit worker count is never capped: it is the operator's decision, and the
// explanation warns when it exceeds what fits in memory.
package sizing

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/gornhq/gorn/internal/cgroup"
)

// MemoryShare is the fraction of the memory limit that workers and the master may fill;
// the rest is headroom for page cache, spikes and the kernel.
const MemoryShare = 0.85

// ErrUnknownClass is returned for a worker class gorn does not know.
var ErrUnknownClass = errors.New("unknown worker class")

// Input is what Decide works from.
type Input struct {
	Class string // worker class: sync (the default when ""), gthread, gevent, eventlet, asgi

	Workers     int    // explicit worker count (-w, WEB_CONCURRENCY); 0 means decide
	WorkersFrom string // where Workers came from, for the explanation: "-w", "WEB_CONCURRENCY"

	CPUs     float64 // CPU override (--cpus, GORN_CPUS); 0 means use Limits
	CPUsFrom string  // where CPUs came from: "--cpus", "GORN_CPUS"

	MaxWorkers int // explicit ceiling (--max-workers); 0 means none

	Limits cgroup.Limits // what cgroup.Detect found

	Memory Memory // what the memory cap works from
}

// Memory is the memory footprint the cap is computed from. With workers forked from a
// preloaded app, most of a worker is shared: its PSS overstates what one more costs,
// its USS does not.
type Memory struct {
	Master int64 // the master's own footprint (its RSS); 0 if unknown
	Others int64 // PSS of gorn's other processes (the hook host or preload mold)
	// Shared is what the measured workers share, counted once: the sum of their PSS - USS
	// (libraries, a preloaded app's pages); more workers share it, they do not add to it.
	Shared int64
	// WorkerUSS is the marginal cost of one more worker: the largest measured USS, or an
	// estimate (WorkerFrom says which); 0 = unknown, no cap.
	WorkerUSS int64
	// WorkerPSS is the largest measured PSS (0 if not measured): what a worker would cost
	// if nothing it maps were shared; reported beside the cap.
	WorkerPSS  int64
	WorkerFrom string // "measured", or where an estimate came from
}

// fixed is what the workers cost together whatever their number.
func (m Memory) fixed() int64 { return m.Master + m.Others + m.Shared }

// Plan is Decide's answer.
type Plan struct {
	Workers int // how many workers to run
	// CPUs is the CPU count sized for (also computed when the count is explicit), and
	// CPUSource where it came from: Input.CPUsFrom for an override, else "quota" or
	// "affinity".
	CPUs      float64
	CPUSource string
	// CPUWorkers is the count from the CPU policy alone (or the explicit count).
	CPUWorkers int
	// MemoryWorkers is how many workers fit in memory at their marginal cost (USS); 0 when
	// unknown (no limit, or no worker measured yet).
	MemoryWorkers int
	// MemoryWorkersByPSS is how many would fit if each cost its whole PSS (a cap that
	// ignores sharing); 0 when unknown. Reported to show what the sharing buys.
	MemoryWorkersByPSS int
	// Explanation is one line for the log, e.g. "workers=4 (sync: 2*1.5+1; cpu quota
	// 150000/100000 from cgroup v1 /sys/fs/cgroup/cpu/x/cpu.cfs_quota_us, affinity 2)".
	Explanation string
}

// Decide chooses the number of workers and explains the choice.
func Decide(in Input) (Plan, error) {
	class := in.Class
	if class == "" {
		class = "sync"
	}
	if in.Workers < 0 || in.MaxWorkers < 0 || in.CPUs < 0 || math.IsNaN(in.CPUs) || math.IsInf(in.CPUs, 0) {
		return Plan{}, fmt.Errorf("deciding workers: negative or invalid input (workers %d, max-workers %d, cpus %v)",
			in.Workers, in.MaxWorkers, in.CPUs)
	}
	if err := checkClass(class); err != nil {
		return Plan{}, err
	}
	var p Plan
	var why []string
	cpus, cpuSource, cpuWhy := chooseCPUs(in)
	p.CPUs, p.CPUSource = cpus, cpuSource
	if in.Workers > 0 {
		p.Workers, p.CPUWorkers = in.Workers, in.Workers
		why = append(why, "from "+orDefault(in.WorkersFrom, "explicit count"))
	} else {
		if cpus <= 0 {
			return Plan{}, errors.New("deciding workers: no CPU count: neither affinity nor a cgroup quota is known")
		}
		n, formula, _ := ForCPUs(class, cpus) // the class was checked above
		p.Workers, p.CPUWorkers = n, n
		why = append(why, class+": "+formula, cpuWhy)
	}

	if lim, mem := in.Limits.MemoryLimit, in.Memory; lim != nil && mem.WorkerUSS > 0 {
		p.MemoryWorkers = MemoryFit(lim.Bytes, mem.fixed(), mem.WorkerUSS)
		per := fmt.Sprintf("%s per worker: its USS", FormatBytes(mem.WorkerUSS))
		if mem.WorkerFrom != "" && mem.WorkerFrom != "measured" {
			per = fmt.Sprintf("%s per worker: %s", FormatBytes(mem.WorkerUSS), mem.WorkerFrom)
		}
		if mem.WorkerPSS > 0 {
			p.MemoryWorkersByPSS = MemoryFit(lim.Bytes, mem.Master+mem.Others, mem.WorkerPSS)
		}
		fit := fmt.Sprintf("%s in %d%% of %s limit from cgroup v%d %s (master %s + shared %s, then %s)",
			fitCount(p.MemoryWorkers), int(MemoryShare*100), FormatBytes(lim.Bytes), lim.Version, lim.File,
			FormatBytes(mem.Master), FormatBytes(mem.Others+mem.Shared), per)
		switch {
		case p.MemoryWorkers >= p.Workers:
		case in.Workers > 0:
			why = append(why, "warning: only "+fit)
		default:
			p.Workers = p.MemoryWorkers
			why = append(why, "memory cap: "+fit)
		}
	}

	switch {
	case in.MaxWorkers == 0 || p.Workers <= in.MaxWorkers:
	case in.Workers > 0:
		why = append(why, fmt.Sprintf("warning: above --max-workers %d", in.MaxWorkers))
	default:
		p.Workers = in.MaxWorkers
		why = append(why, fmt.Sprintf("capped by --max-workers %d", in.MaxWorkers))
	}

	p.Explanation = fmt.Sprintf("workers=%d (%s)", p.Workers, strings.Join(why, "; "))
	return p, nil
}

// chooseCPUs applies "override, else min(affinity, quota)"; it returns the CPU count, its
// source (see Plan.CPUSource) and a description for the explanation.
func chooseCPUs(in Input) (cpus float64, source, why string) {
	l := in.Limits
	if in.CPUs > 0 {
		source = orDefault(in.CPUsFrom, "override")
		return in.CPUs, source, fmt.Sprintf("cpus %s from %s", FormatCPUs(in.CPUs), source)
	}
	q := l.CPUQuota
	switch {
	case q == nil:
		where := ""
		if l.CPU.Dir != "" {
			where = fmt.Sprintf(" in cgroup v%d %s", l.CPU.Version, l.CPU.Dir)
		}
		return float64(l.Affinity), "affinity", fmt.Sprintf("no cpu quota%s: counting the node's %d CPUs (affinity); "+
			"to size for the pod's CPU request pass --cpus or GORN_CPUS "+
			"(Downward API resourceFieldRef requests.cpu, divisor 1m, given as e.g. 500m)", where, l.Affinity)
	case l.Affinity > 0 && float64(l.Affinity) <= q.CPUs():
		return float64(l.Affinity), "affinity", fmt.Sprintf("affinity %d, cpu quota %s", l.Affinity, q)
	default:
		return q.CPUs(), "quota", fmt.Sprintf("cpu quota %s, affinity %d", q, l.Affinity)
	}
}

// checkClass returns an error wrapping ErrUnknownClass for an unknown worker class.
func checkClass(class string) error {
	_, _, err := ForCPUs(class, 1)
	return err
}

// ForCPUs returns the worker count for class on cpus CPUs, and the formula as text.
func ForCPUs(class string, cpus float64) (int, string, error) {
	c := FormatCPUs(cpus)
	switch class {
	case "sync":
		n := int(math.Floor(2*cpus + 1 + 0.5)) // round half up
		if n < 2 {
			return 2, "2*" + c + "+1, at least 2", nil
		}
		return n, "2*" + c + "+1", nil
	case "gthread", "gevent", "eventlet", "asgi":
		n := int(math.Ceil(cpus - 1e-9)) // a quota of 100000/100000 is exactly 1
		if n < 1 {
			return 1, "ceil(" + c + "), at least 1", nil
		}
		return n, "ceil(" + c + ")", nil
	default:
		return 0, "", fmt.Errorf("sizing %q workers: %w (want sync, gthread, gevent, eventlet or asgi)", class, ErrUnknownClass)
	}
}

// MemoryFit returns how many workers of workerBytes each fit in MemoryShare of limit once
// fixedBytes (the master, and what the workers share) are taken out; at least 1.
// workerBytes must be positive.
func MemoryFit(limit, fixedBytes, workerBytes int64) int {
	n := math.Floor((MemoryShare*float64(limit) - float64(fixedBytes)) / float64(workerBytes))
	return int(max(1, min(n, math.MaxInt32)))
}

// ParseCPUs parses a CPU count given as a decimal ("1.5") or, as Kubernetes writes
// quantities, in millicores ("1500m").
func ParseCPUs(s string) (float64, error) {
	t := strings.TrimSpace(s)
	scale := 1.0
	if m, ok := strings.CutSuffix(t, "m"); ok {
		t, scale = m, 1000
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("parsing CPU count %q: want a positive number such as 1.5 or 1500m", s)
	}
	return v / scale, nil
}

// ParseBytes parses a memory size: a whole number of bytes ("536870912"), or a number with
// a unit K, M, G or T, each 1024 times the one before, spelled with or without "i" and "B"
// ("512M", "512MiB", "512Mi", "1.5G", "1.5GB"); case does not matter.
func ParseBytes(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "B")
	t = strings.TrimSuffix(t, "I")
	scale := 1.0
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGT", t[n-1]); i >= 0 {
			scale = math.Pow(1024, float64(i+1))
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) || v*scale >= math.MaxInt64 {
		return 0, fmt.Errorf("parsing memory size %q: want bytes or a number with K, M, G or T, such as 512M or 1.5GiB", s)
	}
	return int64(math.Round(v * scale)), nil
}

// FormatCPUs prints a CPU count with at most three decimals: 1.5, 2, 0.333.
func FormatCPUs(c float64) string {
	return strconv.FormatFloat(math.Round(c*1000)/1000, 'f', -1, 64)
}

// FormatBytes prints a byte count in binary units with at most one decimal: 512MiB, 1.5GiB.
func FormatBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64) + units[i]
}

// fitCount says "1 worker fits" or "2 workers fit".
func fitCount(n int) string {
	if n == 1 {
		return "1 worker fits"
	}
	return strconv.Itoa(n) + " workers fit"
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
