package master

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/gornhq/gorn/internal/scoreboard"
)

type fakeProc struct {
	pid      int
	slot     int
	gen      int
	signals  []syscall.Signal
	killed   bool
	released int
	status   scoreboard.Slot
	clock    *time.Duration // the master's
}

func (p *fakeProc) Pid() int                      { return p.pid }
func (p *fakeProc) Signal(s syscall.Signal) error { p.signals = append(p.signals, s); return nil }
func (p *fakeProc) Kill() error                   { p.killed = true; return nil }
func (p *fakeProc) Status() scoreboard.Slot       { return p.status }
func (p *fakeProc) Release()                      { p.released++ }
func (p *fakeProc) got(s syscall.Signal) bool {
	return len(p.signals) > 0 && p.signals[len(p.signals)-1] == s
}
func (p *fakeProc) ready() { p.status.PID, p.status.State = uint64(p.pid), scoreboard.StateReady }
func (p *fakeProc) busyFor(d time.Duration, desc string) {
	p.status.BusySince = uint64(*p.clock - d)
	p.status.Desc = desc
}

type fakeSpawner struct {
	next  int
	procs []*fakeProc
	fail  bool
	clock *time.Duration
	ages  []int // SpawnRequest.Age of every spawn
	// forked, if set, is called by each start (the fork), off the loop.
	forked func(pid int)
}

// Spawn creates the fake process on the loop, so spawns are numbered in the loop's order;
// the master runs the returned start in a goroutine.
func (s *fakeSpawner) Spawn(r SpawnRequest) func() (Process, error) {
	if s.fail {
		return func() (Process, error) { return nil, os.ErrNotExist }
	}
	s.next++
	s.ages = append(s.ages, r.Age)
	p := &fakeProc{pid: 1000 + s.next, slot: r.Slot, gen: r.Generation, clock: s.clock}
	p.status.PID = uint64(p.pid)
	p.status.State = scoreboard.StateBooting
	s.procs = append(s.procs, p)
	return func() (Process, error) {
		if s.forked != nil {
			s.forked(p.pid)
		}
		return p, nil
	}
}

// alive returns the fake processes the master still tracks.
func (s *fakeSpawner) alive(m *Master) []*fakeProc {
	var out []*fakeProc
	for _, w := range m.workers {
		out = append(out, w.proc.(*fakeProc))
	}
	return out
}

type harness struct {
	t     *testing.T
	m     *Master
	sp    *fakeSpawner
	clock time.Duration
	logs  *observer.ObservedLogs
}

func newHarness(t *testing.T, cfg Config, hooks Hooks) *harness {
	return newHarnessWith(t, cfg, hooks, &fakeSpawner{})
}

func newHarnessWith(t *testing.T, cfg Config, hooks Hooks, sp *fakeSpawner) *harness {
	core, logs := observer.New(zap.DebugLevel)
	// The clock starts where CLOCK_MONOTONIC might be on a machine up for a day.
	h := &harness{t: t, sp: sp, clock: 24 * time.Hour, logs: logs}
	h.sp.clock = &h.clock
	if cfg.GracefulTimeout == 0 {
		cfg.GracefulTimeout = 30 * time.Second
	}
	h.m = New(cfg, h.sp, hooks, zap.New(core), func() time.Duration { return h.clock }, func(n int) int { return n - 1 })
	h.manage()
	return h
}

// manage is the loop's step after an event, with every spawn it starts reported back, as
// Run would (in an order of its choosing).
func (h *harness) manage() {
	h.m.manage()
	for h.m.starting > 0 {
		h.m.onSpawned(<-h.m.spawned)
		h.m.manage()
	}
}

func (h *harness) advance(d time.Duration) { h.clock += d; h.m.onTick(); h.settle(); h.manage() }
func (h *harness) signal(s syscall.Signal) { h.m.onSignal(s); h.settle(); h.manage() }

// settle waits for a reload started off the loop and hands its result to the loop, as
// Run would.
func (h *harness) settle() {
	for h.m.reloading {
		h.m.onReloaded(<-h.m.reloads)
	}
}
func (h *harness) exit(p *fakeProc, ws syscall.WaitStatus) {
	h.m.onExit(Exit{Pid: p.pid, Status: ws})
	h.manage()
}
func (h *harness) readyAll() {
	for _, p := range h.sp.alive(h.m) {
		p.ready()
	}
	h.advance(50 * time.Millisecond)
}

func exitCode(c int) syscall.WaitStatus            { return syscall.WaitStatus(c << 8) }
func killedBy(s syscall.Signal) syscall.WaitStatus { return syscall.WaitStatus(s) }

// TestReadyEventBeforeTick: a worker's readiness is acted on when it is announced, not at
// the next tick (the clock does not move).
func TestReadyEventBeforeTick(t *testing.T) {
	h := newHarness(t, Config{Workers: 1}, Hooks{})
	p := h.sp.procs[0]
	h.m.checkBooting()
	if h.m.workers[0].ready() {
		t.Fatal("ready before the worker said so")
	}
	p.ready()
	h.m.checkBooting()
	if !h.m.workers[0].ready() || !h.m.everReady {
		t.Fatal("the announced readiness was not seen")
	}
}

// TestReadyBeforeSpawnReported: a worker that is ready before its start reports its pid is
// seen ready as soon as it does.
func TestReadyBeforeSpawnReported(t *testing.T) {
	h := newHarness(t, Config{Workers: 1}, Hooks{})
	h.exit(h.sp.procs[0], killedBy(syscall.SIGKILL)) // its replacement starts
	h.m.manage()
	if h.m.starting != 0 {
		t.Fatalf("%d spawns in flight", h.m.starting)
	}
	h.clock += time.Millisecond
	start := h.sp.Spawn(SpawnRequest{Slot: 1})
	w := &worker{slot: 1, gen: h.m.gen, spawnedAt: h.clock}
	h.m.workers = append(h.m.workers, w)
	h.m.starting++
	proc, _ := start()
	proc.(*fakeProc).ready()
	h.m.onSpawned(spawnResult{w: w, proc: proc})
	if !w.ready() {
		t.Fatal("a worker ready before its pid was reported is not seen ready then")
	}
}

