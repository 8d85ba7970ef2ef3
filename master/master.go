// Package master is gorn's supervisor policy: one goroutine owns the worker table and turns
// signals, child exits and clock ticks into spawns, stops and kills. It never touches the
// OS directly; processes come from a Spawner and report through the scoreboard, so the
// whole policy runs against fakes in tests.
package master

import (
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/gornhq/gorn/internal/scoreboard"
)

// Exit codes, gunicorn's contract.
const (
	ExitOK          = 0
	ExitError       = 1
	ExitUsage       = 2
	ExitBootFailure = 3
	ExitAppLoad     = 4
)

// Process is one running worker as the master sees it.
type Process interface {
	Pid() int
	// Signal sends sig to the worker process itself.
	Signal(sig syscall.Signal) error
	// Kill sends SIGKILL to the worker's whole process group.
	Kill() error
	// Status reads the worker's scoreboard slot.
	Status() scoreboard.Slot
	// Release frees every handle on the worker once it has been reaped (its pidfd); the
	// master calls it exactly once per exit and signals it no more.
	Release()
}

// SpawnRequest says which slot and generation a new worker takes.
type SpawnRequest struct {
	Slot       int
	Generation int
	Age        int // the spawn counter: gunicorn's worker.age (the first worker is 1)
	Workers    int // desired count, for wsgi.multiprocess
}

// HookWorker is one worker as the config file's master-side hooks see it (gunicorn's
// worker object): Pid is 0 before the fork.
type HookWorker struct {
	Pid         int    `json:"pid,omitempty"`
	Slot        int    `json:"slot"`
	Generation  int    `json:"generation"`
	Age         int    `json:"age"`
	MaxRequests uint64 `json:"max_requests,omitempty"`
	Status      *int   `json:"status,omitempty"` // the wait status, once reaped
}

// Spawner starts workers. Spawn is called on the master loop and must not block: it takes
// what it needs from the configuration there and returns start, the fork and exec, which
// the master runs in a goroutine of its own and which returns once the pid is known.
type Spawner interface {
	Spawn(SpawnRequest) (start func() (Process, error))
}

// Exit is a reaped child.
type Exit struct {
	Pid    int
	Status syscall.WaitStatus
}

// Hooks are the master's calls out to its wiring; nil hooks are skipped.
type Hooks struct {
	// Reload re-reads the configuration on HUP. It runs in a goroutine of its own, given
	// the current knobs, because a config file may take seconds to evaluate; it returns
	// apply, which the loop calls when the result arrives, so the wiring changes its state
	// on the loop. apply returns the policy's new knobs; a changed Workers is applied. An
	// error aborts the reload.
	Reload func(Config) (apply func() Config, err error)
	// ReopenLogs reopens the master's log files on USR1.
	ReopenLogs func()
	// Preflight checks the new binary before a USR2 upgrade hands anything over; it runs
	// in a goroutine of its own (it loads the app) and an error refuses the upgrade.
	Preflight func() error
	// Upgrade re-executes the master binary in place on USR2 once Preflight passed; it
	// returns only on failure.
	Upgrade func(Handover) error
	// Resize returns the worker count the limits and the load call for now (when sized
	// automatically), given the master's clock and the scoreboard slots of the ready
	// workers to measure. It is called when the first worker is ready and every
	// ResizeInterval after.
	Resize func(now time.Duration, ready []scoreboard.Slot) (workers int, reason string, ok bool)
	// MemoryCeiling is how many workers fit in memory (0: unknown); TTIN stops there.
	MemoryCeiling func() int
	// OOMKills returns the cgroup's OOM-kill counter, to tell OOM kills from other SIGKILLs.
	OOMKills func() (uint64, bool)
	// Ready is called once when the first worker becomes ready (sd_notify and friends).
	Ready func()

	// The config file's master-side hooks (gunicorn's server hooks). PreFork runs in the
	// spawn's goroutine before the fork and may take a while (bounded by the hook host);
	// the others run on the loop and must not block: they queue the call.
	PreFork        func(HookWorker)
	Spawned        func(HookWorker) // the fork reported its pid; Pid 0: it failed
	ChildExit      func(HookWorker) // after the worker was reaped
	WorkersChanged func(now, old int)
}

// Config is the policy's knobs.
type Config struct {
	Workers           int
	Timeout           time.Duration // busy on one request or silent this long: abort; 0 disables
	BootTimeout       time.Duration
	GracefulTimeout   time.Duration
	ShutdownDelay     time.Duration
	KillGrace         time.Duration // SIGABRT to SIGKILL
	MaxRequests       int
	MaxRequestsJitter int
	ResizeInterval    time.Duration
	Slots             int
	// MaxWorkerMemory replaces a worker whose unique memory (USS, from Inputs.Memory)
	// exceeds it, as max requests does: after its request, its replacement ready first.
	// 0 = never.
	MaxWorkerMemory int64
}

