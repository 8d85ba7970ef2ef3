package sizing

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAdapt(t *testing.T) {
	sec := time.Second
	for _, tc := range []struct {
		name                   string
		current, base, ceiling int
		cpus                   float64
		load                   Load
		want                   int
		why                    string
	}{
		{"waiting on I/O: one more", 3, 3, 5, 1, Load{3, 10 * sec, 29 * sec, 4 * sec}, 4, "workers busy 97% of the time, using 40% of 1 CPUs: requests wait on I/O"},
		{"CPU-bound: no more", 3, 3, 5, 1, Load{3, 10 * sec, 29 * sec, 9 * sec}, 3, ""},
		{"not busy enough: no more", 3, 3, 5, 1, Load{3, 10 * sec, 20 * sec, 2 * sec}, 3, ""},
		{"at the ceiling", 5, 3, 5, 1, Load{5, 10 * sec, 50 * sec, 4 * sec}, 5, ""},
		{"idle above base: one fewer", 5, 3, 5, 1, Load{5, 10 * sec, 10 * sec, 1 * sec}, 4, "one worker fewer, toward the CPU rule's 3"},
		{"idle at base: stay", 3, 3, 5, 1, Load{3, 10 * sec, 1 * sec, 0}, 3, ""},
		{"no measurement", 3, 3, 5, 1, Load{}, 3, ""},
		{"fractional cpus", 4, 4, 7, 1.5, Load{4, 10 * sec, 38 * sec, 5 * sec}, 5, "of 1.5 CPUs"},
	} {
		got, why := Adapt(tc.current, tc.base, tc.ceiling, tc.cpus, tc.load)
		if got != tc.want || (tc.why == "") != (why == "") || !strings.Contains(why, tc.why) {
			t.Errorf("%s: Adapt = %d %q, want %d %q", tc.name, got, why, tc.want, tc.why)
		}
	}
}

func TestSyncCeiling(t *testing.T) {
	for cpus, want := range map[float64]int{1: 5, 1.5: 7, 0.5: 3, 2: 9} {
		if got := SyncCeiling(cpus); got != want {
			t.Errorf("SyncCeiling(%v) = %d, want %d", cpus, got, want)
		}
	}
}

func TestReadCPUTime(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "42")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A command name with a space and a parenthesis, as a process title may have.
	stat := "42 (gorn: worker) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 1 0 100 1000 100\n"
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadCPUTime(root, 42)
	if err != nil || got != 3800*time.Millisecond {
		t.Errorf("ReadCPUTime = %v, %v; want 3.8s", got, err)
	}
	if _, err := ReadCPUTime(root, 43); err == nil {
		t.Error("no error for a missing process")
	}
	if self, err := ReadCPUTime("", os.Getpid()); err != nil || self < 0 {
		t.Errorf("own CPU time: %v, %v", self, err)
	}
}
