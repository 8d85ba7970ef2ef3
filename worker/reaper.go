package worker

import (
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/master"
)

// Reaper is the process's only reaper: on every SIGCHLD it collects all exited children
// with wait4(-1, WNOHANG) and routes each exit by pid to the owner that started the child
// (the master for workers, the config evaluator, the upgrade pre-flight). Exits nobody
// registered (orphans re-parented to a PID 1 or subreaper master) go to the default
// owner. Nothing calls os.Process.Wait or exec.Cmd.Wait, which would race this loop for
// the exit status. Create one per process.
type Reaper struct {
	mu     sync.Mutex
	routes map[int]chan<- master.Exit
	others chan<- master.Exit
}

// NewReaper starts the reaper; exits of children started without Start go to others
// (nil: they are collected and dropped).
func NewReaper(others chan<- master.Exit) *Reaper {
	r := &Reaper{routes: map[int]chan<- master.Exit{}, others: others}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	go r.loop(sigs)
	return r
}

// Start runs start, which forks a child and returns its pid, and routes that child's exit
// to owner. The route exists before the reaper can collect the child: both happen under
// the reaper's lock. owner must be buffered or always read.
func (r *Reaper) Start(owner chan<- master.Exit, start func() (int, error)) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := start()
	if err == nil && pid > 0 {
		r.routes[pid] = owner
	}
	return pid, err
}

// Claim routes the exit of pid, a process another process forked that was re-parented to
// this one (a worker forked by the --preload mold), to owner, and returns a pidfd for it.
// ok is false if pid is not (or no longer) an unreaped child of this process: it has
// exited already and its exit went to the default owner. Under the reaper's lock nothing
// reaps pid between the pidfd_open and the check, so the pidfd cannot name a stranger
// that reused the pid. Without pidfd_open (Linux < 5.3) pidfd is -1 and ok says whether
// pid is still an unreaped child.
func (r *Reaper) Claim(pid int, owner chan<- master.Exit) (pidfd int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var info unix.Siginfo
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case err == unix.ENOSYS: // before Linux 5.3: the pid, which stays ours until reaped
		fd = -1
		if unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil) != nil {
			return -1, false
		}
	case err != nil:
		return -1, false
	case unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil) != nil:
		unix.Close(fd) // ECHILD: not our child
		return -1, false
	}
	r.routes[pid] = owner
	return fd, true
}

type routedExit struct {
	owner chan<- master.Exit
	exit  master.Exit
}

func (r *Reaper) loop(sigs <-chan os.Signal) {
	for {
		// Collect under the lock, send after it: an owner blocked in Start while its
		// channel is full must not deadlock the reaper.
		r.mu.Lock()
		var batch []routedExit
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if pid <= 0 || err != nil {
				break
			}
			owner, ok := r.routes[pid]
			if ok {
				delete(r.routes, pid)
			} else {
				owner = r.others
			}
			batch = append(batch, routedExit{owner, master.Exit{Pid: pid, Status: syscall.WaitStatus(ws)}})
		}
		r.mu.Unlock()
		for _, b := range batch {
			if b.owner != nil {
				b.owner <- b.exit
			}
		}
		<-sigs
	}
}