// Inputs are the channels the loop serves. Ticks drive every timer.
type Inputs struct {
	Signals <-chan os.Signal
	Exits   <-chan Exit
	Ticks   <-chan time.Time
	// Ready says a worker has just marked itself ready in the scoreboard: the loop looks
	// at the booting workers now instead of at the next tick. nil: ticks only.
	Ready <-chan struct{}
	// Memory brings samples of the workers' memory, read from /proc off the loop. nil:
	// none (--max-worker-memory then never acts).
	Memory <-chan MemorySample
}

// MemorySample is the workers' unique memory (USS) in bytes, by pid, as read at one time.
type MemorySample map[int]int64

type phase int

const (
	running  phase = iota
	delaying       // TERM received, waiting --shutdown-delay before stopping workers
	stopping       // workers told to stop; exit when the table is empty
)

// Stop and exit reasons, also metric label values.
const (
	ReasonCrash      = "crash"
	ReasonTimeout    = "timeout"
	ReasonBoot       = "boot_failure"
	ReasonRecycled   = "recycled"
	ReasonReload     = "reload"
	ReasonScaledDown = "scaled_down"
	ReasonShutdown   = "shutdown"
	ReasonSignal     = "signal"
	ReasonOOM        = "oom"
	ReasonMemory     = "memory" // its USS grew past --max-worker-memory: replaced
)

type worker struct {
	slot        int
	gen         int
	age         int
	proc        Process // nil while starting
	pid         int     // 0 while starting
	spawnedAt   time.Duration
	readyAt     time.Duration // 0 while booting
	maxRequests uint64        // 0 = unlimited
	recycle     string        // why it is to be replaced (ReasonRecycled, ReasonMemory); "" = not
	uss         int64         // unique memory at the last sample; 0 = not sampled
	replaces    *worker       // set on a surge worker until it is ready and the old one stopped
	stopReason  string        // why the master stopped it; "" = still wanted
	stopAt      time.Duration
	abortAt     time.Duration  // SIGABRT sent (hang)
	sent        uint64         // bit n set: signal n was sent by the master
	owed        syscall.Signal // sent while starting: delivered once the process exists
	staleReads  int
	last        scoreboard.Slot
}

func (w *worker) ready() bool    { return w.readyAt != 0 }
func (w *worker) starting() bool { return w.proc == nil }
func (w *worker) sentSignal(sig syscall.Signal) bool {
	return sig < 64 && w.sent&(1<<uint(sig)) != 0
}
func (w *worker) recordSignal(sig syscall.Signal) {
	if sig < 64 {
		w.sent |= 1 << uint(sig)
	}
}
func (w *worker) killed() bool   { return w.sentSignal(syscall.SIGKILL) }
func (w *worker) stopping() bool { return w.stopReason != "" }

// Master is the supervisor; create it with New and run it with Run.
type Master struct {
	cfg     Config
	spawner Spawner
	hooks   Hooks
	log     *zap.Logger
	now     func() time.Duration
	rand    func(n int) int

	workers      []*worker // in spawn order: oldest first
	desired      int
	gen          int
	age          int // workers spawned so far: gunicorn's worker_age
	failedGen    int // generation whose workers could not boot; not rolled out again
	everReady    bool
	phase        phase
	exitCode     int
	delayUntil   time.Duration
	killAt       time.Duration
	crashes      int // quick deaths in a row: the spawn backoff
	bootFailures int // workers that died before any worker was ever ready
	nextSpawn    time.Duration
	lastResize   time.Duration
	sized        int // the count the Resize hook last asked for
	oomSeen      uint64
	sourceChange uint64 // --reload: the newest source change acted on (mtime, Unix ns)
	reloading    bool   // a Reload hook is running
	reloadAgain  bool   // a HUP arrived while it ran: reload once more when it reports
	upgrading    bool   // a USR2 pre-flight is running
	handover     bool   // the pre-flight passed: hand over once no spawn is in flight
	starting     int    // spawns in flight
	early        []Exit // exits of unknown pids while spawns are in flight

	retired scoreboard.Slot // counters of exited workers
	spawns  uint64
	exits   map[string]uint64

	queries chan chan Snapshot
	reloads chan reloadResult // at most one in flight, so a send never blocks
	checked chan error        // the pre-flight's verdict; at most one in flight
	spawned chan spawnResult
}

type spawnResult struct {
	w    *worker
	proc Process
	err  error
}

type reloadResult struct {
	apply func() Config
	err   error
}

