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
