package socket

import (
	"fmt"
	"strconv"
	"strings"
)

// listenFDsStart is the first descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// FromSystemd adopts the sockets passed by systemd socket activation. If
// LISTEN_PID equals pid, descriptors 3 .. 3+LISTEN_FDS-1 are adopted as by
// Bind with fd://N (each must be a listening stream socket; it is made
// blocking and close-on-exec) and returned in order, with Address().Name
// set from LISTEN_FDNAMES when present. If LISTEN_PID is unset or names
// another process (the variables were inherited, not meant for us), it
// returns no listeners and no error.
//
// env is typically os.Getenv and pid os.Getpid(). The caller should remove
// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES from the environment it passes
// to child processes.
func FromSystemd(env func(string) string, pid int) ([]*Listener, error) {
	lpid := env("LISTEN_PID")
	if lpid == "" {
		return nil, nil
	}
	p, err := strconv.Atoi(lpid)
	if err != nil {
		return nil, fmt.Errorf("systemd socket activation: invalid LISTEN_PID %q", lpid)
	}
	if p != pid {
		return nil, nil
	}
	nfds := env("LISTEN_FDS")
	if nfds == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(nfds)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("systemd socket activation: invalid LISTEN_FDS %q", nfds)
	}
	var names []string
	if s := env("LISTEN_FDNAMES"); s != "" {
		names = strings.Split(s, ":")
		if len(names) != n {
			return nil, fmt.Errorf("systemd socket activation: LISTEN_FDNAMES has %d names for %d descriptors", len(names), n)
		}
	}
	addrs := make([]Address, n)
	for i := range addrs {
		addrs[i] = Address{Kind: KindFD, FD: listenFDsStart + i}
		if names != nil {
			addrs[i].Name = names[i]
		}
	}
	ls, err := Bind(addrs, Options{})
	if err != nil {
		return nil, fmt.Errorf("systemd socket activation: %w", err)
	}
	return ls, nil
}
