package bench

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for the progress goroutine and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestProgressDrawsAndClears(t *testing.T) {
	var buf lockedBuffer
	p := newProgress(&buf, 3, 2*time.Second)
	p.start(1, plan{class: "sync", workers: 4})
	time.Sleep(600 * time.Millisecond)
	p.finish()
	out := buf.String()
	if !strings.Contains(out, "run 2/3: sync -w 4") || !strings.Contains(out, "of about 6s") || !strings.HasSuffix(out, "\r\033[K") {
		t.Errorf("progress output %q", out)
	}
	time.Sleep(300 * time.Millisecond)
	if buf.String() != out {
		t.Error("the progress line was drawn after finish")
	}
	quiet := newProgress(nil, 1, time.Second) // not a terminal: nothing at all
	quiet.start(0, plan{class: "sync", layout: Layout{2, 0.5}})
	quiet.finish()
}

func TestWriteText(t *testing.T) {
	r := Report{Module: "app:app", MachineCPUs: 2, CPUs: 1, Load: "32 connections", Isolation: "cgroup v1 CPU quota",
		Runs: []Run{
			{Class: "sync", Workers: 3, CPULimit: 1, RPS: 250, P50: 1.5, P90: 12, P99: 20, Max: 31, CPUUsed: 0.7, Periods: 40, Throttled: 2, ThrottledMs: 1.5, PSSBytes: 75 << 20, Requests: 100},
			{Class: "sync", Workers: 4, CPULimit: 1, RPS: 900, GeneratorBound: true, Note: "generator-bound: busy", Requests: 100, Periods: -1},
		},
		GornPicks: []Pick{{Class: "sync", CPUs: 1, Workers: 3, Formula: "2*1+1"}},
	}
	r.Recommendation = Recommend(r.Runs)
	var b bytes.Buffer
	r.WriteText(&b)
	out := b.String()
	for _, want := range []string{"3*", "250", "1.5ms", "20ms", "0.70/1", "2/40, 1.5ms", "75MiB", "<- recommended",
		"n/a", ">=900", "(generator-bound: not a server figure)", "gorn's own choice for a limit of 1 CPU: 3 sync workers (2*1+1)",
		"recommendation: 3 sync workers"} {
		if !strings.Contains(out, want) {
			t.Errorf("the text lacks %q:\n%s", want, out)
		}
	}
}
