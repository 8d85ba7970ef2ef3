package socket

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/internal/testenv"
)

func mustParse(t *testing.T, s string) Address {
	t.Helper()
	a, err := ParseAddress(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// bindOne binds s and closes the listener when the test ends.
func bindOne(t *testing.T, s string, opts Options) *Listener {
	t.Helper()
	ls, err := Bind([]Address{mustParse(t, s)}, opts)
	if err != nil {
		t.Fatalf("Bind(%s): %v", s, err)
	}
	if len(ls) != 1 {
		t.Fatalf("Bind(%s) returned %d listeners", s, len(ls))
	}
	t.Cleanup(func() { ls[0].Close() })
	return ls[0]
}

// shortTempDir returns a directory with a path short enough for sun_path
// (t.TempDir embeds the test name).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gorn-sock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func requireIPv6(t *testing.T) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		defer unix.Close(fd)
		err = unix.Bind(fd, &unix.SockaddrInet6{Addr: [16]byte{15: 1}})
	}
	if err != nil {
		testenv.Missing(t, "IPv6 loopback unavailable: %v", err)
	}
}

// checkFlags fails unless fd is blocking and close-on-exec.
func checkFlags(t *testing.T, fd int) {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fl&unix.O_NONBLOCK != 0 {
		t.Errorf("fd %d is non-blocking, want blocking", fd)
	}
	fdfl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fdfl&unix.FD_CLOEXEC == 0 {
		t.Errorf("fd %d is not close-on-exec", fd)
	}
}

func sockoptInt(t *testing.T, fd, level, opt int) int {
	t.Helper()
	v, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		t.Fatalf("getsockopt(%d, %d, %d): %v", fd, level, opt, err)
	}
	return v
}

