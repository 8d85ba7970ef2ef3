// Package upgrade is the protocol of gorn's USR2 binary upgrade and its way back.
//
// The master re-executes itself in place, so its PID survives: as PID 1 of a container
// there is no other way (a new master in a child process would die with the old PID 1,
// or leave the new code running under the old image forever). In place means that a new
// binary failing after execve takes the PID, and with it every worker, down. So:
//
//  1. Pre-flight, off the master loop: the new binary runs with the same arguments and
//     --check-config (it parses them, evaluates the config file and imports the app in a
//     worker), with EnvFormats naming the handover and scoreboard formats it must read
//     (CheckFormats). Any failure refuses the upgrade; nothing has been handed over.
//  2. Exec: the handover (EnvState: listeners, scoreboard, lifeline, worker table;
//     versioned) and the way back (EnvRollback: an O_PATH descriptor of the running
//     binary, opened through /proc/self/exe so a binary replaced on disk is no matter,
//     and the old arguments) survive execve.
//  3. The new image arms a Guard before anything else: it duplicates every descriptor of
//     the handover and, if its master loop does not run within ReadyTimeout, or it exits
//     or panics first, puts them back and re-executes the old binary with the original
//     handover and the reason (EnvRolledBack); the old binary adopts its workers
//     without replacing them and logs why. The workers never notice: they are children
//     of the PID and keep accepting on the listeners throughout, so no request fails.
//
// The way back lives in the new binary's own main, so it covers a gorn that fails or
// hangs before serving, not a binary that is not gorn or that dies of a fatal runtime
// error after the pre-flight passed: that is what the pre-flight is for. Rollback's
// format is frozen; State's may change with StateVersion.
package upgrade

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/internal/scoreboard"
	"github.com/gornhq/gorn/master"
)

// The protocol's environment variables.
const (
	EnvState      = "GORN_UPGRADE"             // the handover (State)
	EnvRollback   = "GORN_UPGRADE_ROLLBACK"    // the way back (Rollback)
	EnvRolledBack = "GORN_UPGRADE_ROLLED_BACK" // why the previous binary is back (RolledBack)
	EnvFormats    = "GORN_UPGRADE_FORMATS"     // pre-flight: formats the new binary must read
)

// StateVersion is State's format: bump it when a field changes meaning.
const StateVersion = 1

const (
	// ReadyTimeout bounds the time from execve to a running master loop.
	ReadyTimeout = 10 * time.Second
	// PreflightTimeout bounds the new binary's --check-config (which imports the app).
	PreflightTimeout = 2 * time.Minute
)

// State is what the re-executed master inherits: the fds survive execve, the workers
// are still its children (the PID does not change), and the table comes as JSON.
type State struct {
	Version    int             `json:"version"`
	Scoreboard int             `json:"scoreboard"`
	Listeners  []int           `json:"listeners"`
	Board      int             `json:"board"`
	Lifeline   [2]int          `json:"lifeline"`
	Handover   master.Handover `json:"handover"`
}

// Fds are the descriptors the state names: the workers' stack-dump pipes too.
func (st State) Fds() []int {
	fds := append([]int{st.Board, st.Lifeline[0], st.Lifeline[1]}, st.Listeners...)
	for _, w := range st.Handover.Workers {
		if w.FaultFD > 0 {
			fds = append(fds, w.FaultFD)
		}
	}
	return fds
}

// Rollback is the way back to the previous binary. Its format is frozen: every gorn
// binary from this one on reads it, whatever else changed.
type Rollback struct {
	Exe  int      `json:"exe"`  // O_PATH descriptor of the previous binary
	Args []string `json:"args"` // its arguments
	Fds  []int    `json:"fds"`  // the descriptors EnvState names
}

// RolledBack is what a restored binary is told.
type RolledBack struct {
	Reason string `json:"reason"`
	// Stops are the stop signals (TERM, INT, QUIT) the failed image received: the
	// restored binary acts on them.
	Stops []syscall.Signal `json:"stops,omitempty"`
}

// StopSignals are the signals a failed image keeps for the binary it restores; a new
// image catches them from its first instant, so that neither a hang (PID 1 ignores a
// signal it has no handler for) nor the default action (anyone else dies of it, and the
// workers with it) loses an orchestrator's stop.
func StopSignals() []os.Signal { return []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT} }

// Formats is the value of EnvFormats this binary sends and accepts.
func Formats() string {
	return fmt.Sprintf("handover=%d,scoreboard=%d", StateVersion, scoreboard.Version)
}

// CheckFormats refuses an upgrade whose handover or scoreboard this binary would misread.
func CheckFormats(want string) error {
	for _, kv := range strings.Split(want, ",") {
		name, v, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("reading %s=%q: %w", EnvFormats, want, err)
		}
		var mine int
		switch name {
		case "handover":
			mine = StateVersion
		case "scoreboard":
			mine = scoreboard.Version
		default:
			return fmt.Errorf("upgrade refused: unknown format %q in %s=%q", name, EnvFormats, want)
		}
		if n != mine {
			return fmt.Errorf("upgrade refused: the running master's %s format is version %d, this binary reads version %d", name, n, mine)
		}
	}
	return nil
}

