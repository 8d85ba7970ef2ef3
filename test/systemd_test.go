package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unitFile is a systemd unit: section -> key -> values, in order.
type unitFile map[string]map[string][]string

func readUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q is not KEY=VALUE in a section", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func (u unitFile) get(section, key string) string {
	if vs := u[section][key]; len(vs) > 0 {
		return vs[len(vs)-1]
	}
	return ""
}

// TestSystemdUnitsServeWithSocketActivation checks the example units agree with gorn and
// each other, then runs the service's ExecStart as systemd would: with the socket's
// listener passed as fd 3 (LISTEN_FDS, LISTEN_PID), NOTIFY_SOCKET set, in the working
// directory (the example app stands for /srv/app). gorn must report READY=1, serve on the
// passed socket, reload on ExecReload's HUP and stop with exit 0 on KillSignal well within
// TimeoutStopSec.
func TestSystemdUnitsServeWithSocketActivation(t *testing.T) {
	dir := filepath.Join(repoRoot, "deploy", "systemd")
	sock := readUnit(t, filepath.Join(dir, "gorn.socket"))
	svc := readUnit(t, filepath.Join(dir, "gorn.service"))

	for _, c := range []struct{ section, key, want string }{
		{"Service", "Type", "notify"},
		{"Service", "NotifyAccess", "main"},
		{"Service", "KillMode", "mixed"},
		{"Service", "KillSignal", "SIGTERM"},
		{"Service", "ExecReload", "/bin/kill -HUP $MAINPID"},
		{"Unit", "Requires", "gorn.socket"},
	} {
		if got := svc.get(c.section, c.key); got != c.want {
			t.Errorf("gorn.service [%s] %s=%q, want %q", c.section, c.key, got, c.want)
		}
	}
	if !strings.Contains(svc.get("Unit", "After"), "gorn.socket") {
		t.Error("gorn.service does not start after gorn.socket")
	}
	listen := sock.get("Socket", "ListenStream")
	if listen == "" {
		t.Fatal("gorn.socket has no ListenStream")
	}
	exec0 := strings.Fields(svc.get("Service", "ExecStart"))
	if len(exec0) < 2 || filepath.Base(exec0[0]) != "gorn" {
		t.Fatalf("ExecStart %q does not run gorn", exec0)
	}
	args := exec0[1:]
	graceful, delay := 30.0, 0.0
	for i, a := range args {
		if a == "-b" || strings.HasPrefix(a, "--bind") {
			t.Errorf("ExecStart has %s: gorn ignores it under socket activation, so it misleads", a)
		}
		if i+1 < len(args) {
			switch a {
			case "--graceful-timeout":
				graceful, _ = strconv.ParseFloat(args[i+1], 64)
			case "--shutdown-delay":
				delay, _ = strconv.ParseFloat(args[i+1], 64)
			}
		}
	}
	stopTimeout, err := strconv.ParseFloat(strings.TrimSuffix(svc.get("Service", "TimeoutStopSec"), "s"), 64)
	if err != nil || stopTimeout <= graceful+delay {
		t.Errorf("TimeoutStopSec %q must exceed --shutdown-delay %v + --graceful-timeout %v", svc.get("Service", "TimeoutStopSec"), delay, graceful)
	}

	// What systemd does: bind ListenStream (on loopback, a free port, instead of *:8000),
	// listen with the socket's Backlog, and pass it as fd 3.
	if _, err := strconv.Atoi(listen); err != nil {
		t.Fatalf("ListenStream=%s: the test binds a port number", listen)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lnFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the duplicate in lnFile keeps the socket

	tmp := t.TempDir()
	notifyPath := filepath.Join(tmp, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()

	// ExecStart's binary is the built gorn; the venv it would live in is the tests'. The
	// metrics port, like the socket's, is a free one on loopback.
	args = append([]string{}, args...)
	for i, a := range args {
		if a == "--metrics-bind" && i+1 < len(args) {
			args[i+1] = "127.0.0.1:0"
		}
	}
	argv := append([]string{"sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, gornBin}, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = filepath.Join(repoRoot, "examples", "flask")
	cmd.Env = append(cleanEnv(), "LISTEN_FDS=1", "LISTEN_FDNAMES=gorn.socket", "NOTIFY_SOCKET="+notifyPath,
		"VIRTUAL_ENV="+filepath.Dir(filepath.Dir(python(t))))
	cmd.ExtraFiles = []*os.File{lnFile}
	logs, done := startProcess(t, cmd, "gorn", syscall.SIGKILL)
	lnFile.Close()

	_ = notify.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 4096)
	n, _, err := notify.ReadFromUnix(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "READY=1") {
		t.Fatalf("no READY=1 on NOTIFY_SOCKET within 30 s: %q, %v", buf[:n], err)
	}
	if got := logAddress(logs.String(), `"listening"`); got != addr {
		t.Errorf("gorn listens on %q, not on the passed socket %s", got, addr)
	}
	// Ready means serving: no waiting.
	if code, body := get(t, "http://"+addr+"/"); code != 200 || body != "Hello, World!\n" {
		t.Errorf("GET / on the socket systemd passed: %d %q", code, body)
	}
	if code, _ := get(t, "http://"+logAddress(logs.String(), "serving /metrics")+"/readyz"); code != 200 {
		t.Errorf("/readyz on the ExecStart's --metrics-bind: %d", code)
	}

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil { // ExecReload
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(logs.String(), "worker ready") < 2*workerCount(logs.String()) {
		if time.Now().After(deadline) {
			t.Fatal("the reload did not replace the workers within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, _ := get(t, "http://"+addr+"/"); code != 200 {
		t.Errorf("GET / after the reload: %d", code)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil { // KillSignal
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(time.Duration(stopTimeout) * time.Second):
		t.Fatalf("gorn did not stop within TimeoutStopSec (%v s)", stopTimeout)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("gorn exited %d on SIGTERM", code)
	}
}

// logAddress returns the "address" field of the first JSON log line holding msg.
func logAddress(log, msg string) string {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, msg) {
			continue
		}
		var rec struct{ Address string }
		if json.Unmarshal([]byte(line), &rec) == nil {
			return rec.Address
		}
	}
	return ""
}

// workerCount reads the worker count from gorn's "workers=N (" sizing line.
func workerCount(log string) int {
	i := strings.Index(log, "workers=")
	if i < 0 {
		return 1 << 30
	}
	var n int
	fmt.Sscanf(log[i:], "workers=%d", &n)
	return max(n, 1)
}