func TestSpawnsAndRespawns(t *testing.T) {
	h := newHarness(t, Config{Workers: 3}, Hooks{})
	if got := len(h.sp.procs); got != 3 {
		t.Fatalf("spawned %d workers, want 3", got)
	}
	h.readyAll()
	victim := h.sp.procs[1]
	h.exit(victim, killedBy(syscall.SIGKILL))
	if got := len(h.sp.alive(h.m)); got != 3 {
		t.Fatalf("after a crash %d workers, want 3", got)
	}
	if h.sp.procs[3].slot != victim.slot {
		t.Errorf("replacement took slot %d, want the freed slot %d", h.sp.procs[3].slot, victim.slot)
	}
	if h.m.exits[ReasonSignal] != 1 {
		t.Errorf("exits = %v, want one %q", h.m.exits, ReasonSignal)
	}
}

func TestBootFailureHalts(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int
	}{{"app import error", ExitAppLoad}, {"boot error", ExitBootFailure}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{Workers: 2}, Hooks{})
			h.exit(h.sp.procs[0], exitCode(tc.code))
			if h.m.phase != stopping || h.m.exitCode != tc.code {
				t.Fatalf("phase %v exit code %d, want stopping with %d", h.m.phase, h.m.exitCode, tc.code)
			}
			if !h.sp.procs[1].got(syscall.SIGKILL) {
				t.Errorf("other booting worker not killed: %v", h.sp.procs[1].signals)
			}
			if len(h.sp.procs) != 2 {
				t.Errorf("respawned after a boot failure: %d spawns", len(h.sp.procs))
			}
		})
	}
}

func TestCrashLoopBacksOffThenGivesUp(t *testing.T) {
	h := newHarness(t, Config{Workers: 1}, Hooks{})
	var delays []time.Duration
	for i := 0; i < maxBootCrashes; i++ {
		p := h.sp.procs[len(h.sp.procs)-1]
		before := len(h.sp.procs)
		h.exit(p, killedBy(syscall.SIGSEGV))
		if h.m.phase == stopping {
			break
		}
		var waited time.Duration
		for len(h.sp.procs) == before && waited < time.Minute {
			h.advance(50 * time.Millisecond)
			waited += 50 * time.Millisecond
		}
		delays = append(delays, waited)
	}
	if h.m.phase != stopping || h.m.exitCode != ExitBootFailure {
		t.Fatalf("phase %v code %d after %d crashes, want exit %d", h.m.phase, h.m.exitCode, maxBootCrashes, ExitBootFailure)
	}
	for i := 1; i < len(delays); i++ {
		if delays[i] <= delays[i-1] {
			t.Errorf("backoff not increasing: %v", delays)
		}
	}
}

func TestGracefulShutdown(t *testing.T) {
	h := newHarness(t, Config{Workers: 2, ShutdownDelay: 5 * time.Second, GracefulTimeout: 10 * time.Second}, Hooks{})
	h.readyAll()
	h.signal(syscall.SIGTERM)
	if h.m.snapshot().Ready {
		t.Error("still ready after SIGTERM")
	}
	for _, p := range h.sp.procs {
		if len(p.signals) != 0 {
			t.Fatalf("worker signalled during the shutdown delay: %v", p.signals)
		}
	}
	h.advance(5 * time.Second)
	for _, p := range h.sp.procs {
		if !p.got(syscall.SIGTERM) {
			t.Fatalf("worker %d not sent SIGTERM after the delay: %v", p.pid, p.signals)
		}
	}
	h.exit(h.sp.procs[0], exitCode(0))
	if len(h.sp.procs) != 2 {
		t.Fatal("respawned during shutdown")
	}
	h.advance(10 * time.Second)
	if !h.sp.procs[1].killed {
		t.Error("straggler not killed after the graceful timeout")
	}
	h.exit(h.sp.procs[1], killedBy(syscall.SIGKILL))
	if len(h.m.workers) != 0 || h.m.exitCode != ExitOK {
		t.Errorf("workers %d exit code %d", len(h.m.workers), h.m.exitCode)
	}
}

func TestQuickShutdown(t *testing.T) {
	h := newHarness(t, Config{Workers: 2}, Hooks{})
	h.readyAll()
	h.signal(syscall.SIGINT)
	for _, p := range h.sp.procs {
		if !p.got(syscall.SIGQUIT) {
			t.Errorf("worker %d got %v, want SIGQUIT", p.pid, p.signals)
		}
	}
}

func TestReloadIsRolling(t *testing.T) {
	reloads := 0
	h := newHarness(t, Config{Workers: 3}, Hooks{Reload: func(c Config) (func() Config, error) { reloads++; return func() Config { return c }, nil }})
	h.readyAll()
	old := append([]*fakeProc(nil), h.sp.procs...)
	h.signal(syscall.SIGHUP)
	if reloads != 1 {
		t.Fatalf("Reload hook called %d times", reloads)
	}
	for round := 0; round < 3; round++ {
		if got := len(h.sp.procs); got != 4+round {
			t.Fatalf("round %d: %d spawns, want one surge worker at a time (%d)", round, got, 4+round)
		}
		surge := h.sp.procs[len(h.sp.procs)-1]
		if surge.gen != 2 {
			t.Fatalf("surge generation %d, want 2", surge.gen)
		}
		stopped := 0
		for _, p := range old {
			if p.got(syscall.SIGTERM) {
				stopped++
			}
		}
		if stopped != round {
			t.Fatalf("round %d: %d old workers stopped before the surge is ready, want %d", round, stopped, round)
		}
		surge.ready()
		h.advance(50 * time.Millisecond)
		if !old[round].got(syscall.SIGTERM) {
			t.Fatalf("round %d: oldest old worker not stopped once its replacement was ready", round)
		}
		h.exit(old[round], exitCode(0))
	}
	h.advance(50 * time.Millisecond)
	if len(h.sp.procs) != 6 || len(h.m.workers) != 3 {
		t.Errorf("after reload: %d spawns, %d workers", len(h.sp.procs), len(h.m.workers))
	}
}