func TestBindTCP(t *testing.T) {
	tests := []struct {
		addr   string
		ipv6   bool
		family Family
		prefix string // of String()
	}{
		{"127.0.0.1:0", false, FamilyIPv4, "127.0.0.1:"},
		{"localhost:0", false, FamilyIPv4, "127.0.0.1:"},
		{"tcp://127.0.0.1:0", false, FamilyIPv4, "127.0.0.1:"},
		{"[::1]:0", true, FamilyIPv6, "[::1]:"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if tt.ipv6 {
				requireIPv6(t)
			}
			l := bindOne(t, tt.addr, Options{})
			if l.Family() != tt.family {
				t.Errorf("Family() = %v, want %v", l.Family(), tt.family)
			}
			if l.Port() == 0 {
				t.Errorf("Port() = 0 after binding port 0")
			}
			if want := tt.prefix + strconv.Itoa(l.Port()); l.String() != want {
				t.Errorf("String() = %q, want %q", l.String(), want)
			}
			if l.Address() != mustParse(t, tt.addr) {
				t.Errorf("Address() = %v, want %v", l.Address(), tt.addr)
			}
			if l.File() == nil || int(l.File().Fd()) != l.Fd() {
				t.Errorf("File() does not hold fd %d", l.Fd())
			}
			checkFlags(t, l.Fd())
			for _, o := range []sockopt{
				{unix.SOL_SOCKET, unix.SO_ACCEPTCONN, "SO_ACCEPTCONN"},
				{unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR"},
				{unix.IPPROTO_TCP, unix.TCP_NODELAY, "TCP_NODELAY"},
			} {
				if sockoptInt(t, l.Fd(), o.level, o.opt) == 0 {
					t.Errorf("%s is off", o.name)
				}
			}
			if sockoptInt(t, l.Fd(), unix.SOL_SOCKET, unix.SO_REUSEPORT) != 0 {
				t.Errorf("SO_REUSEPORT is on without ReusePort")
			}
			if tt.ipv6 && sockoptInt(t, l.Fd(), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY) != 1 {
				t.Errorf("IPV6_V6ONLY is off")
			}
			// A connection is accepted and inherits TCP_NODELAY.
			c, err := net.Dial("tcp", l.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			nfd, _, err := unix.Accept4(l.Fd(), unix.SOCK_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(nfd)
			if sockoptInt(t, nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY) == 0 {
				t.Errorf("accepted connection did not inherit TCP_NODELAY")
			}
		})
	}
}

func TestBacklogAndQueueDepth(t *testing.T) {
	l := bindOne(t, "127.0.0.1:0", Options{Backlog: 7})
	queued, backlog, err := QueueDepth(l.Fd())
	if err != nil || queued != 0 || backlog != 7 {
		t.Fatalf("QueueDepth = %d, %d, %v; want 0, 7, nil", queued, backlog, err)
	}
	for range 3 {
		c, err := net.Dial("tcp", l.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	// The handshake completes in the kernel; the server side may lag the dial.
	deadline := time.Now().Add(5 * time.Second)
	for {
		queued, backlog, err = QueueDepth(l.Fd())
		if err != nil {
			t.Fatal(err)
		}
		if queued == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if queued != 3 || backlog != 7 {
		t.Fatalf("QueueDepth = %d, %d; want 3, 7", queued, backlog)
	}

	def := bindOne(t, "127.0.0.1:0", Options{})
	somaxconn := readInt(t, "/proc/sys/net/core/somaxconn")
	if _, backlog, err := QueueDepth(def.Fd()); err != nil || int(backlog) != min(DefaultBacklog, somaxconn) {
		t.Errorf("default backlog = %d, %v; want min(%d, somaxconn %d)", backlog, err, DefaultBacklog, somaxconn)
	}
}

func readInt(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestQueueDepthErrors(t *testing.T) {
	u := bindOne(t, "unix:"+filepath.Join(shortTempDir(t), "q.sock"), Options{})
	if _, _, err := QueueDepth(u.Fd()); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("QueueDepth(unix socket) error = %v, want ErrUnsupported", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, _, err := QueueDepth(fd); err == nil || !strings.Contains(err.Error(), "not listening") {
		t.Errorf("QueueDepth(unconnected TCP socket) error = %v, want not listening", err)
	}
	if _, _, err := QueueDepth(-1); !errors.Is(err, unix.EBADF) {
		t.Errorf("QueueDepth(-1) error = %v, want EBADF", err)
	}
}

func TestBindAddressInUse(t *testing.T) {
	// Most servers do not set SO_REUSEPORT, so gorn cannot share their port.
	holder, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	addr := holder.Addr().String()
	_, err = Bind([]Address{mustParse(t, addr)}, Options{})
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("Bind(%s) held by another server: error %v, want EADDRINUSE", addr, err)
	}
	if want := "binding " + addr + ": address already in use"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func TestBindSamePortTwice(t *testing.T) {
	// A second gorn on a bound address fails, as gunicorn does; with --reuse-port on
	// both (gunicorn's meaning), the two share it.
	first := bindOne(t, "127.0.0.1:0", Options{})
	if _, err := Bind([]Address{mustParse(t, first.String())}, Options{}); !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("second Bind(%s) without ReusePort: error %v, want EADDRINUSE", first, err)
	}
	shared := bindOne(t, "127.0.0.1:0", Options{ReusePort: true})
	if sockoptInt(t, shared.Fd(), unix.SOL_SOCKET, unix.SO_REUSEPORT) != 1 {
		t.Errorf("SO_REUSEPORT is off with ReusePort")
	}
	second := bindOne(t, shared.String(), Options{ReusePort: true})
	if second.String() != shared.String() {
		t.Errorf("second bind at %s, want %s", second, shared)
	}
}

func TestBindRejects(t *testing.T) {
	a := mustParse(t, "127.0.0.1:0")
	tests := []struct {
		name  string
		addrs []Address
		opts  Options
		want  string
	}{
		{"negative backlog", []Address{a}, Options{Backlog: -1}, "invalid backlog -1"},
		{"duplicate", []Address{a, mustParse(t, "tcp://127.0.0.1:0")}, Options{}, "bind address 127.0.0.1:0 given twice"},
		{"zero address", []Address{{}}, Options{}, "invalid address kind"},
		{"empty unix path", []Address{{Kind: KindUnix}}, Options{}, "missing socket path"},
		{"not a local address", []Address{mustParse(t, "192.0.2.1:0")}, Options{}, "binding 192.0.2.1:0: cannot assign requested address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ls, err := Bind(tt.addrs, tt.opts)
			if err == nil {
				closeAll(ls)
				t.Fatalf("Bind succeeded, want error %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want %q", err, tt.want)
			}
		})
	}
}

func TestBindPartialCleanup(t *testing.T) {
	dir := shortTempDir(t)
	// A port that is free now; the failed Bind below must leave it free again.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()

	sock := filepath.Join(dir, "first.sock")
	bad := "unix:" + filepath.Join(dir, "missing", "second.sock")
	addrs := []Address{
		mustParse(t, "127.0.0.1:"+strconv.Itoa(port)),
		mustParse(t, "unix:"+sock),
		mustParse(t, bad),
	}
	ls, err := Bind(addrs, Options{})
	if err == nil {
		closeAll(ls)
		t.Fatal("Bind succeeded with a bad address")
	}
	if ls != nil {
		t.Errorf("Bind returned listeners with an error")
	}
	if !errors.Is(err, unix.ENOENT) || !strings.HasPrefix(err.Error(), "binding "+bad+": ") {
		t.Errorf("error = %q, want it to name %s and wrap ENOENT", err, bad)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("first unix socket file left behind: %v", err)
	}
	// A listener without SO_REUSEPORT could not bind while ours were open.
	again, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("TCP socket still bound after failed Bind: %v", err)
	}
	again.Close()
}

func TestBindUnix(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "app.sock")
	l := bindOne(t, "unix:"+path, Options{UnixMode: 0o600})
	if l.String() != "unix:"+path || l.Family() != FamilyUnix || l.Port() != 0 {
		t.Errorf("String, Family, Port = %q, %v, %d", l, l.Family(), l.Port())
	}
	checkFlags(t, l.Fd())
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket file mode %v, want socket 0600", fi.Mode())
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	// A live socket is in use.
	_, err = Bind([]Address{mustParse(t, "unix:"+path)}, Options{})
	if !errors.Is(err, unix.EADDRINUSE) || err.Error() != "binding unix:"+path+": address already in use" {
		t.Errorf("binding a live socket: error %v, want address already in use", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("failed bind removed the live socket file: %v", err)
	}

	// Close removes the file it created.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left the socket file: %v", err)
	}
}

// staleSocket leaves a socket file at path that nobody listens on.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
}

func TestBindUnixStale(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "stale.sock")
	staleSocket(t, path)
	l := bindOne(t, "unix:"+path, Options{})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("stale socket was not replaced: %v", err)
	}
	c.Close()
	if l.String() != "unix:"+path {
		t.Errorf("String() = %q", l)
	}
}