// New builds a master. now is the one monotonic clock of every policy decision, and the
// clock the workers write in the scoreboard (CLOCK_MONOTONIC; scoreboard.Now in
// production); zero means "not yet" in the table, so it must be positive. rand(n)
// returns [0,n).
func New(cfg Config, sp Spawner, hooks Hooks, log *zap.Logger, now func() time.Duration, rand func(int) int) *Master {
	if cfg.KillGrace == 0 {
		cfg.KillGrace = 2 * time.Second
	}
	if cfg.Slots == 0 {
		cfg.Slots = scoreboard.MaxSlots
	}
	return &Master{
		cfg: cfg, spawner: sp, hooks: hooks, log: log, now: now, rand: rand,
		desired: cfg.Workers, sized: cfg.Workers, gen: 1, exits: map[string]uint64{},
		queries: make(chan chan Snapshot), reloads: make(chan reloadResult, 1), checked: make(chan error, 1), spawned: make(chan spawnResult, cfg.Slots), lastResize: now(),
	}
}

// Run serves inputs until the master exits, and returns the process exit code.
func (m *Master) Run(in Inputs) int {
	if m.hooks.OOMKills != nil {
		m.oomSeen, _ = m.hooks.OOMKills() // OOM kills before we started are not ours
	}
	m.manage()
	for {
		if m.phase == stopping && len(m.workers) == 0 {
			m.log.Info("exiting", zap.Int("exit_code", m.exitCode))
			return m.exitCode
		}
		select {
		case sig := <-in.Signals:
			m.onSignal(sig.(syscall.Signal))
		case e := <-in.Exits:
			m.onExit(e)
		case <-in.Ticks:
			m.onTick()
		case <-in.Ready:
			m.checkBooting()
		case sample := <-in.Memory:
			m.onMemory(sample)
		case reply := <-m.queries:
			reply <- m.snapshot()
		case r := <-m.reloads:
			m.onReloaded(r)
		case err := <-m.checked:
			m.onPreflight(err)
		case r := <-m.spawned:
			m.onSpawned(r)
		}
		m.manage()
	}
}

func (m *Master) onSignal(sig syscall.Signal) {
	m.log.Info("signal received", zap.String("signal", sigName(sig)))
	switch sig {
	case syscall.SIGTERM:
		if m.phase != running {
			return
		}
		m.phase = delaying
		m.delayUntil = m.now() + m.cfg.ShutdownDelay
		if m.cfg.ShutdownDelay > 0 {
			m.log.Info("graceful shutdown: not ready, serving on for the shutdown delay", zap.Duration("shutdown_delay", m.cfg.ShutdownDelay))
		}
		m.onTick()
	case syscall.SIGINT, syscall.SIGQUIT:
		m.stopAll(syscall.SIGQUIT, ReasonShutdown, ExitOK)
	case syscall.SIGHUP:
		m.reload()
	case syscall.SIGTTIN:
		if m.hooks.MemoryCeiling != nil {
			if c := m.hooks.MemoryCeiling(); c > 0 && m.desired >= c {
				m.log.Warn("TTIN refused: no more workers fit in the memory limit", zap.Int("workers", m.desired), zap.Int("fit", c))
				return
			}
		}
		m.setDesired(m.desired + 1)
		m.log.Info("scaling up", zap.Int("workers", m.desired))
	case syscall.SIGTTOU:
		if m.desired > 1 {
			m.setDesired(m.desired - 1)
			m.log.Info("scaling down", zap.Int("workers", m.desired))
		}
	case syscall.SIGWINCH:
		m.setDesired(0)
		m.log.Info("stopping all workers; the master and its sockets stay (HUP or TTIN to resume)")
	case syscall.SIGUSR1:
		if m.hooks.ReopenLogs != nil {
			m.hooks.ReopenLogs()
		}
		for _, w := range m.workers {
			_ = m.signal(w, syscall.SIGUSR1)
		}
	case syscall.SIGUSR2:
		m.upgrade()
	}
}

// setDesired changes the worker count the master aims for, telling the hooks.
func (m *Master) setDesired(n int) {
	old := m.desired
	m.desired = n
	if n != old && m.hooks.WorkersChanged != nil {
		m.hooks.WorkersChanged(n, old)
	}
}

// stopAll ends the master: every worker gets sig, and SIGKILL after the graceful timeout.
func (m *Master) stopAll(sig syscall.Signal, reason string, code int) {
	if m.phase == stopping && sig == syscall.SIGTERM {
		return
	}
	m.phase = stopping
	if code != ExitOK {
		m.exitCode = code
	}
	m.killAt = m.now() + m.cfg.GracefulTimeout
	for _, w := range m.workers {
		m.stop(w, sig, reason)
	}
}

func (m *Master) stop(w *worker, sig syscall.Signal, reason string) {
	if !w.stopping() || sig != syscall.SIGTERM {
		if !w.stopping() {
			w.stopReason = reason
			w.stopAt = m.now()
		}
		if err := m.signal(w, sig); err != nil {
			m.log.Debug("signalling worker", zap.Int("pid", w.pid), zap.Error(err))
		}
	}
}