func TestReloadAppliesTheNewConfiguration(t *testing.T) {
	h := newHarness(t, Config{Workers: 2, Timeout: 30 * time.Second}, Hooks{Reload: func(c Config) (func() Config, error) {
		c.Workers, c.Timeout, c.MaxRequests = 5, 5*time.Second, 100
		return func() Config { return c }, nil
	}})
	h.readyAll()
	h.signal(syscall.SIGTTIN) // an operator's change stands only until the configuration changes the count
	h.signal(syscall.SIGHUP)
	if h.m.desired != 5 || h.m.cfg.Timeout != 5*time.Second || h.m.cfg.MaxRequests != 100 || h.m.cfg.Slots == 0 {
		t.Fatalf("after HUP: desired %d, config %+v", h.m.desired, h.m.cfg)
	}
	h.signal(syscall.SIGTTIN)
	h.signal(syscall.SIGHUP) // the count is unchanged in the configuration: TTIN is kept
	if h.m.desired != 6 {
		t.Errorf("desired %d after TTIN and a HUP that did not change the count, want 6", h.m.desired)
	}
}

func TestSourceChangeReloadsOncePerChange(t *testing.T) {
	h := newHarness(t, Config{Workers: 2}, Hooks{})
	h.readyAll()
	for _, p := range h.sp.procs { // every worker sees the same save
		p.status.SourceChange = 1000
	}
	h.advance(50 * time.Millisecond)
	if h.m.gen != 2 {
		t.Fatalf("generation %d after two workers saw one change, want 2", h.m.gen)
	}
	surge := h.sp.procs[2]
	h.exit(surge, exitCode(ExitAppLoad)) // the change does not import
	h.advance(50 * time.Millisecond)
	h.sp.procs[1].status.SourceChange = 1000 // an old worker late to see the broken save
	h.advance(50 * time.Millisecond)
	if h.m.gen != 2 {
		t.Fatalf("generation %d: the same save was acted on twice", h.m.gen)
	}
	h.sp.procs[0].status.SourceChange = 2000 // the fix
	h.advance(50 * time.Millisecond)
	if h.m.gen != 3 {
		t.Errorf("generation %d after the fix was saved, want 3", h.m.gen)
	}
}

func TestReloadErrorKeepsEverything(t *testing.T) {
	h := newHarness(t, Config{Workers: 2}, Hooks{Reload: func(c Config) (func() Config, error) { return nil, errors.New("config file: SyntaxError") }})
	h.readyAll()
	h.signal(syscall.SIGHUP)
	if h.m.gen != 1 || len(h.sp.procs) != 2 {
		t.Errorf("a failed re-read started generation %d with %d spawns; want nothing replaced", h.m.gen, len(h.sp.procs))
	}
}

func TestReloadWithBrokenCodeKeepsOldWorkers(t *testing.T) {
	h := newHarness(t, Config{Workers: 2}, Hooks{})
	h.readyAll()
	h.signal(syscall.SIGHUP)
	surge := h.sp.procs[2]
	h.exit(surge, exitCode(ExitAppLoad))
	if h.m.phase != running {
		t.Fatal("master stopped after a failed reload")
	}
	h.advance(time.Minute)
	if len(h.sp.procs) != 3 {
		t.Errorf("kept retrying a broken generation: %d spawns", len(h.sp.procs))
	}
	for _, p := range h.sp.procs[:2] {
		if len(p.signals) != 0 {
			t.Errorf("old worker signalled: %v", p.signals)
		}
	}
	// Fixing the code and reloading again rolls out.
	h.signal(syscall.SIGHUP)
	if len(h.sp.procs) != 4 || h.sp.procs[3].gen != 3 {
		t.Fatalf("second HUP: spawns %d", len(h.sp.procs))
	}
}

func TestScaleUpAndDown(t *testing.T) {
	h := newHarness(t, Config{Workers: 2}, Hooks{})
	h.readyAll()
	h.signal(syscall.SIGTTIN)
	if len(h.sp.procs) != 3 {
		t.Fatalf("TTIN: %d workers", len(h.sp.procs))
	}
	h.readyAll()
	h.sp.procs[0].busyFor(time.Second, "GET /slow")
	h.advance(50 * time.Millisecond)
	h.signal(syscall.SIGTTOU)
	if h.sp.procs[0].got(syscall.SIGTERM) || !h.sp.procs[1].got(syscall.SIGTERM) {
		t.Errorf("TTOU must stop the oldest idle worker: busy got %v, idle got %v", h.sp.procs[0].signals, h.sp.procs[1].signals)
	}
	h.signal(syscall.SIGTTOU)
	h.signal(syscall.SIGTTOU)
	if h.m.desired != 1 {
		t.Errorf("TTOU went below one worker: %d", h.m.desired)
	}
	// TTIN/TTOU survive a reload.
	h.signal(syscall.SIGTTIN)
	h.signal(syscall.SIGHUP)
	if h.m.desired != 2 {
		t.Errorf("desired after HUP = %d, want 2", h.m.desired)
	}
}

func TestMaxRequestsRecyclesAfterReplacementIsReady(t *testing.T) {
	h := newHarness(t, Config{Workers: 1, MaxRequests: 100, MaxRequestsJitter: 10}, Hooks{})
	h.readyAll()
	p := h.sp.procs[0]
	p.status.Requests = 109
	h.advance(50 * time.Millisecond)
	if len(h.sp.procs) != 1 {
		t.Fatal("recycled before max_requests+jitter (jitter fake returns 10)")
	}
	p.status.Requests = 110
	h.advance(50 * time.Millisecond)
	if len(h.sp.procs) != 2 || len(p.signals) != 0 {
		t.Fatalf("spawns %d, old worker signals %v: want the replacement first", len(h.sp.procs), p.signals)
	}
	h.sp.procs[1].ready()
	h.advance(50 * time.Millisecond)
	if !p.got(syscall.SIGTERM) {
		t.Fatal("old worker not stopped after its replacement became ready")
	}
	h.exit(p, exitCode(0))
	if h.m.exits[ReasonRecycled] != 1 || len(h.sp.procs) != 2 {
		t.Errorf("exits %v spawns %d", h.m.exits, len(h.sp.procs))
	}
}