func TestBindUnixNotASocket(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "file")
	if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "dir")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, sub} {
		_, err := Bind([]Address{mustParse(t, "unix:"+p)}, Options{})
		if want := "binding unix:" + p + ": " + p + " exists and is not a socket"; err == nil || err.Error() != want {
			t.Errorf("error = %v, want %q", err, want)
		}
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
		t.Errorf("regular file changed: %q, %v", b, err)
	}
}

func TestBindUnixOwnership(t *testing.T) {
	dir := shortTempDir(t)

	t.Run("replaced file is not removed", func(t *testing.T) {
		path := filepath.Join(dir, "replaced.sock")
		l := bindOne(t, "unix:"+path, Options{})
		// Another server removes our file and binds its own at the path.
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		other := bindOne(t, "unix:"+path, Options{})
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); err != nil {
			t.Fatalf("Close removed another process's socket file: %v", err)
		}
		other.Close()
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("owner's Close left the file: %v", err)
		}
	})

	t.Run("adopted socket keeps its file", func(t *testing.T) {
		path := filepath.Join(dir, "adopted.sock")
		owner := bindOne(t, "unix:"+path, Options{})
		fd, err := unix.Dup(owner.Fd())
		if err != nil {
			t.Fatal(err)
		}
		adopted := bindOne(t, "fd://"+strconv.Itoa(fd), Options{})
		if adopted.String() != "unix:"+path || adopted.Family() != FamilyUnix {
			t.Errorf("adopted String, Family = %q, %v", adopted, adopted.Family())
		}
		adopted.Close()
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("closing an adopted socket removed its file: %v", err)
		}
	})

	t.Run("relative path survives chdir", func(t *testing.T) {
		t.Chdir(dir)
		l := bindOne(t, "unix:rel.sock", Options{})
		if l.String() != "unix:rel.sock" {
			t.Errorf("String() = %q", l)
		}
		if err := os.Chdir(os.TempDir()); err != nil {
			t.Fatal(err)
		}
		l.Close()
		if _, err := os.Lstat(filepath.Join(dir, "rel.sock")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Close after chdir left the file: %v", err)
		}
	})
}

