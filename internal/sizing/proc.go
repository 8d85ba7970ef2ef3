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

// Footprint is a process's memory, from /proc/PID/smaps_rollup.
type Footprint struct {
	RSS int64 // resident set size: every page it maps, shared or not
	PSS int64 // proportional set size: each shared page divided among its sharers
	// USS is the unique set size: the pages only this process maps (Private_Clean +
	// Private_Dirty + Private_Hugetlb), which its exit frees. For a worker it is the
	// marginal cost of one more: pages shared with the other workers (the interpreter's
	// libraries, a preloaded app's copy-on-write heap) are not in it.
	USS int64
}

// ReadFootprint reads process pid's RSS, PSS and USS (0 = the caller) from one read of
// <procRoot>/<pid>/smaps_rollup (Linux >= 4.14). procRoot "" means "/proc". The Rss and
// Pss lines are required; a Private_* line that is missing counts 0.
func ReadFootprint(procRoot string, pid int) (Footprint, error) {
	var fp Footprint
	var private [3]int64
	want := map[string]*int64{"Rss:": &fp.RSS, "Pss:": &fp.PSS,
		"Private_Clean:": &private[0], "Private_Dirty:": &private[1], "Private_Hugetlb:": &private[2]}
	found, err := readKBs(procRoot, pid, "smaps_rollup", want)
	if err != nil {
		return Footprint{}, err
	}
	for _, key := range []string{"Rss:", "Pss:"} {
		if !found[key] {
			return Footprint{}, fmt.Errorf("reading %s: no %s line", procFile(procRoot, pid, "smaps_rollup"), key)
		}
	}
	fp.USS = private[0] + private[1] + private[2]
	return fp, nil
}

// MeasureMemory reads, with read, what the memory cap works from (Memory, without Master):
// the workers' footprints (the largest USS is the marginal cost of one more; their PSS -
// USS is what they share) and the PSS of others, gorn's other processes. Processes that
// cannot be read (exited) are skipped; with no worker read, the result is zero.
func MeasureMemory(read func(pid int) (Footprint, error), workers, others []int) Memory {
	var mem Memory
	for _, pid := range workers {
		fp, err := read(pid)
		if err != nil || fp.USS <= 0 {
			continue
		}
		mem.Shared += max(fp.PSS-fp.USS, 0)
		mem.WorkerUSS, mem.WorkerPSS = max(mem.WorkerUSS, fp.USS), max(mem.WorkerPSS, fp.PSS)
		mem.WorkerFrom = "measured"
	}
	if mem.WorkerUSS == 0 {
		return Memory{}
	}
	for _, pid := range others {
		if fp, err := read(pid); err == nil {
			mem.Others += fp.PSS
		}
	}
	return mem
}

// ReadRSS returns the resident set size of process pid (0 = the caller) in bytes, from
// the VmRSS line of <procRoot>/<pid>/status. procRoot "" means "/proc".
func ReadRSS(procRoot string, pid int) (int64, error) {
	return readKB(procRoot, pid, "status", "VmRSS:")
}

// readKB finds the line "<key> <n> kB" in a /proc file and returns n*1024.
func readKB(procRoot string, pid int, file, key string) (int64, error) {
	var v int64
	found, err := readKBs(procRoot, pid, file, map[string]*int64{key: &v})
	if err == nil && !found[key] {
		err = fmt.Errorf("reading %s: no %s line", procFile(procRoot, pid, file), key)
	}
	return v, err
}

// readKBs reads the lines "<key> <n> kB" of a /proc file for each key of want, storing
// n*1024; it reports which keys it found.
func readKBs(procRoot string, pid int, file string, want map[string]*int64) (map[string]bool, error) {
	f := procFile(procRoot, pid, file)
	b, err := os.ReadFile(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f, err)
	}
	found := make(map[string]bool, len(want))
	for line := range strings.Lines(string(b)) {
		name, rest, ok := strings.Cut(line, ":")
		key := name + ":"
		dst := want[key]
		if !ok || dst == nil || found[key] {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return nil, fmt.Errorf("reading %s: malformed %s line %q", f, key, strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || kb < 0 {
			return nil, fmt.Errorf("reading %s: malformed %s line %q", f, key, strings.TrimSpace(line))
		}
		*dst, found[key] = kb*1024, true
	}
	return found, nil
}

// procFile is <procRoot>/<pid>/<file>; procRoot "" is "/proc" and pid 0 is "self".
func procFile(procRoot string, pid int, file string) string {
	if procRoot == "" {
		procRoot = "/proc"
	}
	dir := "self"
	if pid != 0 {
		dir = strconv.Itoa(pid)
	}
	return filepath.Join(procRoot, dir, file)
}