// TestMaxWorkerMemoryRecycles: a worker whose USS grows past the limit is replaced like a
// recycled one, its replacement ready first; one below it, or still booting, is not.
func TestMaxWorkerMemoryRecycles(t *testing.T) {
	h := newHarness(t, Config{Workers: 2, MaxWorkerMemory: 100 << 20}, Hooks{})
	h.readyAll()
	fat, thin := h.sp.procs[0], h.sp.procs[1]
	h.m.onMemory(MemorySample{fat.pid: 100 << 20, thin.pid: 50 << 20}) // at the limit: not past it
	h.manage()
	if len(h.sp.procs) != 2 {
		t.Fatal("replaced a worker at, not past, the limit")
	}
	h.m.onMemory(MemorySample{fat.pid: 101 << 20, thin.pid: 50 << 20})
	h.manage()
	if len(h.sp.procs) != 3 || len(fat.signals) != 0 {
		t.Fatalf("spawns %d, old worker signals %v: want the replacement first", len(h.sp.procs), fat.signals)
	}
	repl := h.sp.procs[2]
	h.m.onMemory(MemorySample{fat.pid: 300 << 20, repl.pid: 500 << 20}) // booting: not judged yet
	h.manage()
	if len(h.sp.procs) != 3 {
		t.Fatalf("spawns %d: one replacement at a time, and none for a booting worker", len(h.sp.procs))
	}
	repl.ready()
	h.advance(50 * time.Millisecond)
	if !fat.got(syscall.SIGTERM) || len(thin.signals) != 0 {
		t.Fatalf("fat worker %v, thin worker %v: want only the fat one stopped once its replacement is ready", fat.signals, thin.signals)
	}
	h.exit(fat, exitCode(0))
	if h.m.exits[ReasonMemory] != 1 || h.m.exits[ReasonRecycled] != 0 {
		t.Errorf("exits %v, want one for memory", h.m.exits)
	}
	if n := len(h.sp.alive(h.m)); n != 2 {
		t.Errorf("%d workers after the replacement, want 2", n)
	}
	if found := h.logs.FilterMessageSnippet("past --max-worker-memory").Len(); found != 1 {
		t.Errorf("%d log lines about the memory limit, want 1", found)
	}
}

// TestReloadNamesTheExitOfAWorkerDueForRecycling: a worker due for recycling when a HUP
// rolls a new generation out is replaced by the reload, and its exit says so.
func TestReloadNamesTheExitOfAWorkerDueForRecycling(t *testing.T) {
	h := newHarness(t, Config{Workers: 1, MaxWorkerMemory: 100 << 20}, Hooks{})
	h.readyAll()
	old := h.sp.procs[0]
	h.m.onMemory(MemorySample{old.pid: 200 << 20}) // due, and its replacement starts
	h.m.rollOut()                                  // HUP meanwhile
	h.manage()
	for _, p := range h.sp.alive(h.m)[1:] {
		p.ready()
	}
	h.advance(50 * time.Millisecond)
	h.exit(old, exitCode(0))
	if h.m.exits[ReasonReload] != 1 || h.m.exits[ReasonMemory] != 0 {
		t.Errorf("exits %v, want the old generation's worker counted as reloaded", h.m.exits)
	}
}

// TestMemoryLimitOff: without --max-worker-memory, samples replace nobody.
func TestMemoryLimitOff(t *testing.T) {
	h := newHarness(t, Config{Workers: 1}, Hooks{})
	h.readyAll()
	h.m.onMemory(MemorySample{h.sp.procs[0].pid: 8 << 30})
	h.manage()
	if len(h.sp.procs) != 1 {
		t.Fatal("a worker was replaced with no memory limit set")
	}
}

func TestHangIsAborted(t *testing.T) {
	h := newHarness(t, Config{Workers: 2, Timeout: 10 * time.Second}, Hooks{})
	h.readyAll()
	hung, idle := h.sp.procs[0], h.sp.procs[1]
	hung.busyFor(11*time.Second, "GET /slow?ms=60000")
	idle.status.Accepting = true
	idle.status.Heartbeat = uint64(h.clock - time.Hour)
	h.advance(50 * time.Millisecond)
	if len(hung.signals) != 0 {
		t.Fatal("aborted on the first stale read")
	}
	h.advance(50 * time.Millisecond)
	if !hung.got(syscall.SIGABRT) {
		t.Fatalf("hung worker got %v, want SIGABRT", hung.signals)
	}
	if len(idle.signals) != 0 {
		t.Errorf("idle worker blocked in accept was signalled: %v", idle.signals)
	}
	if h.logs.FilterMessageSnippet(`GET /slow?ms=60000`).Len() != 1 {
		t.Errorf("timeout log does not name the request: %v", h.logs.All())
	}
	h.advance(2 * time.Second)
	if !hung.killed {
		t.Error("not killed after the kill grace")
	}
	h.exit(hung, killedBy(syscall.SIGKILL))
	if h.m.exits[ReasonTimeout] != 1 || len(h.m.workers) != 2 {
		t.Errorf("exits %v workers %d", h.m.exits, len(h.m.workers))
	}
}

func TestSilentIdleWorkerIsAborted(t *testing.T) {
	h := newHarness(t, Config{Workers: 1, Timeout: 10 * time.Second}, Hooks{})
	h.readyAll()
	p := h.sp.procs[0]
	p.status.Heartbeat = uint64(h.clock - time.Minute)
	h.advance(50 * time.Millisecond)
	h.advance(50 * time.Millisecond)
	if !p.got(syscall.SIGABRT) {
		t.Errorf("silent worker got %v, want SIGABRT", p.signals)
	}
}

