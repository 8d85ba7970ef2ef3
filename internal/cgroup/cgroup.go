// Package cgroup detects the CPU and memory limits that apply to a process: the CPU quota
// and memory limit of its cgroup and every visible ancestor (cgroup v1, v2 and hybrid
// hosts), and the CPUs in its affinity mask. It also reads the memory cgroup's OOM kill
// counter, so a supervisor can tell an OOM kill from other SIGKILLs.
//
// Every reader takes a filesystem root (Options.Root), so tests run on fixture trees. A
// missing file means "no limit from here"; a file that cannot be read or parsed is skipped
// and reported in Limits.Notes, never a failure.
//
// How a cgroup directory is found (the same method as the Go runtime):
//
//   - /proc/PID/cgroup lists "ID:controllers:path". A v1 line whose controller list holds
//     "cpu" (or "memory") wins over the v2 "0::path" line: on hybrid hosts the v1
//     controller is the one in effect.
//   - /proc/self/mountinfo gives the mount of that hierarchy (a "cgroup" mount with the
//     controller among its super options, or the "cgroup2" mount) whose root field is a
//     prefix of the path. The directory is the mount point plus the path minus the root.
//     This covers containers with a cgroup namespace (root "/") and without one (root
//     "/kubepods/..."). A path starting with "/.." lies outside the namespace: not visible.
//   - The walk goes from that directory up to the mount point; the tightest limit wins,
//     because a parent's limit binds its children.
package cgroup

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Cgroup versions, as reported in Controller, CPUQuota and MemoryLimit.
const (
	V1 = 1
	V2 = 2
)

// Unlimited is the threshold at and above which a v1 (or v2) byte limit means "no limit";
// v1 reports an unset limit as a page-rounded 2^63-1, e.g. 9223372036854771712.
const Unlimited = int64(1) << 62

// Options says whose limits to detect and through which filesystem.
type Options struct {
	// Root is the filesystem root that /proc and /sys are read under; "" means "/".
	Root string
	// PID is the process whose cgroup is used (/proc/PID/cgroup); 0 means the current
	// process (/proc/self/cgroup). Mounts are always read from /proc/self/mountinfo: both
	// files are then seen from the caller's cgroup and mount namespaces, as the kernel
	// prints /proc/PID/cgroup paths relative to the reader's cgroup namespace.
	PID int
	// Affinity returns the number of CPUs in the affinity mask of pid (0 = the caller);
	// nil means sched_getaffinity(2).
	Affinity func(pid int) (int, error)
}

// Controller says where a controller's cgroup was found for the process.
type Controller struct {
	Version int    // V1 or V2; 0 when the controller's cgroup was not found
	Path    string // the cgroup path from /proc/PID/cgroup, e.g. "/kubepods/pod1/c1"
	Mount   string // the hierarchy's mount point, where the walk stops
	Dir     string // the process's own cgroup directory
}

// CPUQuota is a CFS bandwidth limit: Quota microseconds of CPU time per Period.
type CPUQuota struct {
	Quota   int64  // microseconds per period
	Period  int64  // microseconds
	Version int    // V1 or V2
	File    string // cpu.cfs_quota_us or cpu.max it was read from
}

// CPUs returns the quota as a number of CPUs, e.g. 1.5 for 150000/100000.
func (q CPUQuota) CPUs() float64 { return float64(q.Quota) / float64(q.Period) }

// String describes the quota and its origin, e.g.
// "150000/100000 from cgroup v1 /sys/fs/cgroup/cpu/x/cpu.cfs_quota_us".
func (q CPUQuota) String() string {
	return fmt.Sprintf("%d/%d from cgroup v%d %s", q.Quota, q.Period, q.Version, q.File)
}

// MemoryLimit is a memory limit in bytes.
type MemoryLimit struct {
	Bytes   int64
	Version int    // V1 or V2
	File    string // memory.max, memory.high, memory.limit_in_bytes or memory.stat
}

// String describes the limit and its origin, e.g.
// "536870912 bytes from cgroup v2 /sys/fs/cgroup/memory.max".
func (m MemoryLimit) String() string {
	return fmt.Sprintf("%d bytes from cgroup v%d %s", m.Bytes, m.Version, m.File)
}

