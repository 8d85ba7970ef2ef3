package socket

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// DefaultBacklog is the listen(2) backlog when Options.Backlog is zero, as in gunicorn.
const DefaultBacklog = 2048

// Options tune Bind.
type Options struct {
	// Backlog is the listen(2) backlog: how many established connections
	// may wait for a worker to accept them. Zero means DefaultBacklog. The
	// kernel silently caps it at net.core.somaxconn; QueueDepth reports the
	// effective value.
	Backlog int

	// ReusePort sets SO_REUSEPORT on TCP listeners, as gunicorn's --reuse-port:
	// other sockets with it may then bind the same address, and the kernel
	// splits new connections between them. Off, a second server on a bound
	// address fails with EADDRINUSE (a forgotten gorn cannot silently share
	// it). A binary upgrade needs neither: it inherits the listening fds.
	ReusePort bool

	// UnixMode, if non-zero, is set on unix socket files with chmod(2)
	// right after bind(2). Zero keeps the mode bind(2) creates, 0o777 &^ the
	// process umask; gunicorn's equivalent is 0o777 &^ its --umask, which
	// defaults to 0. Only the permission bits are used.
	UnixMode os.FileMode
}

// Family is the address family of a bound socket.
type Family int

// The address families a Listener can have.
const (
	FamilyIPv4 Family = unix.AF_INET
	FamilyIPv6 Family = unix.AF_INET6
	FamilyUnix Family = unix.AF_UNIX
)

// String returns "ipv4", "ipv6" or "unix".
func (f Family) String() string {
	switch f {
	case FamilyIPv4:
		return "ipv4"
	case FamilyIPv6:
		return "ipv6"
	case FamilyUnix:
		return "unix"
	}
	return "family(" + strconv.Itoa(int(f)) + ")"
}

// Listener is a bound, listening, blocking stream socket.
//
// Keep the Listener reachable for as long as its descriptor is in use: its
// *os.File closes the descriptor when garbage collected.
type Listener struct {
	file   *os.File
	fd     int
	addr   Address
	bound  string
	family Family
	port   int

	// The unix socket file this process created, identified by device and
	// inode, which Close removes while the path still names it.
	path     string
	dev, ino uint64
}

// Fd returns the socket's descriptor number in this process.
func (l *Listener) Fd() int { return l.fd }

// File returns the *os.File that owns the descriptor (not a dup), suitable
// for exec.Cmd.ExtraFiles: the child receives a copy at fd 3+i without
// close-on-exec. Closing the File closes the Listener's socket; use
// Listener.Close instead so a unix socket file is removed too.
func (l *Listener) File() *os.File { return l.file }

// Address returns the address that was asked for.
func (l *Listener) Address() Address { return l.addr }

// String returns the address actually bound: "127.0.0.1:41235" after
// binding port 0, "[::1]:8000", "0.0.0.0:8000" for a wildcard bind, or
// "unix:/run/app.sock" ("unix:@name" for an abstract socket).
func (l *Listener) String() string { return l.bound }

// Port returns the bound TCP port, or 0 for a unix socket.
func (l *Listener) Port() int { return l.port }

// Family returns the socket's address family.
func (l *Listener) Family() Family { return l.family }

// Close closes the socket and, if this process created its unix socket
// file and the path still names that same file, removes the file. Close is
// not safe for concurrent use with other methods.
func (l *Listener) Close() error {
	var errRemove error
	if l.path != "" {
		errRemove = removeIfSame(l.path, l.dev, l.ino)
		l.path = ""
	}
	return errors.Join(errRemove, l.file.Close())
}