// A worker stuck booting gets SIGABRT (its stack dumped), then SIGKILL after the grace.
func TestBootTimeout(t *testing.T) {
	h := newHarness(t, Config{Workers: 1, BootTimeout: 5 * time.Second}, Hooks{})
	h.advance(6 * time.Second)
	p := h.sp.procs[0]
	if !p.got(syscall.SIGABRT) || p.killed {
		t.Fatalf("worker stuck booting: signals %v, killed %v; want SIGABRT first", p.signals, p.killed)
	}
	h.advance(3 * time.Second)
	if !p.killed {
		t.Error("worker stuck booting was not killed after the abort grace")
	}
}

// Slow boot failures at start-up (each past quickDeath: a hanging import ended by the
// boot timeout) end with exit 3 after maxBootCrashes attempts, not an endless loop.
func TestSlowBootFailuresGiveUp(t *testing.T) {
	h := newHarness(t, Config{Workers: 1, BootTimeout: 10 * time.Second}, Hooks{})
	for i := 0; i < 2*maxBootCrashes && h.m.phase != stopping; i++ {
		p := h.sp.procs[len(h.sp.procs)-1]
		h.advance(11 * time.Second)
		h.advance(3 * time.Second)
		if !p.killed {
			t.Fatalf("attempt %d not killed", i)
		}
		h.exit(p, killedBy(syscall.SIGKILL))
	}
	// The replacement of an aborted worker starts at once, so one more was spawned.
	if h.m.phase != stopping || h.m.exitCode != ExitBootFailure || len(h.sp.procs) != maxBootCrashes+1 {
		t.Fatalf("phase %v code %d after %d spawns, want exit %d after %d failures", h.m.phase, h.m.exitCode, len(h.sp.procs), ExitBootFailure, maxBootCrashes)
	}
	if h.logs.FilterMessage("no worker has ever booted; giving up").Len() != 1 {
		t.Error("no giving-up line")
	}
}

// Once a worker was ready, later slow boot failures (a bad deploy's HUP) do not stop gorn.
func TestBootFailuresAfterReadyKeepServing(t *testing.T) {
	h := newHarness(t, Config{Workers: 2, BootTimeout: 10 * time.Second}, Hooks{})
	h.sp.procs[0].ready()
	h.advance(50 * time.Millisecond)
	for i := 0; i < 2*maxBootCrashes; i++ {
		p := h.sp.procs[len(h.sp.procs)-1]
		h.advance(11 * time.Second)
		h.advance(3 * time.Second)
		h.exit(p, killedBy(syscall.SIGKILL))
	}
	if h.m.phase == stopping {
		t.Fatal("gave up although a worker serves")
	}
}

// The line reporting an OOM kill (or any death gorn did not cause) names the request the
// worker was serving and how long it had run.
func TestDeathNamesRequestInFlight(t *testing.T) {
	oom := uint64(0)
	h := newHarness(t, Config{Workers: 1}, Hooks{OOMKills: func() (uint64, bool) { return oom, true }})
	h.readyAll()
	h.advance(time.Minute)
	p := h.sp.procs[0]
	p.busyFor(1500*time.Millisecond, "POST /upload")
	oom = 1
	h.exit(p, killedBy(syscall.SIGKILL))
	lines := h.logs.FilterMessage(`worker was killed by the kernel's OOM killer (cgroup memory limit reached) while serving "POST /upload" for 1.5s`).All()
	if len(lines) != 1 || lines[0].ContextMap()["request"] != "POST /upload" || lines[0].ContextMap()["request_seconds"] != 1.5 {
		t.Fatalf("OOM line %v; all: %v", lines, h.logs.All())
	}
	h.sp.procs[1].ready()
	h.advance(time.Minute)
	h.exit(h.sp.procs[1], killedBy(syscall.SIGKILL)) // idle: nothing to name
	if h.logs.FilterMessage("worker was killed by a signal gorn did not send").Len() != 1 {
		t.Errorf("idle worker's death line names a request: %v", h.logs.All())
	}
}

func TestExitClassification(t *testing.T) {
	oom := uint64(0)
	h := newHarness(t, Config{Workers: 1}, Hooks{OOMKills: func() (uint64, bool) { return oom, true }})
	h.readyAll()
	h.clock += time.Minute
	oom = 1
	h.exit(h.sp.procs[0], killedBy(syscall.SIGKILL))
	h.sp.procs[1].ready()
	h.advance(time.Minute)
	h.exit(h.sp.procs[1], killedBy(syscall.SIGKILL))
	h.m.onExit(Exit{Pid: 99999, Status: exitCode(0)}) // an orphan
	if h.m.exits[ReasonOOM] != 1 || h.m.exits[ReasonSignal] != 1 || len(h.m.exits) != 2 {
		t.Errorf("exits = %v, want one oom and one signal", h.m.exits)
	}
}

func TestWinchStopsAllKeepsMaster(t *testing.T) {
	h := newHarness(t, Config{Workers: 2}, Hooks{})
	h.readyAll()
	h.signal(syscall.SIGWINCH)
	for _, p := range h.sp.procs {
		h.exit(p, exitCode(0))
	}
	if h.m.phase != running || len(h.m.workers) != 0 {
		t.Fatalf("phase %v workers %d", h.m.phase, len(h.m.workers))
	}
	h.signal(syscall.SIGHUP)
	if len(h.m.workers) != 2 {
		t.Errorf("HUP after WINCH: %d workers, want 2", len(h.m.workers))
	}
}

