// Package scoreboard is the Go side of the shared-memory scoreboard that gorn's master and
// its Python workers share (worker/CONTRACT.md). The region is a memfd mapped MAP_SHARED:
// each worker writes aligned 8-byte words into its own slot, the master reads them with
// atomic loads. It carries liveness, readiness and per-request counters with zero syscalls
// on the request path.
package scoreboard

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Version is the layout's version: bump it when a word below moves or changes meaning. A
// binary upgrade hands the scoreboard, with its live workers, to the new binary, which
// refuses a layout it does not read.
const Version = 1

// Slot geometry and word indexes; they must match gorn_worker/scoreboard.py.
const (
	SlotWords = 128
	SlotBytes = SlotWords * 8

	WordGeneration  = 0
	WordPID         = 1
	WordState       = 2
	WordHeartbeat   = 3
	WordBusySince   = 4
	WordRequests    = 5
	WordDescLen     = 6
	WordAccepting   = 7
	WordCounters    = 8
	WordHistogram   = 48
	WordDurationSum = 62
	WordBytesSent   = 63
	WordDesc        = 64
	DescBytes       = 128
	WordInFlight    = 80 // requests in progress in a threaded worker; 0 in a sync one
	WordReload      = 81 // --reload: when the newest source change the worker saw was made
	WordConnections = 82 // client connections the worker holds open (running, waiting for a head, kept alive)
	WordRequestPath = 83 // the request path the worker runs: RequestPathPython or RequestPathNative; 0 before it chose

	Methods  = 8 // GET HEAD POST PUT DELETE PATCH OPTIONS other
	Classes  = 5 // 1xx..5xx
	Buckets  = 14
	MaxSlots = 1024
)

// Request paths written to WordRequestPath (worker/pyworker/gorn_worker/native.py).
const (
	RequestPathPython = 1
	RequestPathNative = 2
)

// Worker states written to WordState.
const (
	StateFree     = 0
	StateBooting  = 1
	StateReady    = 2
	StateDraining = 3
)

// MethodNames are the method labels in counter order.
var MethodNames = [Methods]string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}

// BucketBounds are the histogram upper bounds in seconds; the last bucket is +Inf.
var BucketBounds = [Buckets - 1]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Slot is a copy of one worker's slot.
type Slot struct {
	Generation   uint64
	PID          uint64
	State        uint64
	Heartbeat    uint64 // CLOCK_MONOTONIC ns
	BusySince    uint64 // CLOCK_MONOTONIC ns; 0 when idle
	Requests     uint64
	Accepting    bool // blocked in accept(): idle in the kernel, exempt from heartbeat checks
	Desc         string
	Counters     [Methods][Classes]uint64
	Histogram    [Buckets]uint64
	DurationSum  uint64 // microseconds
	BytesSent    uint64
	InFlight     uint64 // threaded workers: requests in progress (BusySince is the oldest's start)
	SourceChange uint64 // --reload: mtime (Unix ns) of the newest source change seen; 0 = none
	Connections  uint64 // client connections held open: running a request, waiting for a head, kept alive
	RequestPath  uint64 // RequestPathPython, RequestPathNative, or 0 before the worker chose
}

// Board is a mapped scoreboard.
type Board struct {
	file  *os.File
	mem   []byte
	slots int
}

// New creates an anonymous scoreboard with room for slots workers.
func New(slots int) (*Board, error) {
	if slots <= 0 || slots > MaxSlots {
		return nil, fmt.Errorf("creating scoreboard: %d slots out of range 1..%d", slots, MaxSlots)
	}
	fd, err := unix.MemfdCreate("gorn-scoreboard", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating scoreboard memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "gorn-scoreboard")
	if err := f.Truncate(int64(slots * SlotBytes)); err != nil {
		f.Close()
		return nil, fmt.Errorf("sizing scoreboard: %w", err)
	}
	return Map(f)
}

// Map maps an existing scoreboard file (for example one inherited across a re-exec).
func Map(f *os.File) (*Board, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading scoreboard size: %w", err)
	}
	if st.Size() == 0 || st.Size()%SlotBytes != 0 {
		return nil, fmt.Errorf("mapping scoreboard: size %d is not a multiple of %d", st.Size(), SlotBytes)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping scoreboard: %w", err)
	}
	return &Board{file: f, mem: mem, slots: int(st.Size()) / SlotBytes}, nil
}

// File is the memfd, passed to workers.
func (b *Board) File() *os.File { return b.file }

// Slots is the number of slots.
func (b *Board) Slots() int { return b.slots }

func (b *Board) word(slot, w int) *uint64 {
	return (*uint64)(unsafe.Pointer(&b.mem[slot*SlotBytes+w*8]))
}

// Load reads one word of a slot atomically.
func (b *Board) Load(slot, w int) uint64 { return atomic.LoadUint64(b.word(slot, w)) }

// Store writes one word; only for slots no process owns, and for tests playing a worker.
func (b *Board) Store(slot, w int, v uint64) { atomic.StoreUint64(b.word(slot, w), v) }

// Reset zeroes a slot before it is handed to a new worker.
func (b *Board) Reset(slot int) {
	for w := 0; w < SlotWords; w++ {
		atomic.StoreUint64(b.word(slot, w), 0)
	}
}

// Read copies a slot with atomic loads.
func (b *Board) Read(slot int) Slot {
	s := Slot{
		Generation:   b.Load(slot, WordGeneration),
		PID:          b.Load(slot, WordPID),
		State:        b.Load(slot, WordState),
		Heartbeat:    b.Load(slot, WordHeartbeat),
		BusySince:    b.Load(slot, WordBusySince),
		Requests:     b.Load(slot, WordRequests),
		Accepting:    b.Load(slot, WordAccepting) != 0,
		DurationSum:  b.Load(slot, WordDurationSum),
		BytesSent:    b.Load(slot, WordBytesSent),
		InFlight:     b.Load(slot, WordInFlight),
		SourceChange: b.Load(slot, WordReload),
		Connections:  b.Load(slot, WordConnections),
		RequestPath:  b.Load(slot, WordRequestPath),
	}
	for m := 0; m < Methods; m++ {
		for c := 0; c < Classes; c++ {
			s.Counters[m][c] = b.Load(slot, WordCounters+m*Classes+c)
		}
	}
	for i := 0; i < Buckets; i++ {
		s.Histogram[i] = b.Load(slot, WordHistogram+i)
	}
	if n := b.Load(slot, WordDescLen); n > 0 && n <= DescBytes {
		desc := make([]byte, n)
		copy(desc, b.mem[slot*SlotBytes+WordDesc*8:])
		s.Desc = string(desc)
	}
	return s
}

// Close unmaps the board and closes its file.
func (b *Board) Close() error {
	err := unix.Munmap(b.mem)
	if cerr := b.file.Close(); err == nil {
		err = cerr
	}
	return err
}

// Now is CLOCK_MONOTONIC in nanoseconds, the clock the workers write.
func Now() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// Add accumulates another slot's counters into s (for totals over exited workers).
func (s *Slot) Add(o Slot) {
	s.Requests += o.Requests
	s.DurationSum += o.DurationSum
	s.BytesSent += o.BytesSent
	for m := range s.Counters {
		for c := range s.Counters[m] {
			s.Counters[m][c] += o.Counters[m][c]
		}
	}
	for i := range s.Histogram {
		s.Histogram[i] += o.Histogram[i]
	}
}