// signal sends sig to a worker and remembers it, so its death can be attributed. A
// worker still starting gets it as soon as it exists.
func (m *Master) signal(w *worker, sig syscall.Signal) error {
	w.recordSignal(sig)
	if w.starting() {
		w.owed = sig
		return nil
	}
	return w.proc.Signal(sig)
}

// reload starts the Reload hook off the loop; onReloaded finishes the reload.
func (m *Master) reload() {
	if m.phase != running {
		return
	}
	if m.hooks.Reload == nil {
		m.rollOut()
		return
	}
	if m.reloading {
		m.reloadAgain = true
		m.log.Info("reload already in progress; another follows it")
		return
	}
	m.reloading = true
	cur := m.cfg
	go func() {
		apply, err := m.hooks.Reload(cur)
		m.reloads <- reloadResult{apply, err}
	}()
}

func (m *Master) onReloaded(r reloadResult) {
	m.reloading = false
	switch {
	case m.phase != running:
	case r.err != nil:
		m.log.Error("reload aborted: the old workers keep serving", zap.Error(r.err))
	default:
		next := r.apply()
		next.Slots, next.KillGrace = m.cfg.Slots, m.cfg.KillGrace
		if next.Workers != m.cfg.Workers && next.Workers > 0 {
			m.log.Info("the configuration changes the worker count", zap.Int("from", m.desired), zap.Int("to", next.Workers))
			m.sized = next.Workers
			m.setDesired(next.Workers)
		} else if next.Workers > 0 && m.hooks.WorkersChanged != nil {
			// gunicorn's reload sets the count again, and its hook hears it, changed or not.
			m.hooks.WorkersChanged(m.desired, m.desired)
		}
		m.cfg = next
		m.rollOut()
	}
	if m.reloadAgain {
		m.reloadAgain = false
		m.reload()
	}
}

// rollOut starts a new generation: workers are replaced one at a time.
func (m *Master) rollOut() {
	if m.desired == 0 {
		m.setDesired(m.cfg.Workers)
	}
	m.gen++
	m.log.Info("reloading: replacing workers one at a time", zap.Int("generation", m.gen))
}

// upgrade starts the new binary's pre-flight off the loop; onPreflight hands over.
func (m *Master) upgrade() {
	if m.hooks.Upgrade == nil || m.phase != running {
		return
	}
	if m.upgrading {
		m.log.Warn("binary upgrade already in progress; USR2 ignored")
		return
	}
	m.upgrading = true
	go func() {
		var err error
		if m.hooks.Preflight != nil {
			err = m.hooks.Preflight()
		}
		m.checked <- err
	}()
}

func (m *Master) onPreflight(err error) {
	m.upgrading = false
	if m.phase != running {
		return
	}
	if err != nil {
		m.log.Error("binary upgrade refused: the new binary failed its pre-flight; the old one keeps serving", zap.Error(err))
		return
	}
	m.handover = true
	m.handOver()
}

// handOver execs the new binary once no spawn is in flight: a worker forked after the
// table was handed over would be nobody's.
func (m *Master) handOver() {
	if !m.handover || m.starting > 0 {
		return
	}
	m.handover = false
	if m.phase != running {
		return
	}
	// The table as it is now, not as it was when USR2 arrived.
	h := Handover{Desired: m.desired, Generation: m.gen, Age: m.age}
	for _, w := range m.workers {
		if !w.stopping() {
			h.Workers = append(h.Workers, HandoverWorker{Pid: w.pid, Slot: w.slot, Generation: w.gen, MaxRequests: w.maxRequests, Age: w.age})
		}
	}
	if err := m.hooks.Upgrade(h); err != nil {
		m.log.Error("binary upgrade failed; carrying on", zap.Error(err))
	}
}

func (m *Master) find(pid int) int {
	return slices.IndexFunc(m.workers, func(w *worker) bool { return w.pid == pid && !w.starting() })
}

