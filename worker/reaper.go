package worker

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/master"
)

// Reap is the process's only reaper: on every SIGCHLD it collects all exited children with
// wait4(-1, WNOHANG) and sends each to exits. Workers and orphans alike (PID 1 duty) are
// reaped here; nothing calls os.Process.Wait, which would race this loop.
func Reap(exits chan<- master.Exit) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	for {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if pid <= 0 || err != nil {
				break
			}
			exits <- master.Exit{Pid: pid, Status: syscall.WaitStatus(ws)}
		}
		<-sigs
	}
}
