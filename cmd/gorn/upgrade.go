package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/internal/scoreboard"
	"github.com/gornhq/gorn/internal/upgrade"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/socket"
	"github.com/gornhq/gorn/worker"
)

// The USR2 binary upgrade, wired (the protocol and why it is built so: internal/upgrade).

// inherited is the state adopted from a previous image of this master.
type inherited struct {
	listeners []*socket.Listener
	board     *scoreboard.Board
	lifeline  [2]*os.File
	handover  master.Handover
	// rolledBack is why this binary is back after a failed upgrade ("" after a good one).
	rolledBack string
	// stops are the stop signals the failed image received, to act on.
	stops []syscall.Signal
	// gone are handed-over workers that are no longer this process's children: reaped
	// while the handover was in flight (by a new image that then failed), so no exit
	// will ever report them.
	gone []int
}

// adoptUpgrade reads the handover, if present, and unsets it.
func adoptUpgrade(getenv func(string) string) (*inherited, error) {
	raw := getenv(upgrade.EnvState)
	if raw == "" {
		return nil, nil
	}
	os.Unsetenv(upgrade.EnvState)
	st, err := upgrade.Decode(raw)
	if err != nil {
		return nil, err
	}
	in := &inherited{handover: st.Handover}
	in.handover.Workers = nil
	// A /proc of another PID namespace would make every worker look gone: trust it
	// only when it knows this process by its pid.
	self, _ := os.Readlink("/proc/self")
	procIsOurs := self == strconv.Itoa(os.Getpid())
	for _, w := range st.Handover.Workers {
		if !procIsOurs || parentOf(w.Pid) == os.Getpid() {
			in.handover.Workers = append(in.handover.Workers, w)
			if w.FaultFD > 0 {
				unix.CloseOnExec(w.FaultFD)
			}
		} else {
			in.gone = append(in.gone, w.Pid)
			if w.FaultFD > 0 {
				unix.Close(w.FaultFD)
			}
		}
	}
	if rb := getenv(upgrade.EnvRolledBack); rb != "" {
		os.Unsetenv(upgrade.EnvRolledBack)
		why := upgrade.DecodeRolledBack(rb)
		in.rolledBack, in.stops = why.Reason, why.Stops
	}
	addrs := make([]socket.Address, len(st.Listeners))
	for i, fd := range st.Listeners {
		a, err := socket.ParseAddress("fd://" + strconv.Itoa(fd))
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	ls, err := socket.Bind(addrs, socket.Options{})
	if err != nil {
		return nil, fmt.Errorf("adopting listeners after upgrade: %w", err)
	}
	in.listeners = ls
	for i, fd := range []int{st.Board, st.Lifeline[0], st.Lifeline[1]} {
		unix.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "inherited")
		if i == 0 {
			if in.board, err = scoreboard.Map(f); err != nil {
				return nil, err
			}
		} else {
			in.lifeline[i-1] = f
		}
	}
	return in, nil
}

// parentOf is pid's parent from /proc/PID/stat, or 0. A child that exited but was not
// reaped yet is still there, with its parent.
func parentOf(pid int) int {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses: cut at the last ')'.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// upgrader runs the pre-flight and re-executes the master binary in place on USR2.
type upgrader struct {
	path      string // the binary, resolved at start-up (the file may have been replaced since)
	args      []string
	spawner   *worker.Spawner
	children  *worker.Reaper
	listeners []*socket.Listener
	board     *scoreboard.Board
}

// preflight runs the new binary with the same arguments and --check-config; it is the
// master's Preflight hook and runs off the loop.
func (u *upgrader) preflight() error {
	args := append([]string{u.path, "--check-config"}, u.args[1:]...)
	env := append(upgrade.CleanEnv(os.Environ()), upgrade.EnvFormats+"="+upgrade.Formats())
	res, err := runChild(u.children, u.spawner.Thread(), childCmd{path: u.path, args: args, env: env, timeout: upgrade.PreflightTimeout})
	if err != nil {
		return fmt.Errorf("pre-flight of %s: %w", u.path, err)
	}
	if !res.status.Exited() || res.status.ExitStatus() != 0 {
		return fmt.Errorf("pre-flight of %s --check-config: %s: %s", u.path, exitStatus(res.status), lastLines(res.output, 5))
	}
	return nil
}

// upgrade execs the binary at u.path with the same arguments; it returns only on failure.
// execve runs on the spawner's thread (the main thread; see worker.Thread).
func (u *upgrader) upgrade(h master.Handover) error {
	// The workers' stack-dump pipes go along, held open until the exec, so the new image
	// logs the dumps of the workers it adopts.
	return u.spawner.HoldFaults(func(faults map[int]int) error {
		for i := range h.Workers {
			h.Workers[i].FaultFD = faults[h.Workers[i].Pid]
		}
		return u.exec(h)
	})
}

// exec re-executes the binary with h handed over; it returns only on failure.
func (u *upgrader) exec(h master.Handover) error {
	lr, lw := u.spawner.Lifeline()
	st := upgrade.State{Version: upgrade.StateVersion, Scoreboard: scoreboard.Version,
		Board: int(u.board.File().Fd()), Lifeline: [2]int{int(lr.Fd()), int(lw.Fd())}, Handover: h}
	for _, l := range u.listeners {
		st.Listeners = append(st.Listeners, l.Fd())
	}
	// Not close-on-exec: the new image inherits it (and closes it once it serves).
	exe, err := unix.Open("/proc/self/exe", unix.O_PATH, 0)
	if err != nil {
		return fmt.Errorf("keeping a handle on the running binary: %w", err)
	}
	defer unix.Close(exe)
	fds := st.Fds()
	env, err := upgrade.Env(os.Environ(), st, upgrade.Rollback{Exe: exe, Args: u.args, Fds: fds})
	if err != nil {
		return err
	}
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("keeping fd %d across exec: %w", fd, err)
		}
	}
	u.spawner.Thread().Do(func() { err = syscall.Exec(u.path, u.args, env) })
	for _, fd := range fds {
		unix.CloseOnExec(fd)
	}
	return fmt.Errorf("re-executing %s: %w", u.path, err)
}

// lastLines is the end of a child's output, on one line, for a log field.
func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
