package worker

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/master"
)

// TestReaperRoutesByPid: a child started through the reaper reports to its owner and
// nowhere else; a child nobody registered reports to the default owner.
func TestReaperRoutesByPid(t *testing.T) {
	r, others := testReaper()
	owner := make(chan master.Exit, 1)
	var p *os.Process
	_, err := r.Start(owner, func() (int, error) {
		var err error
		p, err = os.StartProcess("/bin/sh", []string{"sh", "-c", "exit 3"}, &os.ProcAttr{})
		if err != nil {
			return 0, err
		}
		return p.Pid, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release()
	stray := exec.Command("/bin/sh", "-c", "exit 5")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for got := 0; got < 2; {
		select {
		case e := <-owner:
			if e.Pid != p.Pid || e.Status.ExitStatus() != 3 {
				t.Errorf("owner got %+v, want pid %d exit 3", e, p.Pid)
			}
			got++
		case e := <-others:
			if e.Pid == p.Pid {
				t.Errorf("a routed child's exit went to the default owner")
			}
			if e.Pid == stray.Process.Pid {
				if e.Status.ExitStatus() != 5 {
					t.Errorf("stray child: %+v, want exit 5", e)
				}
				got++
			}
		case <-timeout:
			t.Fatal("exits not delivered")
		}
	}
}

// TestClaim: a child the reaper did not start (a worker the --preload mold forked, then
// re-parented here) is claimed with a pidfd and its exit routed to the claimant; a process
// that is not a child, or a child already reaped, cannot be claimed.
func TestClaim(t *testing.T) {
	r, others := testReaper()
	cmd := exec.Command("/bin/sh", "-c", "read x; exit 7")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	owner := make(chan master.Exit, 1)
	fd, ok := r.Claim(cmd.Process.Pid, owner)
	if !ok || fd < 0 {
		t.Fatalf("Claim(child) = %d, %v", fd, ok)
	}
	defer unix.Close(fd)
	if _, ok := r.Claim(os.Getppid(), owner); ok {
		t.Errorf("claimed the parent, not a child")
	}
	stdin.Close()
	timeout := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case e := <-owner:
			if e.Pid != cmd.Process.Pid || e.Status.ExitStatus() != 7 {
				t.Errorf("claimant got %+v", e)
			}
			done = true
		case e := <-others: // other tests' strays may arrive here too
			if e.Pid == cmd.Process.Pid {
				t.Fatalf("the claimed child's exit went to the default owner: %+v", e)
			}
		case <-timeout:
			t.Fatal("no exit")
		}
	}
	if _, ok := r.Claim(cmd.Process.Pid, owner); ok {
		t.Errorf("claimed a child already reaped")
	}
}
