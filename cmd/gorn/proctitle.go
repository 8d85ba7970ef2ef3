package main

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// procName is the master's name in /proc/PID/comm, which top, ps -o comm and pgrep show.
// The kernel keeps 15 bytes of it.
const procName = "gorn: master"

// setProcName names the calling thread; on the main thread that names the process
// (/proc/PID/comm is the main thread's name). The command line (ps -o args) stays as it
// was: rewriting argv in place means writing through unsafe into memory the Go runtime
// does not own, and a title cannot grow past the original arguments, so gorn does not.
func setProcName(name string) error {
	b, err := unix.ByteSliceFromString(name)
	if err != nil {
		return fmt.Errorf("setting the process name: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0); err != nil {
		return fmt.Errorf("setting the process name: %w", err)
	}
	return nil
}
