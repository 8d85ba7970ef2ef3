// Package socket binds the listening sockets that gorn's workers inherit.
//
// The master binds every address once, before any worker exists, and passes
// the descriptors to its workers (fds 3..), which block in accept(2). The
// sockets are created with raw system calls rather than package net, because
// net always uses net.core.somaxconn as the backlog while gorn honours
// --backlog. Every descriptor this package returns is therefore in blocking
// mode, close-on-exec, and never registered with Go's network poller: the
// master must not accept on it, only hand it on (exec.Cmd.ExtraFiles) and
// watch its queue (QueueDepth).
//
// Bind forms follow gunicorn's --bind: HOST, HOST:PORT, [IPv6]:PORT,
// tcp://HOST:PORT, unix:PATH, unix://PATH and fd://N (see ParseAddress).
// systemd socket activation is FromSystemd.
//
// Linux only.
package socket

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultPort is the port used when a TCP bind address has none, as in gunicorn.
const DefaultPort = 8000

// maxUnixPath is the longest unix socket path the kernel accepts: sun_path
// is 108 bytes including the terminating NUL.
const maxUnixPath = 107

// Kind is the form of a bind address.
type Kind int

// The kinds of bind address.
const (
	KindTCP  Kind = iota + 1 // HOST:PORT, [IPv6]:PORT, tcp://...
	KindUnix                 // unix:PATH
	KindFD                   // fd://N, and systemd socket activation
)

// Address is a parsed bind address: what was asked for, not yet bound.
type Address struct {
	Kind Kind

	// Host is an IP literal (IPv6 without brackets, possibly with a %zone)
	// or a lower-case host name, resolved when bound. KindTCP only.
	Host string
	// Port is 0..65535; 0 lets the kernel choose. KindTCP only.
	Port int

	// Path is the socket file. A leading '@' names a socket in Linux's
	// abstract namespace, which has no file. KindUnix only.
	Path string

	// FD is an inherited descriptor number. KindFD only.
	FD int
	// Name is the socket's LISTEN_FDNAMES entry under systemd, if any. KindFD only.
	Name string
}

// String returns the address in canonical bind syntax: "127.0.0.1:8000",
// "[::1]:8000", "localhost:8000", "unix:/run/app.sock" or "fd://3".
func (a Address) String() string {
	switch a.Kind {
	case KindTCP:
		return net.JoinHostPort(a.Host, strconv.Itoa(a.Port))
	case KindUnix:
		return "unix:" + a.Path
	case KindFD:
		return "fd://" + strconv.Itoa(a.FD)
	}
	return fmt.Sprintf("<invalid address kind %d>", a.Kind)
}

// DefaultBind returns gunicorn's default bind address: "0.0.0.0:$PORT" when
// PORT is set to a non-empty value (as on Heroku and Cloud Run), otherwise
// "127.0.0.1:8000". env is typically os.Getenv.
func DefaultBind(env func(string) string) string {
	if port := env("PORT"); port != "" {
		return "0.0.0.0:" + port
	}
	return "127.0.0.1:8000"
}

// ParseAddress parses one bind address in gunicorn's syntax:
//
//	HOST              port 8000; HOST is an IPv4 literal or a host name
//	HOST:PORT         ":PORT" means 0.0.0.0:PORT
//	[IPv6]            port 8000
//	[IPv6]:PORT       e.g. [::]:8000, [::1]:8000, [fe80::1%eth0]:8000
//	tcp://...         any of the above
//	unix:PATH         also unix://PATH; "unix:@name" is an abstract socket
//	fd://N            an inherited listening socket
//
// Host names are only checked for syntax here; Bind resolves them. Unlike
// gunicorn, the empty string and a bare number ("8000") are errors rather
// than 0.0.0.0:8000 and a host named "8000".
func ParseAddress(s string) (Address, error) {
	a, err := parseAddress(s)
	if err != nil {
		return Address{}, fmt.Errorf("invalid bind address %q: %w", s, err)
	}
	return a, nil
}