func (m *Master) onExit(e Exit) {
	i := m.find(e.Pid)
	if i < 0 && m.starting > 0 {
		// Perhaps a worker whose start has not reported yet: the reaper may route its
		// exit here first. onSpawned settles it.
		m.early = append(m.early, e)
		return
	}
	if i < 0 {
		m.log.Debug("reaped orphan", zap.Int("pid", e.Pid), zap.String("status", describeStatus(e.Status)))
		return
	}
	w := m.workers[i]
	m.workers = slices.Delete(m.workers, i, i+1)
	final := w.proc.Status()
	w.proc.Release()
	if final.PID == uint64(w.pid) {
		m.retired.Add(final)
	}
	for _, o := range m.workers {
		if o.replaces == w {
			o.replaces = nil // its replacement now simply adds capacity
		}
	}
	now := m.now()
	reason := w.stopReason
	fields := []zap.Field{zap.Int("pid", w.pid), zap.Int("slot", w.slot), zap.Int("generation", w.gen), zap.String("status", describeStatus(e.Status))}
	code := e.Status.ExitStatus()
	bootFailed := !w.ready() && e.Status.Exited() && (code == ExitBootFailure || code == ExitAppLoad)
	// A death by a signal the master did not send is someone else's doing (the OOM killer,
	// an operator), even for a worker the master was stopping.
	foreign := e.Status.Signaled() && !w.sentSignal(e.Status.Signal())
	serving, inFlight := "", []zap.Field(nil)
	if final.PID == uint64(w.pid) {
		serving, inFlight = requestInFlight(final, now)
	}
	switch {
	case foreign && e.Status.Signal() == syscall.SIGKILL && m.oomKilled():
		reason = ReasonOOM
		m.log.Error("worker was killed by the kernel's OOM killer (cgroup memory limit reached)"+serving, append(fields, inFlight...)...)
	case foreign:
		reason = ReasonSignal
		m.log.Error("worker was killed by a signal gorn did not send"+serving, append(fields, append(inFlight, zap.String("signal", sigName(e.Status.Signal())))...)...)
	case reason == ReasonShutdown || reason == ReasonScaledDown || reason == ReasonRecycled || reason == ReasonReload || reason == ReasonMemory:
		m.log.Info("worker exited", append(fields, zap.String("reason", reason))...)
	case reason != "":
		m.log.Warn("worker exited", append(fields, zap.String("reason", reason))...)
	case bootFailed:
		reason = ReasonBoot
		m.log.Error("worker failed to boot", fields...)
	default:
		reason = ReasonCrash
		m.log.Error("worker exited unexpectedly"+serving, append(fields, inFlight...)...)
	}
	m.exits[reason]++
	if m.hooks.ChildExit != nil {
		status := int(e.Status)
		m.hooks.ChildExit(HookWorker{Pid: w.pid, Slot: w.slot, Generation: w.gen, Age: w.age, MaxRequests: w.maxRequests, Status: &status})
	}

	if m.phase == stopping {
		return
	}
	if bootFailed && !m.everReady {
		if code == ExitAppLoad {
			m.log.Error("app failed to load; exiting (see the worker's error above)")
		} else {
			m.log.Error("worker failed to boot; exiting")
		}
		m.stopAll(syscall.SIGKILL, ReasonShutdown, code)
		return
	}
	if bootFailed && w.gen == m.gen && m.gen > 1 && m.failedGen != m.gen {
		m.failedGen = m.gen
		m.log.Error("reload failed: the new code does not boot; the previous generation keeps serving until the next HUP", zap.Int("generation", m.gen))
	}
	if reason == ReasonCrash || reason == ReasonBoot || reason == ReasonSignal || reason == ReasonOOM || reason == ReasonTimeout {
		if now-w.spawnedAt < quickDeath {
			m.crashes++
			if m.crashes > 1 {
				delay := m.backoff()
				m.log.Warn("workers are dying quickly; backing off", zap.Int("crashes_in_a_row", m.crashes), zap.Duration("next_spawn_in", delay))
			}
		}
		// At start-up every worker that dies before it is ready is a failed boot, however
		// long it took (an import that hangs until the boot timeout): gorn gives up
		// rather than trying forever.
		if !m.everReady && !w.ready() {
			m.bootFailures++
			if m.bootFailures >= maxBootCrashes {
				m.log.Error("no worker has ever booted; giving up", zap.Int("attempts", m.bootFailures))
				m.stopAll(syscall.SIGKILL, ReasonShutdown, ExitBootFailure)
			}
		}
	}
}

// requestInFlight describes the request a dead worker's final slot says it was serving,
// for the line that reports its death: the message's tail (" while serving "GET /x" for
// 1.5s") and the fields request and request_seconds. Nothing when it was idle.
func requestInFlight(final scoreboard.Slot, now time.Duration) (string, []zap.Field) {
	if final.BusySince == 0 {
		return "", nil
	}
	ran := max(now-time.Duration(final.BusySince), 0)
	desc := final.Desc
	if desc == "" {
		desc = "?"
	}
	tail := fmt.Sprintf(" while serving %q for %s", desc, ran.Round(time.Millisecond))
	if final.InFlight > 1 {
		tail += fmt.Sprintf(" (the oldest of %d requests in flight)", final.InFlight)
	}
	return tail, []zap.Field{zap.String("request", desc), zap.Float64("request_seconds", ran.Seconds())}
}