// Limits is what Detect found.
type Limits struct {
	// Affinity is the number of CPUs the process may run on (sched_getaffinity, which
	// already reflects cpusets). Detect falls back to runtime.NumCPU if it fails.
	Affinity int
	CPU      Controller
	CPUQuota *CPUQuota // nil: no quota on the process's cgroup or its visible ancestors
	// CPUAcct is the v1 cpuacct controller's cgroup, where the CPU time is counted (the
	// same directory as CPU when the two are co-mounted); on v2, the same as CPU.
	CPUAcct Controller
	Memory  Controller
	// MemoryLimit is the tightest limit: nil when there is none (or it is >= Unlimited).
	MemoryLimit *MemoryLimit
	// Notes lists files that exist but could not be read or parsed, and other reasons
	// a limit may be missing. They are for logs; none of them is fatal.
	Notes []string
}

// CPUs returns min(Affinity, quota): the CPU capacity available to the process.
// With neither known it returns 0.
func (l Limits) CPUs() float64 {
	cpus := float64(l.Affinity)
	if l.CPUQuota != nil && (cpus <= 0 || l.CPUQuota.CPUs() < cpus) {
		cpus = l.CPUQuota.CPUs()
	}
	return cpus
}

// Detect returns the CPU and memory limits that apply to the process chosen by opts.
// It never fails: whatever cannot be read counts as "no limit" and is explained in Notes.
func Detect(opts Options) Limits {
	r := reader{root: opts.Root}
	var l Limits

	affinity := opts.Affinity
	if affinity == nil {
		affinity = schedAffinity
	}
	n, err := affinity(opts.PID)
	if err != nil || n <= 0 {
		l.Affinity = runtime.NumCPU()
		l.note("reading CPU affinity: %v; using runtime.NumCPU() = %d", orInvalid(err, n), l.Affinity)
	} else {
		l.Affinity = n
	}

	cgroups, mounts := r.cgroupsAndMounts(opts.PID, &l)
	l.CPU = r.resolve(cgroups, mounts, "cpu", &l)
	var quiet Limits // cpuacct only feeds the CPU usage metric: its absence is no note
	l.CPUAcct = r.resolve(cgroups, mounts, "cpuacct", &quiet)
	l.Memory = r.resolve(cgroups, mounts, "memory", &l)
	l.CPUQuota = r.cpuQuota(l.CPU, &l)
	l.MemoryLimit = r.memoryLimit(l.Memory, &l)
	return l
}

func orInvalid(err error, n int) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("invalid CPU count %d", n)
}

func (l *Limits) note(format string, args ...any) {
	l.Notes = append(l.Notes, fmt.Sprintf(format, args...))
}

// reader reads files under a filesystem root. Paths handed to it and reported to callers
// are the paths as the process sees them (e.g. /sys/fs/cgroup/cpu.max), without the root.
type reader struct {
	root string
}

func (r reader) readFile(p string) ([]byte, error) {
	root := r.root
	if root == "" {
		root = "/"
	}
	return os.ReadFile(filepath.Join(root, filepath.FromSlash(p)))
}

// value reads a small file and returns its trimmed text. found is false when the file does
// not exist (the common "no limit from here"); other errors are added to l.Notes.
func (r reader) value(p string, l *Limits) (text string, found bool) {
	b, err := r.readFile(p)
	if err != nil {
		if !os.IsNotExist(err) {
			l.note("reading %s: %v", p, err)
		}
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// procPath returns /proc/self/<name> or /proc/<pid>/<name>.
func procPath(pid int, name string) string {
	if pid == 0 {
		return path.Join("/proc/self", name)
	}
	return path.Join("/proc", strconv.Itoa(pid), name)
}

// walk calls visit for dir and each ancestor up to and including mount.
func walk(c Controller, visit func(dir string)) {
	for d := c.Dir; ; d = path.Dir(d) {
		visit(d)
		if d == c.Mount || d == "/" || d == "." {
			return
		}
	}
}

// parseInt parses a decimal int64.
func parseInt(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing %q: %w", s, err)
	}
	return n, nil
}

// less reports whether CPU ratio a/b is tighter than c/d.
func less(a, b, c, d int64) bool {
	return float64(a)/float64(b) < float64(c)/float64(d)
}
