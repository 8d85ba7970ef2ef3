package sizing

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ReadPSS returns the proportional set size of process pid (0 = the caller) in bytes,
// from the Pss line of <procRoot>/<pid>/smaps_rollup (Linux >= 4.14). procRoot "" means
// "/proc". PSS charges each shared page to its sharers in proportion, which is the fair
// per-worker footprint for workers that share libraries.
func ReadPSS(procRoot string, pid int) (int64, error) {
	return readKB(procRoot, pid, "smaps_rollup", "Pss:")
}

// ReadRSS returns the resident set size of process pid (0 = the caller) in bytes, from
// the VmRSS line of <procRoot>/<pid>/status. procRoot "" means "/proc".
func ReadRSS(procRoot string, pid int) (int64, error) {
	return readKB(procRoot, pid, "status", "VmRSS:")
}

// readKB finds the line "<key> <n> kB" in a /proc file and returns n*1024.
func readKB(procRoot string, pid int, file, key string) (int64, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	dir := "self"
	if pid != 0 {
		dir = strconv.Itoa(pid)
	}
	f := filepath.Join(procRoot, dir, file)
	b, err := os.ReadFile(f)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", f, err)
	}
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, key)
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("reading %s: malformed %s line %q", f, key, strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || kb < 0 {
			return 0, fmt.Errorf("reading %s: malformed %s line %q", f, key, strings.TrimSpace(line))
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("reading %s: no %s line", f, key)
}