const (
	quickDeath     = 5 * time.Second
	backoffBase    = 100 * time.Millisecond
	backoffMax     = 10 * time.Second
	maxBootCrashes = 5
)

// backoff delays the next spawn exponentially in the number of quick deaths in a row.
func (m *Master) backoff() time.Duration {
	delay := min(backoffBase<<min(m.crashes-1, 16), backoffMax)
	m.nextSpawn = m.now() + delay
	return delay
}

func (m *Master) oomKilled() bool {
	if m.hooks.OOMKills == nil {
		return false
	}
	n, ok := m.hooks.OOMKills()
	if !ok {
		return false
	}
	grew := n > m.oomSeen
	m.oomSeen = n
	return grew
}

func (m *Master) onTick() {
	now := m.now()
	if m.phase == delaying && now >= m.delayUntil {
		m.log.Info("stopping workers gracefully", zap.Duration("graceful_timeout", m.cfg.GracefulTimeout))
		m.stopAll(syscall.SIGTERM, ReasonShutdown, ExitOK)
	}
	if m.phase == stopping && now >= m.killAt {
		for _, w := range m.workers {
			if !w.killed() {
				m.log.Warn("graceful timeout: killing worker", zap.Int("pid", w.pid), zap.Int("slot", w.slot))
				m.kill(w)
			}
		}
		if now >= m.killAt+5*time.Second {
			m.log.Error("workers survived SIGKILL; exiting anyway", zap.Int("left", len(m.workers)))
			for _, w := range m.workers {
				if !w.starting() {
					w.proc.Release()
				}
			}
			m.workers = nil
		}
	}
	for _, w := range m.workers {
		m.check(w, now)
	}
	if m.cfg.ResizeInterval > 0 && now-m.lastResize >= m.cfg.ResizeInterval {
		m.resize()
	}
}

// onMemory takes a sample of the workers' memory: a worker past --max-worker-memory is
// replaced like one that served its max requests.
func (m *Master) onMemory(sample MemorySample) {
	for _, w := range m.workers {
		uss, ok := sample[w.pid]
		if !ok || w.starting() {
			continue
		}
		w.uss = uss
		limit := m.cfg.MaxWorkerMemory
		if limit <= 0 || uss <= limit || !w.ready() || w.stopping() || w.recycle != "" {
			continue
		}
		w.recycle = ReasonMemory
		m.log.Warn("worker's memory grew past --max-worker-memory; replacing it after its request", zap.Int("pid", w.pid), zap.Int("slot", w.slot),
			zap.Int64("uss_bytes", uss), zap.Int64("max_worker_memory", limit))
	}
}

// checkBooting looks for readiness in the slots of the workers still booting.
func (m *Master) checkBooting() {
	now := m.now()
	for _, w := range m.workers {
		if !w.starting() && !w.ready() && !w.stopping() {
			m.check(w, now)
		}
	}
}

// resize asks the Resize hook for the worker count the limits call for now.
func (m *Master) resize() {
	m.lastResize = m.now()
	if m.phase != running || m.hooks.Resize == nil || m.desired == 0 {
		return
	}
	var ready []scoreboard.Slot
	for _, w := range m.workers {
		if w.ready() && !w.stopping() && w.last.PID == uint64(w.pid) {
			ready = append(ready, w.last)
		}
	}
	// Only a change in what the limits call for moves the count, so a TTIN/TTOU by an
	// operator stands until the limits themselves change.
	n, reason, ok := m.hooks.Resize(m.now(), ready)
	if !ok || n <= 0 || n == m.sized {
		return
	}
	m.sized = n
	if n != m.desired {
		m.log.Info("resizing", zap.Int("from", m.desired), zap.Int("to", n), zap.String("reason", reason))
		m.setDesired(n)
	}
}