// Bind binds and listens on every address, in order, and returns one
// Listener per address. It binds all or nothing: on any error it closes
// what it had already bound and returns an error naming the address, which
// wraps the system error (errors.Is(err, unix.EADDRINUSE) works).
//
// TCP sockets get SO_REUSEADDR, SO_REUSEPORT only with Options.ReusePort, TCP_NODELAY
// (inherited by accepted connections) and, for IPv6, IPV6_V6ONLY. A host
// name is resolved and bound to its first IPv4 address, or its first IPv6
// address if it has none (gunicorn binds host names as IPv4 only).
//
// For unix:PATH, an existing socket file that nobody listens on (connect
// fails with ECONNREFUSED) is removed first; a live one is an "address
// already in use" error, and any other kind of file is an error too.
//
// fd://N adopts the inherited descriptor N: it must be a listening stream
// socket; it is switched to blocking mode and marked close-on-exec (pass
// it on with ExtraFiles). Its backlog is left as it is. A descriptor that
// fails these checks is left open; a failed Bind closes those it adopted.
//
// Bind does not retry (gunicorn retries five times, a second apart); that
// is the caller's policy.
func Bind(addrs []Address, opts Options) ([]*Listener, error) {
	backlog := opts.Backlog
	if backlog == 0 {
		backlog = DefaultBacklog
	}
	if backlog < 0 {
		return nil, fmt.Errorf("invalid backlog %d", backlog)
	}
	seen := make(map[string]bool)
	for _, a := range addrs {
		if seen[a.String()] {
			return nil, fmt.Errorf("bind address %s given twice", a)
		}
		seen[a.String()] = true
	}

	ls := make([]*Listener, len(addrs))
	ok := false
	defer func() {
		if !ok {
			closeAll(ls)
		}
	}()
	// Adopt inherited descriptors first, so that no socket created below
	// can be the descriptor an fd:// address names.
	for i, a := range addrs {
		if a.Kind == KindFD {
			l, err := adopt(a)
			if err != nil {
				return nil, err
			}
			ls[i] = l
		}
	}
	for i, a := range addrs {
		var l *Listener
		var err error
		switch a.Kind {
		case KindFD:
			continue
		case KindTCP:
			l, err = bindTCP(a, backlog, opts.ReusePort)
		case KindUnix:
			l, err = bindUnix(a, backlog, opts.UnixMode.Perm())
		default:
			err = fmt.Errorf("binding %s: invalid address kind", a)
		}
		if err != nil {
			return nil, err
		}
		ls[i] = l
	}
	ok = true
	return ls, nil
}

func closeAll(ls []*Listener) {
	for _, l := range ls {
		if l != nil {
			l.Close()
		}
	}
}

func bindTCP(a Address, backlog int, reusePort bool) (*Listener, error) {
	ip, err := resolve(a.Host)
	if err != nil {
		return nil, fmt.Errorf("binding %s: %w", a, err)
	}
	sa, err := sockaddr(ip, a.Port)
	if err != nil {
		return nil, fmt.Errorf("binding %s: %w", a, err)
	}
	family := unix.AF_INET
	opts := []sockopt{
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR"},
		{unix.IPPROTO_TCP, unix.TCP_NODELAY, "TCP_NODELAY"},
	}
	if reusePort {
		opts = append(opts, sockopt{unix.SOL_SOCKET, unix.SO_REUSEPORT, "SO_REUSEPORT"})
	}
	if ip.Is6() {
		family = unix.AF_INET6
		opts = append(opts, sockopt{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, "IPV6_V6ONLY"})
	}
	fd, err := listen(a, family, sa, opts, backlog)
	if err != nil {
		return nil, err
	}
	l, err := newListener(fd, a)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding %s: %w", a, err)
	}
	return l, nil
}

func bindUnix(a Address, backlog int, mode os.FileMode) (*Listener, error) {
	if a.Path == "" {
		return nil, fmt.Errorf("binding %s: missing socket path", a)
	}
	sa := &unix.SockaddrUnix{Name: a.Path}
	if a.Path[0] == '@' { // abstract: no file to clean up, chmod or own
		fd, err := listen(a, unix.AF_UNIX, sa, nil, backlog)
		if err != nil {
			return nil, err
		}
		return newListenerOrClose(fd, a)
	}
	if err := removeStale(a.Path); err != nil {
		return nil, fmt.Errorf("binding %s: %w", a, err)
	}
	abs, err := filepath.Abs(a.Path) // Close must find the file after a chdir
	if err != nil {
		return nil, fmt.Errorf("binding %s: %w", a, err)
	}
	fd, err := listen(a, unix.AF_UNIX, sa, nil, backlog)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Lstat(abs, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding %s: %w", a, &os.PathError{Op: "lstat", Path: abs, Err: err})
	}
	l, err := newListenerOrClose(fd, a)
	if err != nil {
		unix.Unlink(abs)
		return nil, err
	}
	l.path, l.dev, l.ino = abs, st.Dev, st.Ino
	if mode != 0 {
		if err := os.Chmod(abs, mode); err != nil {
			l.Close()
			return nil, fmt.Errorf("binding %s: %w", a, err)
		}
	}
	return l, nil
}

func newListenerOrClose(fd int, a Address) (*Listener, error) {
	l, err := newListener(fd, a)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding %s: %w", a, err)
	}
	return l, nil
}

type sockopt struct {
	level, opt int
	name       string
}

