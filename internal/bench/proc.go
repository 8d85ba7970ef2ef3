package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gornhq/gorn/internal/sizing"
)

// tree lists pid and all its descendants from /proc. Every thread has its own children
// file (gorn forks workers from a dedicated thread), so all of them are read.
func tree(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", out[i]))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, s := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(s); err == nil && !slices.Contains(out, c) {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// treeCPU is the CPU time the processes used so far; processes that are gone count 0.
func treeCPU(pids []int) time.Duration {
	var sum time.Duration
	for _, p := range pids {
		if d, err := sizing.ReadCPUTime("", p); err == nil {
			sum += d
		}
	}
	return sum
}

// treePSS is the processes' proportional set size in all: shared pages (the
// interpreter, a preloaded app) count once across them, as the kernel charges them.
func treePSS(pids []int) int64 {
	var sum int64
	for _, p := range pids {
		if n, err := sizing.ReadPSS("", p); err == nil {
			sum += n
		}
	}
	return sum
}

// machineBusyTime is the CPU time all CPUs of the machine spent busy so far (/proc/stat's
// first line: everything but idle and iowait), to tell how much other processes took.
func machineBusyTime() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 8 { // idle, iowait; guest time is already in user
			busy += n
		}
	}
	return time.Duration(busy) * (time.Second / 100) // USER_HZ
}
