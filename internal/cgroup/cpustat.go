package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// CPUStat is a CPU cgroup's cumulative accounting: the CFS periods it ran in, those in
// which its quota ran out (throttled), the time it lost to that, and its CPU time.
type CPUStat struct {
	// Throttling is false when the group keeps no CFS counters (v2 without the cpu
	// controller enabled, or no cpu.stat at all); the three fields below are then 0.
	Throttling    bool
	Periods       int64
	Throttled     int64
	ThrottledTime time.Duration
	// UsageOK is false when the group keeps no CPU time (v1 without cpuacct co-mounted).
	UsageOK bool
	Usage   time.Duration
}

// ReadCPUStat reads the counters of the CPU cgroup directory dir (version V1 or V2): v1's
// cpu.stat (nr_periods, nr_throttled, throttled_time in ns) and acctDir's cpuacct.usage
// (acctDir is the cpuacct cgroup, dir itself when co-mounted, "" for none); v2's cpu.stat
// (the same counts, throttled_usec, usage_usec). A group with neither file is an error
// wrapping os.ErrNotExist.
func ReadCPUStat(version int, dir, acctDir string) (CPUStat, error) {
	var s CPUStat
	b, statErr := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if statErr == nil {
		text := string(b)
		var err error
		if s.Periods, s.Throttling, err = statInt(text, "nr_periods"); err != nil {
			return s, fmt.Errorf("reading %s: %w", dir, err)
		}
		s.Throttled, _, _ = statInt(text, "nr_throttled")
		if version == V2 {
			us, _, _ := statInt(text, "throttled_usec")
			s.ThrottledTime = time.Duration(us) * time.Microsecond
			us, s.UsageOK, _ = statInt(text, "usage_usec")
			s.Usage = time.Duration(us) * time.Microsecond
		} else {
			ns, _, _ := statInt(text, "throttled_time")
			s.ThrottledTime = time.Duration(ns)
		}
	}
	if version == V1 {
		if acctDir == "" {
			acctDir = dir
		}
		b, err := os.ReadFile(filepath.Join(acctDir, "cpuacct.usage"))
		if err == nil {
			ns, perr := parseInt(strings.TrimSpace(string(b)))
			if perr != nil {
				return s, fmt.Errorf("reading %s/cpuacct.usage: %w", acctDir, perr)
			}
			s.Usage, s.UsageOK = time.Duration(ns), true
		} else if statErr != nil {
			return s, fmt.Errorf("reading the CPU counters of %s: %w", dir, errors.Join(statErr, err))
		}
	} else if statErr != nil {
		return s, fmt.Errorf("reading the CPU counters of %s: %w", dir, statErr)
	}
	return s, nil
}

// statInt returns the value of a "key N" line of a cgroup stat file.
func statInt(text, key string) (n int64, found bool, err error) {
	v, ok := field(text, key)
	if !ok {
		return 0, false, nil
	}
	n, err = parseInt(v)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %w", key, err)
	}
	return n, true, nil
}
