package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/internal/scoreboard"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/socket"
	"github.com/gornhq/gorn/worker"
)

// upgradeEnv carries a master's live state across a USR2 re-exec.
const upgradeEnv = "GORN_UPGRADE"

// upgradeState is what the re-executed master inherits: the fds survive execve, the
// workers are still its children (the PID does not change), and the table comes as JSON.
type upgradeState struct {
	Listeners []int           `json:"listeners"`
	Board     int             `json:"board"`
	Lifeline  [2]int          `json:"lifeline"`
	Handover  master.Handover `json:"handover"`
}

// inherited is the state adopted from a previous image of this master.
type inherited struct {
	listeners []*socket.Listener
	board     *scoreboard.Board
	lifeline  [2]*os.File
	handover  master.Handover
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
	in := &inherited{handover: st.Handover}
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

// upgrader re-executes the master binary in place on USR2.
type upgrader struct {
	path      string // the binary, resolved at start-up (the file may have been replaced since)
	args      []string
	spawner   *worker.Spawner
	listeners []*socket.Listener
	board     *scoreboard.Board
}

// upgrade execs the binary at u.path with the same arguments; it returns only on failure.
// execve runs on the spawner's locked thread: that thread forked the workers, and their
// Pdeathsig fires if it dies, which it would if another thread called execve.
func (u *upgrader) upgrade(h master.Handover) error {
	lr, lw := u.spawner.Lifeline()
	st := upgradeState{Board: int(u.board.File().Fd()), Lifeline: [2]int{int(lr.Fd()), int(lw.Fd())}, Handover: h}
	for _, l := range u.listeners {
		st.Listeners = append(st.Listeners, l.Fd())
	}
	js, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encoding upgrade state: %w", err)
	}
	fds := append([]int{st.Board, st.Lifeline[0], st.Lifeline[1]}, st.Listeners...)
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("keeping fd %d across exec: %w", fd, err)
		}
	}
	env := []string{upgradeEnv + "=" + string(js)}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, upgradeEnv+"=") {
			env = append(env, kv)
		}
	}
	u.spawner.Thread().Do(func() { err = syscall.Exec(u.path, u.args, env) })
	for _, fd := range fds {
		unix.CloseOnExec(fd)
	}
	return fmt.Errorf("re-executing %s: %w", u.path, err)
}