// check applies readiness, recycling and the timeouts to one worker.
func (m *Master) check(w *worker, now time.Duration) {
	if w.starting() {
		return
	}
	s := w.proc.Status()
	if s.PID == uint64(w.pid) {
		w.last = s
	}
	if w.killed() {
		return
	}
	if w.abortAt != 0 {
		if now-w.abortAt >= m.cfg.KillGrace {
			m.kill(w)
		}
		return
	}
	if w.stopping() {
		if m.phase != stopping && now-w.stopAt >= m.cfg.GracefulTimeout {
			m.log.Warn("worker did not stop within the graceful timeout; killing it", zap.Int("pid", w.pid), zap.Int("slot", w.slot))
			m.kill(w)
		}
		return
	}
	if !w.ready() {
		if s.PID == uint64(w.pid) && s.State >= scoreboard.StateReady {
			w.readyAt = now
			m.crashes = 0
			m.log.Info("worker ready", zap.Int("pid", w.pid), zap.Int("slot", w.slot), zap.Int("generation", w.gen), zap.Duration("boot", now-w.spawnedAt))
			if !m.everReady {
				m.everReady = true
				if m.hooks.Ready != nil {
					m.hooks.Ready()
				}
				m.resize()
			}
			m.promote(w)
		} else if m.cfg.BootTimeout > 0 && now-w.spawnedAt > m.cfg.BootTimeout {
			// SIGABRT first: faulthandler dumps where the boot hangs (an import waiting on
			// a database, a lock); SIGKILL follows after the kill grace.
			m.log.Error("worker did not become ready within the boot timeout; dumping its Python stack and aborting it", zap.Int("pid", w.pid), zap.Int("slot", w.slot), zap.Duration("boot_timeout", m.cfg.BootTimeout))
			w.stopReason = ReasonBoot
			w.stopAt = now
			w.abortAt = now
			if err := m.signal(w, syscall.SIGABRT); err != nil {
				m.kill(w)
			}
		}
		return
	}
	if w.last.SourceChange > m.sourceChange {
		// --reload: a worker saw a source file saved after the last change acted on.
		// Every worker sees the same save (the same mtime): it reloads once.
		m.sourceChange = w.last.SourceChange
		m.log.Info("source files changed (--reload): reloading", zap.Int("pid", w.pid), zap.Int("slot", w.slot))
		m.reload()
	}
	if w.maxRequests > 0 && s.Requests >= w.maxRequests && w.recycle == "" {
		w.recycle = ReasonRecycled
		m.log.Info("worker reached max requests; replacing it", zap.Int("pid", w.pid), zap.Int("slot", w.slot), zap.Uint64("requests", s.Requests))
	}
	if m.cfg.Timeout <= 0 {
		return
	}
	var stale time.Duration
	switch {
	case s.BusySince != 0:
		stale = now - time.Duration(s.BusySince)
	case !s.Accepting && s.Heartbeat != 0:
		stale = now - time.Duration(s.Heartbeat)
	}
	if stale <= m.cfg.Timeout {
		w.staleReads = 0
		return
	}
	// Act only on two consecutive stale reads: a single read may see a torn update.
	if w.staleReads++; w.staleReads < 2 {
		return
	}
	fields := []zap.Field{zap.Int("pid", w.pid), zap.Int("slot", w.slot), zap.Duration("timeout", m.cfg.Timeout)}
	if s.BusySince != 0 {
		m.log.Error(fmt.Sprintf("WORKER TIMEOUT: request %q running for %s; dumping its Python stack and aborting it", s.Desc, stale.Round(time.Millisecond)), fields...)
	} else {
		m.log.Error(fmt.Sprintf("WORKER TIMEOUT: no heartbeat for %s; dumping its Python stack and aborting it", stale.Round(time.Millisecond)), fields...)
	}
	w.stopReason = ReasonTimeout
	w.stopAt = now
	w.abortAt = now
	if err := m.signal(w, syscall.SIGABRT); err != nil {
		m.kill(w)
	}
}

// promote finishes a surge: the worker that a ready replacement stands in for is stopped.
func (m *Master) promote(w *worker) {
	old := w.replaces
	if old == nil {
		return
	}
	w.replaces = nil
	reason := ReasonRecycled
	switch {
	case old.gen < m.gen: // a reload replaces it, whatever else was due
		reason = ReasonReload
	case old.recycle != "":
		reason = old.recycle
	}
	m.stop(old, syscall.SIGTERM, reason)
}

func (m *Master) kill(w *worker) {
	w.recordSignal(syscall.SIGKILL)
	if w.starting() {
		return // onSpawned kills it
	}
	if err := w.proc.Kill(); err != nil {
		m.log.Debug("killing worker", zap.Int("pid", w.pid), zap.Error(err))
	}
}

// active counts workers that provide capacity toward the desired count.
func (m *Master) active() int {
	n := 0
	for _, w := range m.workers {
		if !w.stopping() && w.replaces == nil {
			n++
		}
	}
	return n
}

// manage moves the table toward the desired state after every event.
func (m *Master) manage() {
	if m.phase == stopping {
		return
	}
	now := m.now()
	for active := m.active(); active < m.desired; active++ {
		if now < m.nextSpawn {
			return
		}
		if m.spawn(nil) == nil || m.crashes > 0 {
			return
		}
	}
	for extra := m.active() - m.desired; extra > 0; extra-- {
		w := m.pickIdle()
		if w == nil {
			break
		}
		m.stop(w, syscall.SIGTERM, ReasonScaledDown)
	}
	m.surge(now)
}