func TestResizeFollowsLimits(t *testing.T) {
	want := 2
	h := newHarness(t, Config{Workers: 2, ResizeInterval: 30 * time.Second}, Hooks{Resize: func(time.Duration, []scoreboard.Slot) (int, string, bool) { return want, "test", true }})
	h.readyAll()
	want = 4
	h.advance(29 * time.Second)
	if len(h.m.workers) != 2 {
		t.Fatal("resized before the interval")
	}
	h.advance(time.Second)
	if len(h.m.workers) != 4 {
		t.Fatalf("workers %d, want 4", len(h.m.workers))
	}
	// An operator's TTIN stands while the limits stay the same...
	h.signal(syscall.SIGTTIN)
	h.advance(30 * time.Second)
	if h.m.desired != 5 {
		t.Errorf("desired %d after TTIN and an unchanged resize, want 5", h.m.desired)
	}
	// ...and the limits win again when they change.
	want = 3
	h.advance(30 * time.Second)
	if h.m.desired != 3 {
		t.Errorf("desired %d after the limits changed, want 3", h.m.desired)
	}
}

func TestSnapshotStates(t *testing.T) {
	h := newHarness(t, Config{Workers: 3}, Hooks{})
	h.sp.procs[0].ready()
	h.sp.procs[1].ready()
	h.advance(50 * time.Millisecond)
	h.sp.procs[1].busyFor(time.Millisecond, "GET /")
	s := h.m.snapshot()
	got := map[string]int{}
	for _, w := range s.Workers {
		got[w.State]++
	}
	if got["ready"] != 1 || got["busy"] != 1 || got["booting"] != 1 || !s.Ready || s.ReadyCount != 2 {
		t.Errorf("snapshot %+v states %v", s, got)
	}
}

func TestForeignKillOfDrainingWorkerIsReported(t *testing.T) {
	h := newHarness(t, Config{Workers: 2}, Hooks{})
	h.readyAll()
	h.signal(syscall.SIGTTOU) // the oldest worker is told to stop...
	p := h.sp.procs[0]
	if !p.got(syscall.SIGTERM) {
		t.Fatalf("signals %v", p.signals)
	}
	h.exit(p, killedBy(syscall.SIGKILL)) // ...and killed by someone else meanwhile
	if h.m.exits[ReasonSignal] != 1 || h.m.exits[ReasonScaledDown] != 0 {
		t.Errorf("exits %v, want the foreign kill counted as %q", h.m.exits, ReasonSignal)
	}
}

func TestScaleDownDuringSurgeStopsOneWorker(t *testing.T) {
	h := newHarness(t, Config{Workers: 3, MaxRequests: 10}, Hooks{})
	h.readyAll()
	h.sp.procs[0].status.Requests = 10
	h.advance(50 * time.Millisecond) // surge for procs[0] starts booting
	if len(h.sp.procs) != 4 {
		t.Fatalf("spawns %d", len(h.sp.procs))
	}
	h.signal(syscall.SIGTTOU)
	stopped := 0
	for _, p := range h.sp.procs {
		if p.got(syscall.SIGTERM) {
			stopped++
		}
	}
	if stopped != 1 || h.sp.procs[0].got(syscall.SIGTERM) {
		t.Fatalf("TTOU stopped %d workers (recycling one stopped: %v)", stopped, h.sp.procs[0].got(syscall.SIGTERM))
	}
	h.sp.procs[3].ready()
	h.advance(50 * time.Millisecond) // surge ready: the recycled worker goes
	h.exit(h.sp.procs[0], exitCode(0))
	if got := h.m.active(); got != 2 {
		t.Errorf("active workers %d, want 2", got)
	}
}

func TestTTINStopsAtTheMemoryCeiling(t *testing.T) {
	h := newHarness(t, Config{Workers: 2}, Hooks{MemoryCeiling: func() int { return 3 }})
	h.readyAll()
	h.signal(syscall.SIGTTIN)
	h.signal(syscall.SIGTTIN)
	if h.m.desired != 3 || h.logs.FilterMessageSnippet("TTIN refused").Len() != 1 {
		t.Errorf("desired %d after two TTINs with room for 3", h.m.desired)
	}
}

// TestReloadRunsOffTheLoop: while the Reload hook is still evaluating, the loop answers
// queries and supervises (a crashed worker is replaced); the result rolls out when it
// arrives.
func TestReloadRunsOffTheLoop(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	sp := &fakeSpawner{}
	clock := 24 * time.Hour
	sp.clock = &clock
	hooks := Hooks{Reload: func(c Config) (func() Config, error) {
		close(started)
		<-release
		c.MaxRequests = 7
		return func() Config { return c }, nil
	}}
	m := New(Config{Workers: 2, GracefulTimeout: time.Second}, sp, hooks, zap.NewNop(), func() time.Duration { return clock }, func(n int) int { return 0 })
	signals := make(chan os.Signal, 1)
	exits := make(chan Exit, 1)
	done := make(chan int)
	go func() { done <- m.Run(Inputs{Signals: signals, Exits: exits}) }()
	snap := func() Snapshot {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		s, err := m.Snapshot(ctx)
		if err != nil {
			t.Fatalf("the loop did not answer during the reload: %v", err)
		}
		return s
	}
	deadline := time.Now().Add(5 * time.Second)
	for s := snap(); s.Workers[0].Pid == 0 || s.Workers[1].Pid == 0; s = snap() {
		if time.Now().After(deadline) {
			t.Fatal("workers not started")
		}
		time.Sleep(time.Millisecond)
	}
	signals <- syscall.SIGHUP
	<-started
	first := snap()
	exits <- Exit{Pid: first.Workers[0].Pid, Status: killedBy(syscall.SIGKILL)}
	for snap().Spawns != 3 {
		if time.Now().After(deadline) {
			t.Fatal("a worker that died during the reload was not replaced")
		}
		time.Sleep(time.Millisecond)
	}
	if s := snap(); s.Generation != 1 {
		t.Fatalf("generation %d before the reload reported", s.Generation)
	}
	close(release)
	for snap().Generation != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the reload's result was not applied")
		}
		time.Sleep(time.Millisecond)
	}
	signals <- syscall.SIGQUIT
	for _, w := range snap().Workers {
		exits <- Exit{Pid: w.Pid, Status: killedBy(syscall.SIGQUIT)}
	}
	if code := <-done; code != ExitOK {
		t.Errorf("exit code %d", code)
	}
	if m.cfg.MaxRequests != 7 {
		t.Errorf("max requests %d, want the reloaded 7", m.cfg.MaxRequests)
	}
}