func parseAddress(s string) (Address, error) {
	switch {
	case s == "":
		return Address{}, errors.New("empty")
	case strings.HasPrefix(s, "unix:"):
		return parseUnix(strings.TrimPrefix(s[len("unix:"):], "//"))
	case strings.HasPrefix(s, "fd://"):
		return parseFD(s[len("fd://"):])
	case strings.HasPrefix(s, "tcp://"):
		return parseHostPort(s[len("tcp://"):])
	}
	if scheme, _, ok := strings.Cut(s, "://"); ok {
		return Address{}, fmt.Errorf("unsupported scheme %q (want tcp://, unix: or fd://)", scheme)
	}
	return parseHostPort(s)
}

func parseUnix(path string) (Address, error) {
	switch {
	case path == "":
		return Address{}, errors.New("missing socket path")
	case strings.IndexByte(path, 0) >= 0:
		return Address{}, errors.New("socket path contains a NUL byte")
	case len(path) > maxUnixPath:
		return Address{}, fmt.Errorf("socket path is %d bytes, the kernel allows at most %d", len(path), maxUnixPath)
	}
	return Address{Kind: KindUnix, Path: path}, nil
}

func parseFD(s string) (Address, error) {
	if !isDigits(s) {
		return Address{}, fmt.Errorf("%q is not a file descriptor number", s)
	}
	fd, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return Address{}, fmt.Errorf("file descriptor %s out of range", s)
	}
	return Address{Kind: KindFD, FD: int(fd)}, nil
}

func parseHostPort(s string) (Address, error) {
	if s == "" {
		return Address{}, errors.New("missing host")
	}
	host, port, hasPort := s, "", false
	if rest, ok := strings.CutPrefix(s, "["); ok {
		h, after, ok := strings.Cut(rest, "]")
		if !ok {
			return Address{}, errors.New("missing ']'")
		}
		ip, err := netip.ParseAddr(h)
		if err != nil || !ip.Is6() {
			return Address{}, fmt.Errorf("%q in brackets is not an IPv6 address", h)
		}
		host = ip.String()
		switch {
		case after == "":
		case after[0] == ':':
			port, hasPort = after[1:], true
		default:
			return Address{}, fmt.Errorf("unexpected %q after ']'", after)
		}
	} else {
		switch strings.Count(s, ":") {
		case 0:
		case 1:
			host, port, _ = strings.Cut(s, ":")
			hasPort = true
		default:
			return Address{}, errors.New("an IPv6 address must be in brackets, e.g. [::1]:8000")
		}
		if err := checkHost(host); err != nil {
			if isDigits(host) && !hasPort {
				return Address{}, fmt.Errorf("missing host (did you mean \":%s\"?)", host)
			}
			return Address{}, err
		}
		if host == "" {
			host = "0.0.0.0"
		}
		host = strings.ToLower(host)
	}
	p := DefaultPort
	if hasPort {
		var err error
		if p, err = parsePort(port); err != nil {
			return Address{}, err
		}
	}
	return Address{Kind: KindTCP, Host: host, Port: p}, nil
}

// checkHost accepts "" (any address), an IPv4 literal, or a host name made
// of letters, digits, '-', '_' and '.' that is not all digits and dots.
func checkHost(h string) error {
	if h == "" {
		return nil
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if len(h) > 253 {
		return errors.New("host name longer than 253 bytes")
	}
	numeric := true
	for _, c := range h {
		switch {
		case c >= '0' && c <= '9', c == '.':
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_':
			numeric = false
		default:
			return fmt.Errorf("invalid host %q", h)
		}
	}
	if numeric {
		return fmt.Errorf("invalid host %q", h)
	}
	return nil
}

func parsePort(s string) (int, error) {
	if s == "" {
		return 0, errors.New("missing port after ':'")
	}
	if !isDigits(s) {
		return 0, fmt.Errorf("port %q is not a number", s)
	}
	p, err := strconv.Atoi(s)
	if err != nil || p > 65535 {
		return 0, errors.New("port out of range")
	}
	return p, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
