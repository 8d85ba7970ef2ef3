package main

import (
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/worker"
)

// childCmd is a short-lived helper process the master runs: the config file evaluator,
// the upgrade pre-flight.
type childCmd struct {
	path    string
	args    []string
	env     []string // nil: the master's
	stderr  *os.File // nil: captured with stdout
	timeout time.Duration
}

type childResult struct {
	status syscall.WaitStatus
	output []byte // stdout (and stderr when not passed through)
}

// runChild runs c to its end: forked on thread, its exit collected by the process's one
// reaper and routed here by pid. It blocks its caller, so never call it on the master
// loop. A child still running at the timeout is killed.
func runChild(children *worker.Reaper, thread *worker.Thread, c childCmd) (childResult, error) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return childResult{}, fmt.Errorf("opening %s: %w", os.DevNull, err)
	}
	defer devnull.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return childResult{}, fmt.Errorf("creating a pipe: %w", err)
	}
	defer r.Close()
	stderr := c.stderr
	if stderr == nil {
		stderr = w
	}
	exited := make(chan master.Exit, 1)
	var p *os.Process
	thread.Do(func() {
		_, err = children.Start(exited, func() (int, error) {
			var err error
			p, err = os.StartProcess(c.path, c.args, &os.ProcAttr{Env: c.env, Files: []*os.File{devnull, w, stderr}})
			if err != nil {
				return 0, err
			}
			return p.Pid, nil
		})
	})
	w.Close()
	if err != nil {
		return childResult{}, fmt.Errorf("starting %s: %w", c.path, err)
	}
	defer p.Release()
	output := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(r, 16<<20))
		output <- b
	}()
	timeout := time.NewTimer(c.timeout)
	defer timeout.Stop()
	var res childResult
	select {
	case e := <-exited:
		res.status = e.Status
	case <-timeout.C:
		_ = p.Kill()
		<-exited
		return res, fmt.Errorf("%s still running after %s", c.path, c.timeout)
	}
	select {
	case res.output = <-output:
	case <-timeout.C: // a child of the child holds the pipe open
		return res, fmt.Errorf("%s: its output still open after %s", c.path, c.timeout)
	}
	return res, nil
}

// exitStatus describes how a child ended.
func exitStatus(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}
