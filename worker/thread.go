package worker

import "runtime"

// Thread runs functions on one OS thread that never exits. Children are forked from it
// and the master execs from it: a child's Pdeathsig fires when the *thread* that forked
// it exits, and execve from any other thread ends this one. gorn's main serves it on the
// main thread, which also survives execve (the exec'ing thread becomes the main thread),
// so workers outlive any number of binary upgrades and roll-backs.
type Thread struct {
	fns chan func()
}

// NewThread returns a Thread that runs nothing until Serve is called.
func NewThread() *Thread { return &Thread{fns: make(chan func())} }

// StartThread returns a Thread served by a new goroutine locked to its own OS thread.
func StartThread() *Thread {
	t := NewThread()
	go func() {
		runtime.LockOSThread() // never unlocked: the thread lives as long as the process
		t.Serve()
	}()
	return t
}

// Serve runs the thread's functions on the calling goroutine, which must be locked to
// its OS thread; it never returns.
func (t *Thread) Serve() {
	for fn := range t.fns {
		fn()
	}
}

// Do runs fn on the thread and waits for it.
func (t *Thread) Do(fn func()) {
	done := make(chan struct{})
	t.fns <- func() { fn(); close(done) }
	<-done
}
