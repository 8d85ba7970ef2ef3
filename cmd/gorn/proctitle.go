package main

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawArgs are the runtime's argv strings, which alias the kernel-provided argv memory;
// init replaces os.Args with copies so that rewriting that memory cannot change any string
// the program uses.
var rawArgs = func() []string {
	raw := os.Args
	args := make([]string, len(raw))
	for i, a := range raw {
		args[i] = string([]byte(a))
	}
	os.Args = args
	return raw
}()

// setProcTitle rewrites the process's argv area so ps shows title, as setproctitle does
// for gunicorn, and sets the thread name for top. It does nothing when the title does not
// fit.
func setProcTitle(title string) {
	orig := rawArgs
	if name, err := unix.BytePtrFromString("gorn-master"); err == nil {
		_ = unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(name)), 0, 0, 0)
	}
	if len(orig) == 0 || len(orig[0]) == 0 {
		return
	}
	start := unsafe.StringData(orig[0])
	last := orig[len(orig)-1]
	end := uintptr(unsafe.Pointer(unsafe.StringData(last))) + uintptr(len(last))
	if len(last) == 0 {
		end = uintptr(unsafe.Pointer(start)) + uintptr(len(orig[0]))
	}
	size := int(end - uintptr(unsafe.Pointer(start)))
	// The args must be contiguous (the kernel lays them out so); check before writing.
	if size <= 0 || size > 1<<16 || len(title) >= size {
		return
	}
	area := unsafe.Slice((*byte)(unsafe.Pointer(start)), size)
	n := copy(area, title)
	clear(area[n:])
}
