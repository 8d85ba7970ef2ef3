package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/internal/scoreboard"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/socket"
	"github.com/gornhq/gorn/worker"
)

// A USR2 binary upgrade, and the way back.
//
// The master re-executes itself in place, so its PID survives: as PID 1 of a container
// there is no other way (a new master in a child process would die with the old PID 1,
// or leave the new code running under the old image forever). In-place means a new
// binary that fails after execve takes the PID, and with it every worker, down. So:
//
//  1. Pre-flight, off the master loop: the new binary runs with the same arguments and
//     --check-config (it parses them, evaluates the config file and imports the app in
//     a worker), and with GORN_UPGRADE_FORMATS naming the handover and scoreboard
//     formats it must read. Any failure refuses the upgrade; nothing has been handed
//     over and the old master carries on.
//  2. Exec: the handover (listeners, scoreboard, lifeline, worker table: GORN_UPGRADE,
//     versioned) and the way back (GORN_UPGRADE_ROLLBACK: an O_PATH descriptor of the
//     running binary, opened through /proc/self/exe so a binary replaced on disk is no
//     matter, and the old arguments) survive execve.
//  3. The new image's main duplicates every descriptor of the handover before anything
//     else and arms a deadline. If its master loop does not answer within
//     upgradeReadyTimeout, or run returns or panics first, it puts the descriptors back
//     and re-executes the old binary with the original handover and the reason
//     (GORN_UPGRADE_ROLLED_BACK); the old binary adopts its workers without replacing
//     them and logs why. The workers never notice: they are children of the PID, they
//     keep accepting on the listeners throughout, so no request fails.
//
// The way back is in the new binary's own main, so it covers a gorn that fails or hangs
// before serving, not a binary that is not gorn or a fatal runtime error after the
// pre-flight passed: that is what the pre-flight is for. The rollback format
// (rollbackState) is frozen; the handover's may change with its version.

const (
	upgradeEnv    = "GORN_UPGRADE"             // the handover (upgradeState)
	rollbackEnv   = "GORN_UPGRADE_ROLLBACK"    // the way back (rollbackState)
	rolledBackEnv = "GORN_UPGRADE_ROLLED_BACK" // why the previous binary is back (rolledBack)
	formatsEnv    = "GORN_UPGRADE_FORMATS"     // pre-flight: formats the new binary must read

	// handoverVersion is upgradeState's format: bump it when a field changes meaning.
	handoverVersion = 1

	// upgradeReadyTimeout bounds the time from execve to a running master loop.
	upgradeReadyTimeout = 10 * time.Second
	// preflightTimeout bounds the new binary's --check-config (which imports the app).
	preflightTimeout = 2 * time.Minute
)

// upgradeState is what the re-executed master inherits: the fds survive execve, the
// workers are still its children (the PID does not change), and the table comes as JSON.
type upgradeState struct {
	Version    int             `json:"version"`
	Scoreboard int             `json:"scoreboard"`
	Listeners  []int           `json:"listeners"`
	Board      int             `json:"board"`
	Lifeline   [2]int          `json:"lifeline"`
	Handover   master.Handover `json:"handover"`
}

// rollbackState is the way back to the previous binary. Its format is frozen: every
// gorn binary from this one on reads it, whatever else changed.
type rollbackState struct {
	Exe  int      `json:"exe"`  // O_PATH descriptor of the previous binary
	Args []string `json:"args"` // its arguments
	Fds  []int    `json:"fds"`  // the descriptors GORN_UPGRADE names
}

// rolledBack is what a restored binary is told.
type rolledBack struct {
	Reason string `json:"reason"`
}

// formats is the value of GORN_UPGRADE_FORMATS this binary sends and accepts.
func formats() string {
	return fmt.Sprintf("handover=%d,scoreboard=%d", handoverVersion, scoreboard.Version)
}

// checkFormats refuses an upgrade whose handover or scoreboard this binary would misread.
func checkFormats(want string) error {
	for _, kv := range strings.Split(want, ",") {
		name, v, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("reading %s=%q: %w", formatsEnv, want, err)
		}
		var mine int
		switch name {
		case "handover":
			mine = handoverVersion
		case "scoreboard":
			mine = scoreboard.Version
		default:
			return fmt.Errorf("upgrade refused: unknown format %q in %s=%q", name, formatsEnv, want)
		}
		if n != mine {
			return fmt.Errorf("upgrade refused: the running master's %s format is version %d, this binary reads version %d", name, n, mine)
		}
	}
	return nil
}

// inherited is the state adopted from a previous image of this master.
type inherited struct {
	listeners []*socket.Listener
	board     *scoreboard.Board
	lifeline  [2]*os.File
	handover  master.Handover
	// rolledBack is why this binary is back after a failed upgrade ("" after a good one).
	rolledBack string
}

