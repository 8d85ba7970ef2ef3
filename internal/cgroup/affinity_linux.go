package cgroup

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// schedAffinity counts the CPUs in pid's affinity mask (0 = the calling thread).
func schedAffinity(pid int) (int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &set); err != nil {
		return 0, fmt.Errorf("sched_getaffinity(%d): %w", pid, err)
	}
	return set.Count(), nil
}