// TestHUPDuringReloadReloadsAgain: a HUP while a reload evaluates is not lost (the file
// may have changed again after the evaluation read it) and does not start a second
// evaluation at the same time.
func TestHUPDuringReloadReloadsAgain(t *testing.T) {
	calls := 0
	h := newHarness(t, Config{Workers: 1}, Hooks{Reload: func(c Config) (func() Config, error) {
		calls++
		return func() Config { return c }, nil
	}})
	h.readyAll()
	h.m.onSignal(syscall.SIGHUP)
	h.m.onSignal(syscall.SIGHUP) // arrives before the first evaluation reports
	h.m.onSignal(syscall.SIGHUP)
	h.m.onReloaded(<-h.m.reloads)
	if !h.m.reloading {
		t.Fatal("the HUPs during the reload were dropped")
	}
	h.m.onReloaded(<-h.m.reloads)
	if h.m.reloading || calls != 2 || h.m.gen != 3 {
		t.Errorf("reloading=%v after %d evaluations, generation %d; want 2 evaluations, generation 3", h.m.reloading, calls, h.m.gen)
	}
}

// TestReapedWorkerIsReleased: every reaped worker's handles are released exactly once,
// whatever ended it.
func TestReapedWorkerIsReleased(t *testing.T) {
	h := newHarness(t, Config{Workers: 3}, Hooks{})
	h.readyAll()
	h.exit(h.sp.procs[0], killedBy(syscall.SIGKILL))
	h.exit(h.sp.procs[1], exitCode(0))
	h.signal(syscall.SIGQUIT)
	for _, p := range h.sp.alive(h.m) {
		h.exit(p, killedBy(syscall.SIGQUIT))
	}
	for _, p := range h.sp.procs {
		tracked := slices.ContainsFunc(h.m.workers, func(w *worker) bool { return w.proc == p })
		if want := map[bool]int{true: 0, false: 1}[tracked]; p.released != want {
			t.Errorf("worker %d (tracked %v) released %d times, want %d", p.pid, tracked, p.released, want)
		}
	}
	if len(h.m.workers) != 0 {
		t.Errorf("%d workers left", len(h.m.workers))
	}
}

// TestUpgradeWaitsForThePreflight: USR2 hands over only after the pre-flight passed, with
// the table as it is then; a failed pre-flight hands nothing over and says why.
func TestUpgradeWaitsForThePreflight(t *testing.T) {
	var handed []Handover
	verdict := errors.New("exit status 2: unknown flag --frobnicate")
	h := newHarness(t, Config{Workers: 2}, Hooks{
		Preflight: func() error { return verdict },
		Upgrade:   func(ho Handover) error { handed = append(handed, ho); return nil },
	})
	h.readyAll()
	h.m.onSignal(syscall.SIGUSR2)
	h.m.onSignal(syscall.SIGUSR2) // ignored: one upgrade at a time
	if len(handed) != 0 {
		t.Fatal("handed over before the pre-flight reported")
	}
	h.m.onPreflight(<-h.m.checked)
	if len(handed) != 0 || h.logs.FilterMessageSnippet("binary upgrade refused").Len() != 1 {
		t.Fatalf("a failed pre-flight: %d handovers, logs %v", len(handed), h.logs.All())
	}
	if h.m.upgrading {
		t.Fatal("still upgrading after the verdict")
	}
	verdict = nil
	h.m.onSignal(syscall.SIGUSR2)
	h.signal(syscall.SIGTTIN) // the table changes while the pre-flight runs
	h.m.onPreflight(<-h.m.checked)
	if len(handed) != 1 || handed[0].Desired != 3 || len(handed[0].Workers) != 3 {
		t.Fatalf("handovers %+v, want one with the 3 workers of the table at hand-over time", handed)
	}
}

// TestAdoptAfterRollbackKeepsTheGeneration: the previous binary, restored, keeps its
// workers; a successful upgrade replaces them.
func TestAdoptAfterRollbackKeepsTheGeneration(t *testing.T) {
	ho := Handover{Desired: 2, Generation: 4, Workers: []HandoverWorker{{Pid: 11, Slot: 0, Generation: 4}, {Pid: 12, Slot: 1, Generation: 4}}}
	for _, rollOut := range []bool{false, true} {
		h := newHarness(t, Config{Workers: 0}, Hooks{})
		attach := func(pid, slot int) Process {
			return &fakeProc{pid: pid, slot: slot, clock: &h.clock, status: scoreboard.Slot{PID: uint64(pid), State: scoreboard.StateReady}}
		}
		h.m.Adopt(ho, attach, rollOut)
		h.advance(50 * time.Millisecond)
		if replaced := len(h.sp.procs) > 0; replaced != rollOut {
			t.Errorf("rollOut=%v: %d workers spawned to replace the adopted ones", rollOut, len(h.sp.procs))
		}
	}
}

// TestExitBeforeTheSpawnReports: the reaper may route a new worker's exit before its
// start has reported to the loop; the exit is still that worker's, not an orphan's.
func TestExitBeforeTheSpawnReports(t *testing.T) {
	h := newHarness(t, Config{Workers: 1}, Hooks{})
	h.readyAll()
	h.m.onSignal(syscall.SIGTTIN)
	h.m.manage() // the spawn is left in flight
	if h.m.starting != 1 {
		t.Fatalf("%d spawns in flight, want 1", h.m.starting)
	}
	early := h.sp.procs[len(h.sp.procs)-1]
	h.m.onExit(Exit{Pid: 77, Status: exitCode(0)}) // an orphan's
	h.m.onExit(Exit{Pid: early.pid, Status: exitCode(1)})
	if h.m.exits[ReasonCrash] != 0 {
		t.Fatalf("exits %v: applied before the worker was known", h.m.exits)
	}
	h.m.onSpawned(<-h.m.spawned)
	if h.m.exits[ReasonCrash] != 1 || h.m.find(early.pid) >= 0 || len(h.m.early) != 0 {
		t.Errorf("exits %v, table has the worker: %v, parked %v; want its exit applied once it reported", h.m.exits, h.m.find(early.pid) >= 0, h.m.early)
	}
	if n := h.logs.FilterMessage("reaped orphan").Len(); n != 1 {
		t.Errorf("%d orphans logged, want the one", n)
	}
}

