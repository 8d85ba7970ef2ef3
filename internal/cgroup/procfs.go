package cgroup

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// membership is one line of /proc/PID/cgroup: "ID:controllers:path".
type membership struct {
	controllers []string // empty for the v2 line "0::path"
	path        string
}

// mount is the part of a /proc/self/mountinfo line that locates a cgroup hierarchy.
type mount struct {
	root      string // the mounted directory inside the hierarchy
	point     string // where it is mounted
	fstype    string // "cgroup" or "cgroup2"
	superOpts []string
}

// cgroupsAndMounts reads /proc/PID/cgroup and /proc/self/mountinfo. Unreadable files and
// malformed lines are noted in l and skipped.
func (r reader) cgroupsAndMounts(pid int, l *Limits) ([]membership, []mount) {
	var cgroups []membership
	p := procPath(pid, "cgroup")
	if b, err := r.readFile(p); err != nil {
		l.note("reading %s: %v", p, err)
	} else {
		for line := range strings.Lines(string(b)) {
			m, err := parseMembership(strings.TrimRight(line, "\n"))
			if err != nil {
				l.note("%s: %v", p, err)
				continue
			}
			cgroups = append(cgroups, m)
		}
	}

	var mounts []mount
	p = "/proc/self/mountinfo"
	if b, err := r.readFile(p); err != nil {
		l.note("reading %s: %v", p, err)
	} else {
		for line := range strings.Lines(string(b)) {
			m, ok, err := parseMountinfo(strings.TrimRight(line, "\n"))
			if err != nil {
				l.note("%s: %v", p, err)
				continue
			}
			if ok {
				mounts = append(mounts, m)
			}
		}
	}
	return cgroups, mounts
}

// parseMembership parses "4:memory:/kubepods/pod1" or "0::/user.slice".
func parseMembership(line string) (membership, error) {
	id, rest, ok1 := strings.Cut(line, ":")
	list, p, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || id == "" || !strings.HasPrefix(p, "/") {
		return membership{}, fmt.Errorf("parsing cgroup line %q: want ID:controllers:/path", line)
	}
	m := membership{path: strings.TrimSuffix(p, " (deleted)")}
	if list != "" {
		m.controllers = strings.Split(list, ",")
	}
	return m, nil
}

// parseMountinfo parses a mountinfo line; ok is false for mounts that are not cgroups.
// Format: "ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS".
func parseMountinfo(line string) (m mount, ok bool, err error) {
	f := strings.Fields(line)
	sep := slices.Index(f, "-")
	if len(f) < 5 || sep < 6 || sep+3 >= len(f) {
		if strings.TrimSpace(line) == "" {
			return mount{}, false, nil
		}
		return mount{}, false, fmt.Errorf("parsing mountinfo line %q: too few fields", line)
	}
	fstype := f[sep+1]
	if fstype != "cgroup" && fstype != "cgroup2" {
		return mount{}, false, nil
	}
	return mount{
		root:      unescapeOctal(f[3]),
		point:     unescapeOctal(f[4]),
		fstype:    fstype,
		superOpts: strings.Split(f[sep+3], ","),
	}, true, nil
}

// unescapeOctal undoes mountinfo's escaping of space, tab, newline and backslash as \ooo.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// resolve finds the cgroup directory of controller ("cpu" or "memory"): a v1 membership
// listing the controller wins over the v2 one.
func (r reader) resolve(cgroups []membership, mounts []mount, controller string, l *Limits) Controller {
	var c Controller
	for _, m := range cgroups {
		if slices.Contains(m.controllers, controller) {
			c = Controller{Version: V1, Path: m.path}
			break
		}
		if len(m.controllers) == 0 && c.Version == 0 {
			c = Controller{Version: V2, Path: m.path}
		}
	}
	if c.Version == 0 {
		if len(cgroups) > 0 {
			l.note("no %s cgroup listed for the process", controller)
		}
		return c
	}
	if c.Path == "/.." || strings.HasPrefix(c.Path, "/../") {
		l.note("%s cgroup %s is outside this cgroup namespace: not visible", controller, c.Path)
		return c
	}

	best := -1
	for i, m := range mounts {
		if c.Version == V1 && (m.fstype != "cgroup" || !slices.Contains(m.superOpts, controller)) ||
			c.Version == V2 && m.fstype != "cgroup2" {
			continue
		}
		if !within(c.Path, m.root) {
			continue
		}
		if best < 0 || len(m.root) > len(mounts[best].root) {
			best = i
		}
	}
	if best < 0 {
		l.note("no cgroup v%d mount for the %s cgroup %s in /proc/self/mountinfo", c.Version, controller, c.Path)
		return c
	}
	m := mounts[best]
	c.Mount = m.point
	c.Dir = path.Join(m.point, strings.TrimPrefix(c.Path, m.root))
	return c
}

// within reports whether cgroup path p is root or below it.
func within(p, root string) bool {
	if strings.HasPrefix(root, "/..") {
		return false
	}
	return root == "/" || p == root || strings.HasPrefix(p, root+"/")
}
