package socket

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/internal/testenv"
)

// helperEnv makes the test binary act as a socket-activated service
// (systemdHelper) instead of running tests.
const helperEnv = "GORN_SOCKET_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "systemd" {
		os.Exit(systemdHelper())
	}
	os.Exit(m.Run())
}

type helperListener struct {
	String, Name, Family string
	Fd                   int
	NonblockBefore       bool
}

type helperReport struct {
	Listeners []helperListener
	WrongPID  int
	Err       string
}

// systemdHelper adopts its sockets with FromSystemd, reports them as JSON
// on stdout, and greets one queued client on the first socket.
func systemdHelper() int {
	var r helperReport
	enc := json.NewEncoder(os.Stdout)
	defer enc.Encode(&r)

	wrong, err := FromSystemd(os.Getenv, os.Getpid()+1)
	if err != nil {
		r.Err = err.Error()
		return 1
	}
	r.WrongPID = len(wrong)

	var nonblock []bool
	for fd := 3; fd < 6; fd++ {
		fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		nonblock = append(nonblock, fl&unix.O_NONBLOCK != 0)
	}
	ls, err := FromSystemd(os.Getenv, os.Getpid())
	if err != nil {
		r.Err = err.Error()
		return 1
	}
	for i, l := range ls {
		fl, _ := unix.FcntlInt(uintptr(l.Fd()), unix.F_GETFL, 0)
		fdfl, _ := unix.FcntlInt(uintptr(l.Fd()), unix.F_GETFD, 0)
		if fl&unix.O_NONBLOCK != 0 || fdfl&unix.FD_CLOEXEC == 0 {
			r.Err = fmt.Sprintf("fd %d: flags %#x, fd flags %#x: want blocking, close-on-exec", l.Fd(), fl, fdfl)
			return 1
		}
		r.Listeners = append(r.Listeners, helperListener{
			String: l.String(), Name: l.Address().Name, Family: l.Family().String(),
			Fd: l.Fd(), NonblockBefore: i < len(nonblock) && nonblock[i],
		})
	}
	if len(ls) > 0 {
		nfd, _, err := unix.Accept4(ls[0].Fd(), unix.SOCK_CLOEXEC)
		if err != nil {
			r.Err = "accept: " + err.Error()
			return 1
		}
		unix.Write(nfd, []byte("hello"))
		unix.Close(nfd)
	}
	return 0
}

func TestFromSystemdSubprocess(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		testenv.Missing(t, "no sh to set LISTEN_PID before exec")
	}
	tcp := bindOne(t, "127.0.0.1:0", Options{})
	sock := filepath.Join(shortTempDir(t), "act.sock")
	unixL := bindOne(t, "unix:"+sock, Options{})
	// A socket systemd (or anyone) left non-blocking; FromSystemd fixes it.
	// Set after os.NewFile so that os/exec does not clear it first.
	rawFd := rawListener(t, unix.SOCK_CLOEXEC)
	raw := os.NewFile(uintptr(rawFd), "raw")
	defer raw.Close()
	if err := unix.SetNonblock(rawFd, true); err != nil {
		t.Fatal(err)
	}
	rawName, err := unix.Getsockname(rawFd)
	if err != nil {
		t.Fatal(err)
	}
	rawAddr := fmt.Sprintf("127.0.0.1:%d", rawName.(*unix.SockaddrInet4).Port)

	// A client queued before the service starts, as with socket activation.
	c, err := net.Dial("tcp", tcp.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// sh's pid is the helper's pid after exec, as systemd arranges.
	cmd := exec.Command(sh, "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0"`, os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=systemd", "LISTEN_FDS=3", "LISTEN_FDNAMES=web:admin:raw")
	if os.Getenv("GORACE") == "" {
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0") // -race sleeps 1 s at exit
	}
	cmd.ExtraFiles = []*os.File{tcp.File(), unixL.File(), raw}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\nstdout: %s\nstderr: %s", err, stdout.Bytes(), stderr.Bytes())
	}
	var r helperReport
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("helper output %q: %v (stderr %s)", stdout.Bytes(), err, stderr.Bytes())
	}
	if r.Err != "" {
		t.Fatalf("helper: %s", r.Err)
	}
	if r.WrongPID != 0 {
		t.Errorf("FromSystemd with another pid adopted %d sockets, want 0", r.WrongPID)
	}
	want := []helperListener{
		{String: tcp.String(), Name: "web", Family: "ipv4", Fd: 3},
		{String: "unix:" + sock, Name: "admin", Family: "unix", Fd: 4},
		{String: rawAddr, Name: "raw", Family: "ipv4", Fd: 5, NonblockBefore: true},
	}
	if fmt.Sprint(r.Listeners) != fmt.Sprint(want) {
		t.Errorf("helper adopted\n%+v\nwant\n%+v", r.Listeners, want)
	}
	// The helper has exited, so its greeting is already in our receive buffer.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	greeting, readErr := io.ReadAll(c)
	if readErr != nil || string(greeting) != "hello" {
		t.Errorf("queued client read %q, %v; want hello from the helper", greeting, readErr)
	}
	// The helper did not own the unix socket file, so it left it alone.
	if _, err := os.Lstat(sock); err != nil {
		t.Errorf("helper removed the socket file: %v", err)
	}
}

func TestFromSystemdEnv(t *testing.T) {
	const pid = 4242
	tests := []struct {
		name string
		env  map[string]string
		err  string // "" means no error and no listeners
	}{
		{"not activated", map[string]string{}, ""},
		{"other pid", map[string]string{"LISTEN_PID": "1", "LISTEN_FDS": "2"}, ""},
		{"no fds", map[string]string{"LISTEN_PID": "4242"}, ""},
		{"zero fds", map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "0"}, ""},
		{"bad pid", map[string]string{"LISTEN_PID": "x", "LISTEN_FDS": "1"}, `invalid LISTEN_PID "x"`},
		{"bad fds", map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "two"}, `invalid LISTEN_FDS "two"`},
		{"negative fds", map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "-1"}, `invalid LISTEN_FDS "-1"`},
		{"names mismatch", map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a"}, "LISTEN_FDNAMES has 1 names for 2 descriptors"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ls, err := FromSystemd(func(k string) string { return tt.env[k] }, pid)
			if tt.err == "" {
				if err != nil || len(ls) != 0 {
					t.Errorf("FromSystemd = %d listeners, %v; want none", len(ls), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.HasPrefix(err.Error(), "systemd socket activation: ") {
				t.Errorf("FromSystemd error = %v, want %q", err, tt.err)
			}
		})
	}
}
