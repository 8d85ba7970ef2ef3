package socket

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// tcpListen is TCP_LISTEN from the kernel's tcp_states.h (TCPInfo.State).
const tcpListen = 10

// QueueDepth reports the accept queue of a listening TCP socket: queued is
// the number of established connections waiting for accept(2), backlog the
// queue's limit (the listen(2) backlog capped at net.core.somaxconn). The
// kernel reports these as tcpi_unacked and tcpi_sacked of TCP_INFO; the
// queue can hold backlog+1 connections before new ones are dropped.
//
// Unix sockets are not supported: the error wraps errors.ErrUnsupported.
func QueueDepth(fd int) (queued, backlog uint32, err error) {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return 0, 0, fmt.Errorf("reading queue depth: %w", err)
	}
	if domain != unix.AF_INET && domain != unix.AF_INET6 {
		return 0, 0, fmt.Errorf("reading queue depth: not a TCP socket: %w", errors.ErrUnsupported)
	}
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, 0, fmt.Errorf("reading queue depth: TCP_INFO: %w", err)
	}
	if info.State != tcpListen {
		return 0, 0, errors.New("reading queue depth: socket is not listening")
	}
	return info.Unacked, info.Sacked, nil
}