// TestSignalToAStartingWorkerIsDelivered: a worker stopped or killed while its fork is in
// flight gets the signal once it exists.
func TestSignalToAStartingWorkerIsDelivered(t *testing.T) {
	h := newHarness(t, Config{Workers: 1}, Hooks{})
	h.readyAll()
	h.m.onSignal(syscall.SIGTTIN)
	h.m.manage()
	if h.m.starting != 1 {
		t.Fatalf("%d spawns in flight", h.m.starting)
	}
	h.m.onSignal(syscall.SIGQUIT)
	h.m.onSpawned(<-h.m.spawned)
	late := h.sp.procs[len(h.sp.procs)-1]
	if !late.got(syscall.SIGQUIT) {
		t.Errorf("worker started during the shutdown got %v, want SIGQUIT", late.signals)
	}
}

// TestHandoverWaitsForSpawnsInFlight: a worker forked after the table was handed over
// would be nobody's, so the hand-over waits for spawns in flight.
func TestHandoverWaitsForSpawnsInFlight(t *testing.T) {
	var handed []Handover
	h := newHarness(t, Config{Workers: 1}, Hooks{
		Preflight: func() error { return nil },
		Upgrade:   func(ho Handover) error { handed = append(handed, ho); return nil },
	})
	h.readyAll()
	h.m.onSignal(syscall.SIGUSR2)
	h.m.onSignal(syscall.SIGTTIN)
	h.m.manage()
	h.m.onPreflight(<-h.m.checked)
	if len(handed) != 0 {
		t.Fatal("handed over with a spawn in flight")
	}
	h.m.onSpawned(<-h.m.spawned)
	if len(handed) != 1 || len(handed[0].Workers) != 2 || handed[0].Workers[1].Pid == 0 {
		t.Fatalf("handovers %+v, want one with both workers once the spawn reported", handed)
	}
}

// TestSpawnRunsOffTheLoop: while a fork is slow, the loop answers queries.
func TestSpawnRunsOffTheLoop(t *testing.T) {
	release := make(chan struct{})
	sp := &slowSpawner{release: release}
	clock := 24 * time.Hour
	m := New(Config{Workers: 1, GracefulTimeout: time.Second}, sp, Hooks{}, zap.NewNop(), func() time.Duration { return clock }, func(n int) int { return 0 })
	signals := make(chan os.Signal, 1)
	exits := make(chan Exit, 1)
	done := make(chan int)
	go func() { done <- m.Run(Inputs{Signals: signals, Exits: exits}) }()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	s, err := m.Snapshot(ctx)
	if err != nil {
		t.Fatalf("the loop did not answer while a spawn was in flight: %v", err)
	}
	if len(s.Workers) != 1 || s.Workers[0].State != "booting" || s.Workers[0].Pid != 0 {
		t.Errorf("snapshot %+v, want one booting worker without a pid yet", s.Workers)
	}
	signals <- syscall.SIGQUIT
	close(release)
	exits <- Exit{Pid: 4242, Status: killedBy(syscall.SIGQUIT)}
	if code := <-done; code != ExitOK {
		t.Errorf("exit code %d", code)
	}
}

type slowSpawner struct{ release chan struct{} }

func (s *slowSpawner) Spawn(r SpawnRequest) func() (Process, error) {
	return func() (Process, error) {
		<-s.release
		return &fakeProc{pid: 4242, slot: r.Slot}, nil
	}
}

// TestServerHookCalls: the master-side hooks hear what gunicorn's arbiter would: pre_fork
// with a per-spawn age before the fork, the pid once known, child_exit after the reap with
// the same age, and every change of the worker count; the age is the spawner's too.
func TestServerHookCalls(t *testing.T) {
	var (
		mu     sync.Mutex
		events []string
	)
	note := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, fmt.Sprintf(format, args...))
	}
	hooks := Hooks{
		PreFork:        func(w HookWorker) { note("pre_fork age=%d pid=%d", w.Age, w.Pid) },
		Spawned:        func(w HookWorker) { note("spawned age=%d pid=%d", w.Age, w.Pid) },
		ChildExit:      func(w HookWorker) { note("child_exit age=%d pid=%d status=%d", w.Age, w.Pid, *w.Status) },
		WorkersChanged: func(now, old int) { note("nworkers_changed %d %d", now, old) },
	}
	sp := &fakeSpawner{forked: func(pid int) { note("fork %d", pid) }}
	h := newHarnessWith(t, Config{Workers: 1}, hooks, sp)
	h.readyAll()
	p := h.sp.alive(h.m)[0]
	h.exit(p, killedBy(syscall.SIGKILL))
	h.readyAll()
	h.signal(syscall.SIGTTIN)
	h.readyAll()
	h.signal(syscall.SIGTTOU)
	want := []string{
		"pre_fork age=1 pid=0", "fork 1001", "spawned age=1 pid=1001",
		"child_exit age=1 pid=1001 status=9",
		"pre_fork age=2 pid=0", "fork 1002", "spawned age=2 pid=1002",
		"nworkers_changed 2 1",
		"pre_fork age=3 pid=0", "fork 1003", "spawned age=3 pid=1003",
		"nworkers_changed 1 2",
	}
	if !slices.Equal(events, want) {
		t.Errorf("hook calls:\n%s\nwant:\n%s", strings.Join(events, "\n"), strings.Join(want, "\n"))
	}
	for i, sp := range h.sp.ages {
		if sp != i+1 {
			t.Errorf("spawn %d asked for age %d, want %d", i, sp, i+1)
		}
	}
}
