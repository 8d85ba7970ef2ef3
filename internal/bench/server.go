package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// server is one gorn master (and its workers) started for a run.
type server struct {
	cmd  *exec.Cmd
	lim  limit
	done chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every log line
	tail    []string      // the last log lines, for errors
	addr    string        // from the "listening" line
	ready   int           // "worker ready" lines
	planned int           // the workers the master set out to run
}

// readyTimeout bounds a server's start: importing a big app can take a while.
const readyTimeout = 60 * time.Second

// maxTail is how many log lines an error quotes.
const maxTail = 20

// scalingTo finds the count a master aims for once it has measured its first worker.
var scalingTo = regexp.MustCompile(`before scaling to (\d+)`)

// startServer runs exe (gorn) with args inside lim, bound to 127.0.0.1:0, and waits until
// it listens and workers (or, when 0, the count it chose itself) are ready.
func startServer(ctx context.Context, exe, dir string, env, args []string, lim limit, workers int) (*server, error) {
	full := append([]string{"--log-format", "json", "-b", "127.0.0.1:0"}, args...)
	cmd := exec.Command(exe, full...)
	cmd.Dir, cmd.Env = dir, env
	// Its own process group keeps a terminal's Ctrl-C for the bench, which stops servers
	// in order; Pdeathsig stops them if the bench itself is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("starting the server: %w", err)
	}
	cmd.Stdout = io.Discard
	s := &server{cmd: cmd, lim: lim, done: make(chan struct{}), changed: make(chan struct{})}
	if err := lim.start(cmd); err != nil {
		return nil, fmt.Errorf("starting the server: %w", err)
	}
	go s.read(stderr)
	if err := s.waitReady(ctx, workers); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *server) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var m struct {
			Msg     string `json:"msg"`
			Address string `json:"address"`
			Workers *int   `json:"workers"`
		}
		_ = json.Unmarshal([]byte(line), &m)
		s.mu.Lock()
		s.tail = append(s.tail, line)
		if len(s.tail) > maxTail {
			s.tail = s.tail[1:]
		}
		switch {
		case m.Msg == "listening" && s.addr == "":
			s.addr = strings.TrimPrefix(m.Address, "tcp://")
		case m.Msg == "worker ready":
			s.ready++
		case strings.HasPrefix(m.Msg, "workers=") && m.Workers != nil && s.planned == 0:
			s.planned = *m.Workers
			if sm := scalingTo.FindStringSubmatch(m.Msg); sm != nil {
				s.planned, _ = strconv.Atoi(sm[1])
			}
		}
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
	_ = s.cmd.Wait()
	close(s.done)
}

func (s *server) waitReady(ctx context.Context, workers int) error {
	timeout := time.NewTimer(readyTimeout)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		want := workers
		if want == 0 {
			want = s.planned
		}
		ok := s.addr != "" && want > 0 && s.ready >= want
		changed := s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-s.done:
			return fmt.Errorf("starting the server: gorn exited (%v) before it was ready:\n%s", s.cmd.ProcessState, s.logTail())
		case <-timeout.C:
			return fmt.Errorf("starting the server: not ready within %s:\n%s", readyTimeout, s.logTail())
		case <-ctx.Done():
			return fmt.Errorf("starting the server: %w", ctx.Err())
		}
	}
}

func (s *server) logTail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.tail, "\n")
}

func (s *server) address() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// pids is the server tree: the limit's own list when it keeps one (a cgroup), else the
// master's descendants.
func (s *server) pids() []int {
	if p := s.lim.pids(); p != nil {
		return p
	}
	return tree(s.cmd.Process.Pid)
}

// stop asks the master to shut down gracefully (SIGTERM), then kills the tree if it has
// not gone within a few seconds; a bench has no requests worth waiting long for.
func (s *server) stop() {
	pids := tree(s.cmd.Process.Pid)
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	for _, p := range pids[1:] {
		// Workers normally leave with their master; a process that is gone (or whose
		// pid is not this tree's any more, being not our child's child) is not signalled.
		if err := syscall.Kill(p, 0); err == nil && isChildOf(p, pids) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}
}

// isChildOf says whether p's parent is in pids (or init, which adopts orphans).
func isChildOf(p int, pids []int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return false
	}
	pp, err := strconv.Atoi(f[1])
	if err != nil {
		return false
	}
	for _, q := range pids {
		if q == pp {
			return true
		}
	}
	return pp == 1
}

// errExited reports a server that died during a run.
var errExited = errors.New("the server exited during the run")