// Decode reads a handover, refusing a format this binary would misread.
func Decode(raw string) (State, error) {
	var st State
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return st, fmt.Errorf("reading %s: %w", EnvState, err)
	}
	// Version 0 is the format before it had a version: the same fields as version 1.
	if err := CheckFormats(fmt.Sprintf("handover=%d,scoreboard=%d", max(st.Version, 1), max(st.Scoreboard, 1))); err != nil {
		return st, err
	}
	return st, nil
}

// DecodeRolledBack decodes EnvRolledBack.
func DecodeRolledBack(raw string) RolledBack {
	var why RolledBack
	if err := json.Unmarshal([]byte(raw), &why); err != nil || why.Reason == "" {
		return RolledBack{Reason: raw}
	}
	return why
}

// Env is the environment for the new binary: environ without the protocol's variables,
// plus the handover and the way back.
func Env(environ []string, st State, rb Rollback) ([]string, error) {
	js, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encoding the handover: %w", err)
	}
	back, err := json.Marshal(rb)
	if err != nil {
		return nil, fmt.Errorf("encoding the way back: %w", err)
	}
	return append(CleanEnv(environ), EnvState+"="+string(js), EnvRollback+"="+string(back)), nil
}

// CleanEnv is environ without the protocol's variables.
func CleanEnv(environ []string) []string {
	var env []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if k != EnvState && k != EnvRollback && k != EnvRolledBack && k != EnvFormats {
			env = append(env, kv)
		}
	}
	return env
}

// Guard is the new image's way back to the previous binary (step 3).
type Guard struct {
	rb       Rollback
	handover string      // EnvState as received
	saved    map[int]int // descriptor of the handover -> a close-on-exec duplicate
}

// Arm reads EnvRollback, if present, and unsets it: it duplicates the handover's
// descriptors, so that whatever this image does with its own copies, the previous binary
// gets them back. It returns nil when this process was not started by an upgrade.
func Arm(getenv func(string) string) (*Guard, error) {
	raw := getenv(EnvRollback)
	if raw == "" {
		return nil, nil
	}
	os.Unsetenv(EnvRollback)
	g := &Guard{handover: getenv(EnvState), saved: map[int]int{}}
	if err := json.Unmarshal([]byte(raw), &g.rb); err != nil {
		return nil, fmt.Errorf("reading %s: %w", EnvRollback, err)
	}
	for _, fd := range append(slices.Clone(g.rb.Fds), g.rb.Exe) {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			g.Release()
			return nil, fmt.Errorf("keeping the way back: duplicating fd %d: %w", fd, err)
		}
		g.saved[fd] = dup
	}
	unix.Close(g.rb.Exe) // its duplicate serves; the original would leak into workers
	return g, nil
}

// Release drops the way back once the new image serves.
func (g *Guard) Release() {
	for _, dup := range g.saved {
		unix.Close(dup)
	}
	g.saved = nil
}

// restore puts the handover's descriptors back at their numbers, open across exec.
func (g *Guard) restore() error {
	for fd, dup := range g.saved {
		flags := 0
		if fd == g.rb.Exe {
			// execve by /proc/self/fd works on a close-on-exec descriptor of an ELF
			// binary, and then leaks nothing into the restored image.
			flags = unix.O_CLOEXEC
		}
		if err := unix.Dup3(dup, fd, flags); err != nil {
			return fmt.Errorf("restoring fd %d: %w", fd, err)
		}
	}
	return nil
}

// Rollback re-executes the previous binary with the original handover; it returns only
// on failure. Call it from the thread that forked the workers (see worker.Thread).
func (g *Guard) Rollback(why RolledBack) error {
	if err := g.restore(); err != nil {
		return err
	}
	js, err := json.Marshal(why)
	if err != nil {
		return fmt.Errorf("encoding the reason: %w", err)
	}
	env := append(CleanEnv(os.Environ()), EnvState+"="+g.handover, EnvRolledBack+"="+string(js))
	path := "/proc/self/fd/" + strconv.Itoa(g.rb.Exe)
	if err := syscall.Exec(path, g.rb.Args, env); err != nil {
		return fmt.Errorf("re-executing the previous binary (%s): %w", path, err)
	}
	return errors.New("unreachable")
}

// Watch runs run, the new image's whole life, and waits for it to call serving (its
// master loop runs) within timeout; onServing is called then. It returns run's exit code
// and "" once run returns after serving; otherwise why serving never came (run returned
// or panicked first, or the timeout passed; a hung run is left behind), for Rollback.
func Watch(timeout time.Duration, run func(serving func(), failed func(error)) int, onServing func()) (code int, why string) {
	ready := make(chan struct{})
	done := make(chan int, 1)
	crashed := make(chan any, 1)
	failure := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				crashed <- p
			}
		}()
		var once sync.Once
		done <- run(func() { once.Do(func() { close(ready) }) }, func(err error) {
			select {
			case failure <- err:
			default:
			}
		})
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-ready:
		timer.Stop()
		onServing()
		select {
		case code := <-done:
			return code, ""
		case p := <-crashed:
			panic(p) // as if unguarded: the new image serves, a crash is its own
		}
	case code := <-done:
		why = fmt.Sprintf("the new binary exited with code %d before its master loop ran", code)
		select {
		case err := <-failure:
			why += ": " + err.Error()
		default:
		}
		return code, why
	case p := <-crashed:
		return 1, fmt.Sprintf("the new binary panicked before its master loop ran: %v", p)
	case <-timer.C:
		return 1, fmt.Sprintf("the new binary's master loop was not running %s after exec", timeout)
	}
}