func TestBindUnixAbstract(t *testing.T) {
	name := fmt.Sprintf("@gorn-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	l := bindOne(t, "unix:"+name, Options{})
	if l.String() != "unix:"+name {
		t.Errorf("String() = %q, want unix:%s", l, name)
	}
	c, err := net.Dial("unix", name)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := os.Lstat(name); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("abstract socket created a file %q", name)
	}
}

// rawListener returns a listening TCP socket on 127.0.0.1 that the test owns.
func rawListener(t *testing.T, flags int) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|flags, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 5); err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestBindFD(t *testing.T) {
	// Inherited sockets are often non-blocking and not close-on-exec.
	fd := rawListener(t, unix.SOCK_NONBLOCK)
	l := bindOne(t, "fd://"+strconv.Itoa(fd), Options{})
	checkFlags(t, fd)
	if l.Fd() != fd || l.Address() != (Address{Kind: KindFD, FD: fd}) {
		t.Errorf("Fd, Address = %d, %v; want %d, fd://%d", l.Fd(), l.Address(), fd, fd)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*unix.SockaddrInet4).Port
	if l.Family() != FamilyIPv4 || l.Port() != port || l.String() != "127.0.0.1:"+strconv.Itoa(port) {
		t.Errorf("Family, Port, String = %v, %d, %q", l.Family(), l.Port(), l)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("Close did not close the adopted fd")
	}
}

func TestBindFDRejects(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	udp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	const closed = 1 << 20 // above any descriptor this process has open
	open := []int{p[0], p[1], udp, idle}
	defer func() {
		for _, fd := range open {
			unix.Close(fd)
		}
	}()

	tests := []struct {
		name string
		fd   int
		want string
	}{
		{"pipe", p[0], "socket operation on non-socket"},
		{"udp", udp, "not a stream socket"},
		{"not listening", idle, "socket is not listening"},
		{"closed", closed, "bad file descriptor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Bind([]Address{{Kind: KindFD, FD: tt.fd}}, Options{})
			want := fmt.Sprintf("adopting fd://%d: %s", tt.fd, tt.want)
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error = %v, want %q", err, want)
			}
		})
	}
	for _, fd := range open {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			t.Errorf("rejected fd %d was closed: %v", fd, err)
		}
	}

	// A good fd adopted before a bad one is closed again: no partial binds.
	good := rawListener(t, unix.SOCK_CLOEXEC)
	_, err = Bind([]Address{{Kind: KindFD, FD: good}, {Kind: KindFD, FD: udp}}, Options{})
	if err == nil {
		t.Fatal("Bind succeeded with a UDP socket")
	}
	if _, err := unix.FcntlInt(uintptr(good), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("adopted fd %d left open after failed Bind", good)
		unix.Close(good)
	}
}