// adoptUpgrade reads GORN_UPGRADE, if present, and unsets it.
func adoptUpgrade(getenv func(string) string) (*inherited, error) {
	raw := getenv(upgradeEnv)
	if raw == "" {
		return nil, nil
	}
	os.Unsetenv(upgradeEnv)
	var st upgradeState
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return nil, fmt.Errorf("reading %s: %w", upgradeEnv, err)
	}
	// Version 0 is the format before it had a version: the same fields as version 1.
	if err := checkFormats(fmt.Sprintf("handover=%d,scoreboard=%d", max(st.Version, 1), max(st.Scoreboard, 1))); err != nil {
		return nil, err
	}
	in := &inherited{handover: st.Handover}
	if rb := getenv(rolledBackEnv); rb != "" {
		os.Unsetenv(rolledBackEnv)
		var why rolledBack
		if err := json.Unmarshal([]byte(rb), &why); err != nil || why.Reason == "" {
			why.Reason = rb
		}
		in.rolledBack = why.Reason
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
	env := append(upgradeFreeEnv(), formatsEnv+"="+formats())
	res, err := runChild(u.children, u.spawner.Thread(), childCmd{path: u.path, args: args, env: env, timeout: preflightTimeout})
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
	lr, lw := u.spawner.Lifeline()
	st := upgradeState{Version: handoverVersion, Scoreboard: scoreboard.Version,
		Board: int(u.board.File().Fd()), Lifeline: [2]int{int(lr.Fd()), int(lw.Fd())}, Handover: h}
	for _, l := range u.listeners {
		st.Listeners = append(st.Listeners, l.Fd())
	}
	js, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encoding upgrade state: %w", err)
	}
	fds := append([]int{st.Board, st.Lifeline[0], st.Lifeline[1]}, st.Listeners...)
	// Not close-on-exec: the new image inherits it (and closes it once it serves).
	exe, err := unix.Open("/proc/self/exe", unix.O_PATH, 0)
	if err != nil {
		return fmt.Errorf("keeping a handle on the running binary: %w", err)
	}
	defer unix.Close(exe)
	rb, err := json.Marshal(rollbackState{Exe: exe, Args: u.args, Fds: fds})
	if err != nil {
		return fmt.Errorf("encoding the way back: %w", err)
	}
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("keeping fd %d across exec: %w", fd, err)
		}
	}
	env := append(upgradeFreeEnv(), upgradeEnv+"="+string(js), rollbackEnv+"="+string(rb))
	u.spawner.Thread().Do(func() { err = syscall.Exec(u.path, u.args, env) })
	for _, fd := range fds {
		unix.CloseOnExec(fd)
	}
	return fmt.Errorf("re-executing %s: %w", u.path, err)
}

// upgradeFreeEnv is the environment without the upgrade protocol's variables.
func upgradeFreeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != upgradeEnv && k != rollbackEnv && k != rolledBackEnv && k != formatsEnv {
			env = append(env, kv)
		}
	}
	return env
}

// lastLines is the end of a child's output, on one line, for a log field.
func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// rollbackGuard is the new image's way back to the previous binary (step 3 above).
type rollbackGuard struct {
	state    rollbackState
	handover string      // GORN_UPGRADE as received
	saved    map[int]int // descriptor of the handover -> a close-on-exec duplicate
}

// armRollback reads GORN_UPGRADE_ROLLBACK, if present: it duplicates the handover's
// descriptors, so that whatever this image does with its own copies, the previous
// binary gets them back. It returns nil when this process was not started by an upgrade.
func armRollback(getenv func(string) string) (*rollbackGuard, error) {
	raw := getenv(rollbackEnv)
	if raw == "" {
		return nil, nil
	}
	os.Unsetenv(rollbackEnv)
	g := &rollbackGuard{handover: getenv(upgradeEnv), saved: map[int]int{}}
	if err := json.Unmarshal([]byte(raw), &g.state); err != nil {
		return nil, fmt.Errorf("reading %s: %w", rollbackEnv, err)
	}
	for _, fd := range append(slices.Clone(g.state.Fds), g.state.Exe) {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			g.release()
			return nil, fmt.Errorf("keeping the way back: duplicating fd %d: %w", fd, err)
		}
		g.saved[fd] = dup
	}
	unix.Close(g.state.Exe) // its duplicate serves; the original would leak into workers
	return g, nil
}

// release drops the way back once the new image serves.
func (g *rollbackGuard) release() {
	for _, dup := range g.saved {
		unix.Close(dup)
	}
	g.saved = nil
}

// rollback re-executes the previous binary with the original handover; it returns only
// on failure. Call it on the main thread (see worker.Thread).
func (g *rollbackGuard) rollback(reason string) error {
	for fd, dup := range g.saved {
		flags := 0
		if fd == g.state.Exe {
			// execve by /proc/self/fd works on a close-on-exec descriptor of an ELF
			// binary, and then leaks nothing into the restored image.
			flags = unix.O_CLOEXEC
		}
		if err := unix.Dup3(dup, fd, flags); err != nil {
			return fmt.Errorf("restoring fd %d: %w", fd, err)
		}
	}
	why, err := json.Marshal(rolledBack{Reason: reason})
	if err != nil {
		return fmt.Errorf("encoding the reason: %w", err)
	}
	env := append(upgradeFreeEnv(), upgradeEnv+"="+g.handover, rolledBackEnv+"="+string(why))
	path := "/proc/self/fd/" + strconv.Itoa(g.state.Exe)
	if err := syscall.Exec(path, g.state.Args, env); err != nil {
		return fmt.Errorf("re-executing the previous binary (%s): %w", path, err)
	}
	return errors.New("unreachable")
}
