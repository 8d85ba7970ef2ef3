package cgroup

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// memoryLimit returns the tightest memory limit on the walk from c.Dir up to c.Mount, or
// nil. v2 counts memory.max and memory.high; v1 counts memory.limit_in_bytes and, at the
// process's own cgroup, memory.stat's hierarchical_memory_limit, which the kernel computes
// over all ancestors, including those above the mount that a container cannot see.
func (r reader) memoryLimit(c Controller, l *Limits) *MemoryLimit {
	if c.Dir == "" {
		return nil
	}
	var best *MemoryLimit
	consider := func(m *MemoryLimit, err error) {
		if err != nil {
			l.note("ignoring %v", err)
			return
		}
		if m != nil && (best == nil || m.Bytes < best.Bytes) {
			best = m
		}
	}
	walk(c, func(dir string) {
		if c.Version == V1 {
			consider(r.bytesFile(path.Join(dir, "memory.limit_in_bytes"), V1, l))
			return
		}
		consider(r.bytesFile(path.Join(dir, "memory.max"), V2, l))
		consider(r.bytesFile(path.Join(dir, "memory.high"), V2, l))
	})
	if c.Version == V1 {
		consider(r.statLimit(path.Join(c.Dir, "memory.stat"), l))
	}
	return best
}

// bytesFile reads a file holding a byte count or "max"; "max", values >= Unlimited and a
// missing file mean no limit (nil).
func (r reader) bytesFile(f string, version int, l *Limits) (*MemoryLimit, error) {
	s, ok := r.value(f, l)
	if !ok || s == "max" {
		return nil, nil
	}
	return limitFrom(f, s, version)
}

// statLimit reads hierarchical_memory_limit from a v1 memory.stat.
func (r reader) statLimit(f string, l *Limits) (*MemoryLimit, error) {
	s, ok := r.value(f, l)
	if !ok {
		return nil, nil
	}
	v, ok := field(s, "hierarchical_memory_limit")
	if !ok {
		return nil, nil
	}
	return limitFrom(f, v, V1)
}

func limitFrom(f, s string, version int) (*MemoryLimit, error) {
	n, err := parseInt(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	if n < 0 {
		return nil, fmt.Errorf("%s: negative limit %d", f, n)
	}
	if n >= Unlimited {
		return nil, nil
	}
	return &MemoryLimit{Bytes: n, Version: version, File: f}, nil
}

// field returns the value of the "key value" line in a flat-keyed file such as
// memory.stat, memory.events or memory.oom_control.
func field(text, key string) (string, bool) {
	for line := range strings.Lines(text) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && k == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// ErrNoOOMCounter means the process's memory cgroup has no OOM kill counter to read:
// no memory controller, a cgroup that is not visible, or a kernel older than 4.13 (v1).
var ErrNoOOMCounter = errors.New("no memory cgroup OOM kill counter")

// OOMCount is the number of processes the kernel OOM-killed in a memory cgroup (and its
// descendants), and the file it was read from.
type OOMCount struct {
	Kills int64
	File  string // memory.events (v2) or memory.oom_control (v1)
}

// OOMKills reads the OOM kill counter of the memory cgroup of the process chosen by opts:
// the oom_kill line of memory.events (v2) or memory.oom_control (v1). The kernel counts a
// kill in the victim's cgroup and its ancestors, for cgroup and system-wide OOMs alike.
//
// A supervisor reads it at start and again when a worker dies of SIGKILL: if the count
// went up, the kernel's OOM killer did it. Errors wrap ErrNoOOMCounter when there is no
// counter to read.
func OOMKills(opts Options) (OOMCount, error) {
	r := reader{root: opts.Root}
	var l Limits
	cgroups, mounts := r.cgroupsAndMounts(opts.PID, &l)
	c := r.resolve(cgroups, mounts, "memory", &l)
	if c.Dir == "" {
		return OOMCount{}, fmt.Errorf("finding the memory cgroup: %w: %s", ErrNoOOMCounter,
			strings.Join(append(l.Notes, "not found"), "; "))
	}
	f := path.Join(c.Dir, "memory.events")
	if c.Version == V1 {
		f = path.Join(c.Dir, "memory.oom_control")
	}
	b, err := r.readFile(f)
	if err != nil {
		return OOMCount{}, fmt.Errorf("reading %s: %w: %w", f, ErrNoOOMCounter, err)
	}
	v, ok := field(string(b), "oom_kill")
	if !ok {
		return OOMCount{}, fmt.Errorf("reading %s: %w: no oom_kill line", f, ErrNoOOMCounter)
	}
	n, err := parseInt(v)
	if err != nil {
		return OOMCount{}, fmt.Errorf("reading %s: %w", f, err)
	}
	return OOMCount{Kills: n, File: f}, nil
}
