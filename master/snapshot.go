package master

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/internal/scoreboard"
)

// WorkerInfo is one worker in a Snapshot.
type WorkerInfo struct {
	Slot       int
	Pid        int
	Generation int
	State      string // booting, ready, busy, draining
	Age        time.Duration
	Status     scoreboard.Slot
}

// Snapshot is a copy of the master's state for metrics and health endpoints.
type Snapshot struct {
	Desired    int
	Generation int
	Ready      bool // serving and not shutting down, at least one worker ready
	ReadyCount int
	Workers    []WorkerInfo
	Retired    scoreboard.Slot   // counters of workers that have exited
	Spawns     uint64            // workers started
	Exits      map[string]uint64 // workers exited, by reason
	// MaxWorkerMemory is the policy's --max-worker-memory now (0: off), for the memory
	// sampler, which reads the workers' memory only when something acts on it.
	MaxWorkerMemory int64
}

// Snapshot asks the loop for a copy of its state.
func (m *Master) Snapshot(ctx context.Context) (Snapshot, error) {
	reply := make(chan Snapshot, 1)
	select {
	case m.queries <- reply:
	case <-ctx.Done():
		return Snapshot{}, fmt.Errorf("querying the master loop: %w", ctx.Err())
	}
	select {
	case s := <-reply:
		return s, nil
	case <-ctx.Done():
		return Snapshot{}, fmt.Errorf("waiting for the master loop: %w", ctx.Err())
	}
}

func (m *Master) snapshot() Snapshot {
	now := m.now()
	s := Snapshot{Desired: m.desired, Generation: m.gen, Retired: m.retired, Spawns: m.spawns, Exits: make(map[string]uint64, len(m.exits)),
		MaxWorkerMemory: m.cfg.MaxWorkerMemory}
	for k, v := range m.exits {
		s.Exits[k] = v
	}
	for _, w := range m.workers {
		var st scoreboard.Slot
		if !w.starting() {
			st = w.proc.Status()
		}
		if st.PID != uint64(w.pid) || w.pid == 0 {
			st = scoreboard.Slot{}
		}
		info := WorkerInfo{Slot: w.slot, Pid: w.pid, Generation: w.gen, Age: now - w.spawnedAt, Status: st}
		switch {
		case w.stopping():
			info.State = "draining"
		case !w.ready():
			info.State = "booting"
		case st.BusySince != 0:
			info.State = "busy"
		default:
			info.State = "ready"
		}
		if w.ready() && !w.stopping() {
			s.ReadyCount++
		}
		s.Workers = append(s.Workers, info)
	}
	s.Ready = m.phase == running && s.ReadyCount > 0
	return s
}

// Handover is what a re-executed master needs to adopt the running workers (USR2).
type Handover struct {
	Desired    int              `json:"desired"`
	Generation int              `json:"generation"`
	Age        int              `json:"age,omitempty"` // workers spawned so far
	Workers    []HandoverWorker `json:"workers"`
}

// HandoverWorker is one adopted worker.
type HandoverWorker struct {
	Pid         int    `json:"pid"`
	Slot        int    `json:"slot"`
	Generation  int    `json:"generation"`
	MaxRequests uint64 `json:"max_requests"`
	// FaultFD is the read end of the worker's stack-dump pipe, kept across the exec (0:
	// none); the upgrader fills it in, the master does not know it.
	FaultFD int `json:"fault_fd,omitempty"`
	Age     int `json:"age,omitempty"`
}

// Adopt takes over workers started by a previous master image; call before Run. With
// rollOut they are replaced one at a time by workers of the new binary, like a reload;
// without (the previous binary restored after a failed upgrade) they serve on.
func (m *Master) Adopt(h Handover, attach func(pid, slot int) Process, rollOut bool) {
	m.desired = h.Desired
	m.gen = h.Generation
	m.age = h.Age
	if rollOut {
		m.gen++
	}
	now := m.now()
	for _, hw := range h.Workers {
		w := &worker{slot: hw.Slot, gen: hw.Generation, age: hw.Age, proc: attach(hw.Pid, hw.Slot), pid: hw.Pid, spawnedAt: now, readyAt: now, maxRequests: hw.MaxRequests}
		m.workers = append(m.workers, w)
	}
	m.everReady = len(m.workers) > 0
}

func unixSignalName(s syscall.Signal) string { return unix.SignalName(s) }