// listen creates a blocking, close-on-exec stream socket, sets opts to 1,
// binds it to sa and listens. It returns the descriptor or an error naming a.
func listen(a Address, family int, sa unix.Sockaddr, opts []sockopt, backlog int) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("binding %s: creating socket: %w", a, err)
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("binding %s: setting %s: %w", a, o.name, err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("binding %s: %w", a, err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("binding %s: listen: %w", a, err)
	}
	return fd, nil
}

// resolve returns host's address: the literal itself (IPv4-mapped IPv6
// addresses become IPv4), else the first IPv4 address it resolves to, else
// the first IPv6 one.
func resolve(host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap(), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolving host: %w", err)
	}
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			return ip.Unmap(), nil
		}
	}
	if len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("resolving host: %s has no addresses", host)
	}
	return ips[0], nil
}

func sockaddr(ip netip.Addr, port int) (unix.Sockaddr, error) {
	if ip.Is4() {
		return &unix.SockaddrInet4{Port: port, Addr: ip.As4()}, nil
	}
	sa := &unix.SockaddrInet6{Port: port, Addr: ip.As16()}
	if zone := ip.Zone(); zone != "" {
		if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
			sa.ZoneId = uint32(n)
		} else {
			ifi, err := net.InterfaceByName(zone)
			if err != nil {
				return nil, fmt.Errorf("looking up IPv6 zone %q: %w", zone, err)
			}
			sa.ZoneId = uint32(ifi.Index)
		}
	}
	return sa, nil
}

// newListener wraps a listening socket, reading its bound address.
func newListener(fd int, a Address) (*Listener, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	l := &Listener{fd: fd, addr: a}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		l.family, l.port = FamilyIPv4, sa.Port
		l.bound = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
	case *unix.SockaddrInet6:
		ip := netip.AddrFrom16(sa.Addr)
		if sa.ZoneId != 0 {
			zone := strconv.FormatUint(uint64(sa.ZoneId), 10)
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				zone = ifi.Name
			}
			ip = ip.WithZone(zone)
		}
		l.family, l.port = FamilyIPv6, sa.Port
		l.bound = netip.AddrPortFrom(ip, uint16(sa.Port)).String()
	case *unix.SockaddrUnix:
		l.family = FamilyUnix
		l.bound = "unix:" + sa.Name
	default:
		return nil, fmt.Errorf("unsupported socket address %T", sa)
	}
	l.file = os.NewFile(uintptr(fd), l.bound)
	return l, nil
}

// adopt wraps the inherited descriptor a.FD after checking that it is a
// listening stream socket. It does not close the descriptor on error.
func adopt(a Address) (*Listener, error) {
	fd := a.FD
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("adopting %s: %w", a, err)
	}
	if typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("adopting %s: not a stream socket (SO_TYPE %d)", a, typ)
	}
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return nil, fmt.Errorf("adopting %s: %w", a, err)
	}
	if listening == 0 {
		return nil, fmt.Errorf("adopting %s: socket is not listening", a)
	}
	// Workers block in accept(2). This changes the open file description,
	// which the process that passed the socket shares.
	if err := unix.SetNonblock(fd, false); err != nil {
		return nil, fmt.Errorf("adopting %s: clearing O_NONBLOCK: %w", a, err)
	}
	// Children get the socket only when it is passed explicitly.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return nil, fmt.Errorf("adopting %s: setting FD_CLOEXEC: %w", a, err)
	}
	l, err := newListener(fd, a)
	if err != nil {
		return nil, fmt.Errorf("adopting %s: %w", a, err)
	}
	return l, nil
}

// removeStale removes a unix socket file at path that nobody listens on.
// A missing path is fine; a live socket or another kind of file is an error.
func removeStale(path string) error {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	live, err := listening(path)
	if err != nil {
		return fmt.Errorf("probing existing socket %s: %w", path, err)
	}
	if live {
		return unix.EADDRINUSE
	}
	if err := unix.Unlink(path); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	return nil
}

// listening reports whether a process accepts connections on the unix
// socket at path. The probe is non-blocking, so a full queue (EAGAIN)
// counts as live rather than hanging.
func listening(path string) (bool, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	switch err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); {
	case err == nil, errors.Is(err, unix.EAGAIN):
		return true, nil
	case errors.Is(err, unix.ECONNREFUSED):
		return false, nil
	default:
		return false, err
	}
}

// removeIfSame removes path if it is still the file identified by dev and ino.
func removeIfSame(path string, dev, ino uint64) error {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	if st.Dev != dev || st.Ino != ino {
		return nil // replaced by someone else: theirs now
	}
	if err := unix.Unlink(path); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "unlink", Path: path, Err: err}
	}
	return nil
}
