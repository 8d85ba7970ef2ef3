package sizing

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Load is what the workers did over one resize interval.
type Load struct {
	Workers  int           // workers measured over the whole interval
	Interval time.Duration // the interval
	Busy     time.Duration // their summed time serving requests (scoreboard duration sums)
	CPU      time.Duration // their summed CPU time (user + system)
}

// Thresholds of Adapt: a pool busier than AddBusy that leaves more than 1-AddCPU of the CPUs
// idle is waiting, not computing; one idler than RemoveBusy has workers to spare.
const (
	AddBusy    = 0.85
	AddCPU     = 0.75
	RemoveBusy = 0.40
)

// SyncCeiling is how far Adapt may take a sync pool: 4*cpus+1. An app that waits even more
// is better served by threads (-k gthread) than by more processes.
func SyncCeiling(cpus float64) int { return int(math.Ceil(4*cpus)) + 1 }

// Adapt moves a sync pool one worker at a time from the CPU rule's base count toward what
// the load shows. The rule, 2*cpus+1, fits requests that wait about as long as they
// compute; when the workers are nearly always busy yet use little of the CPUs, requests
// are waiting on I/O and one more worker adds throughput (up to ceiling: memory, --max-
// workers, SyncCeiling). When the workers are mostly idle, it steps back toward base.
// It returns the new count and, when it changes, why.
func Adapt(current, base, ceiling int, cpus float64, l Load) (int, string) {
	if l.Workers <= 0 || l.Interval <= 0 || cpus <= 0 {
		return current, ""
	}
	busy := float64(l.Busy) / (float64(l.Workers) * float64(l.Interval))
	cpu := float64(l.CPU) / (cpus * float64(l.Interval))
	load := fmt.Sprintf("workers busy %.0f%% of the time, using %.0f%% of %s CPUs", 100*busy, 100*cpu, FormatCPUs(cpus))
	switch {
	case busy >= AddBusy && cpu < AddCPU && current < ceiling:
		return current + 1, load + ": requests wait on I/O; one more worker"
	case busy < RemoveBusy && current > base:
		return current - 1, load + ": one worker fewer, toward the CPU rule's " + strconv.Itoa(base)
	}
	return current, ""
}

// ReadCPUTime returns the CPU time (user + system) process pid has used, from
// <procRoot>/<pid>/stat. procRoot "" means "/proc".
func ReadCPUTime(procRoot string, pid int) (time.Duration, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	f := filepath.Join(procRoot, strconv.Itoa(pid), "stat")
	b, err := os.ReadFile(f)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", f, err)
	}
	// The command name (field 2) may hold spaces and parentheses: fields count from the
	// last ')'. utime and stime are fields 14 and 15, in USER_HZ (100 on Linux) ticks.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("reading %s: too few fields", f)
	}
	var ticks int64
	for _, v := range fields[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("reading %s: %w", f, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / 100), nil
}