// surge starts one replacement for a worker that must go (reload, recycle), unless one is
// already booting; the old worker is stopped only when the replacement is ready.
func (m *Master) surge(now time.Duration) {
	if now < m.nextSpawn || slices.ContainsFunc(m.workers, func(w *worker) bool { return w.replaces != nil }) {
		return
	}
	for _, w := range m.workers {
		if w.stopping() || !w.ready() {
			continue
		}
		if w.recycle != "" || (w.gen < m.gen && m.failedGen != m.gen) {
			m.spawn(w)
			return
		}
	}
}

// pickIdle chooses the worker to scale down: the oldest idle one, else the oldest. A
// worker whose replacement is booting is left alone: stopping it would only promote the
// replacement to capacity.
func (m *Master) pickIdle() *worker {
	targets := map[*worker]bool{}
	for _, w := range m.workers {
		if w.replaces != nil {
			targets[w.replaces] = true
		}
	}
	var oldest *worker
	for _, w := range m.workers {
		if w.stopping() || w.replaces != nil || targets[w] {
			continue
		}
		if oldest == nil {
			oldest = w
		}
		if w.last.BusySince == 0 {
			return w
		}
	}
	return oldest
}

func (m *Master) freeSlot() int {
	used := make([]bool, m.cfg.Slots)
	for _, w := range m.workers {
		used[w.slot] = true
	}
	return slices.Index(used, false)
}

// spawn starts a worker: the table has it at once (its slot taken, counted as booting);
// the fork runs off the loop and onSpawned completes the entry.
func (m *Master) spawn(replaces *worker) *worker {
	slot := m.freeSlot()
	if slot < 0 {
		m.log.Error("no free scoreboard slot; not spawning", zap.Int("slots", m.cfg.Slots))
		return nil
	}
	m.age++
	start := m.spawner.Spawn(SpawnRequest{Slot: slot, Generation: m.gen, Age: m.age, Workers: m.desired})
	w := &worker{slot: slot, gen: m.gen, age: m.age, spawnedAt: m.now(), replaces: replaces}
	if m.cfg.MaxRequests > 0 {
		w.maxRequests = uint64(m.cfg.MaxRequests)
		if m.cfg.MaxRequestsJitter > 0 {
			w.maxRequests += uint64(m.rand(m.cfg.MaxRequestsJitter + 1))
		}
	}
	m.workers = append(m.workers, w)
	m.starting++
	m.spawns++
	preFork, info := m.hooks.PreFork, HookWorker{Slot: w.slot, Generation: w.gen, Age: w.age, MaxRequests: w.maxRequests}
	go func() {
		if preFork != nil {
			preFork(info)
		}
		proc, err := start()
		m.spawned <- spawnResult{w, proc, err}
	}()
	return w
}

func (m *Master) onSpawned(r spawnResult) {
	m.starting--
	w := r.w
	if m.hooks.Spawned != nil {
		info := HookWorker{Slot: w.slot, Generation: w.gen, Age: w.age, MaxRequests: w.maxRequests}
		if r.err == nil {
			info.Pid = r.proc.Pid()
		}
		m.hooks.Spawned(info)
	}
	if r.err != nil {
		m.workers = slices.DeleteFunc(m.workers, func(o *worker) bool { return o == w })
		m.log.Error("starting worker", zap.Error(r.err))
		m.spawns--
		m.crashes++
		m.backoff()
		m.bootFailures++
		if !m.everReady && m.bootFailures >= maxBootCrashes && m.phase != stopping {
			m.stopAll(syscall.SIGKILL, ReasonShutdown, ExitBootFailure)
		}
	} else {
		w.proc, w.pid = r.proc, r.proc.Pid()
		m.log.Debug("worker spawned", zap.Int("pid", w.pid), zap.Int("slot", w.slot), zap.Int("generation", w.gen), zap.Int("age", w.age))
		switch {
		case w.killed():
			m.kill(w)
		case w.owed != 0:
			if err := w.proc.Signal(w.owed); err != nil {
				m.log.Debug("signalling worker", zap.Int("pid", w.pid), zap.Error(err))
			}
		}
		w.owed = 0
		if !w.stopping() {
			m.check(w, m.now()) // it may have announced its readiness before its pid was known
		}
	}
	if m.starting == 0 {
		early := m.early
		m.early = nil
		for _, e := range early {
			m.onExit(e)
		}
	} else if i := slices.IndexFunc(m.early, func(e Exit) bool { return e.Pid == w.pid && w.pid != 0 }); i >= 0 {
		e := m.early[i]
		m.early = slices.Delete(m.early, i, i+1)
		m.onExit(e)
	}
	m.handOver()
}

func describeStatus(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit %d", ws.ExitStatus())
	case ws.Signaled():
		return "killed by " + sigName(ws.Signal())
	default:
		return fmt.Sprintf("status %#x", uint32(ws))
	}
}

func sigName(s syscall.Signal) string {
	if n := unixSignalName(s); n != "" {
		return n
	}
	return s.String()
}
