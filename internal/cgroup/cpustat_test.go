package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadCPUStat(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version int
		acct    bool // cpuacct.usage lies in a cpuacct hierarchy of its own
		files   map[string]string
		want    CPUStat
		wantErr string
	}{
		{"v1 with cpuacct", V1, false, map[string]string{
			"cpu.stat":      "nr_periods 40\nnr_throttled 7\nthrottled_time 1500000000\n",
			"cpuacct.usage": "2500000000\n",
		}, CPUStat{Throttling: true, Periods: 40, Throttled: 7, ThrottledTime: 1500 * time.Millisecond, UsageOK: true, Usage: 2500 * time.Millisecond}, ""},
		{"v1 with cpuacct mounted apart", V1, true, map[string]string{
			"cpu.stat":      "nr_periods 5\nnr_throttled 1\nthrottled_time 1000\n",
			"cpuacct.usage": "7000\n",
		}, CPUStat{Throttling: true, Periods: 5, Throttled: 1, ThrottledTime: time.Microsecond, UsageOK: true, Usage: 7 * time.Microsecond}, ""},
		{"v1 without cpuacct", V1, false, map[string]string{
			"cpu.stat": "nr_periods 3\nnr_throttled 0\nthrottled_time 0\n",
		}, CPUStat{Throttling: true, Periods: 3}, ""},
		{"v2", V2, false, map[string]string{
			"cpu.stat": "usage_usec 2000000\nuser_usec 1500000\nsystem_usec 500000\nnr_periods 10\nnr_throttled 4\nthrottled_usec 250000\n",
		}, CPUStat{Throttling: true, Periods: 10, Throttled: 4, ThrottledTime: 250 * time.Millisecond, UsageOK: true, Usage: 2 * time.Second}, ""},
		{"v2 without the cpu controller", V2, false, map[string]string{
			"cpu.stat": "usage_usec 42\nuser_usec 40\nsystem_usec 2\n",
		}, CPUStat{UsageOK: true, Usage: 42 * time.Microsecond}, ""},
		{"v2 malformed", V2, false, map[string]string{"cpu.stat": "nr_periods many\n"}, CPUStat{}, `nr_periods: parsing "many"`},
		{"v1 malformed cpuacct", V1, false, map[string]string{"cpuacct.usage": "x\n"}, CPUStat{}, `parsing "x"`},
		{"v1 nothing", V1, false, nil, CPUStat{}, "no such file"},
		{"v2 nothing", V2, false, nil, CPUStat{}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, acctDir := t.TempDir(), ""
			if tc.acct {
				acctDir = t.TempDir()
			}
			for name, content := range tc.files {
				d := dir
				if name == "cpuacct.usage" && tc.acct {
					d = acctDir
				}
				if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := ReadCPUStat(tc.version, dir, acctDir)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if tc.files == nil && !errors.Is(err, os.ErrNotExist) {
					t.Errorf("err = %v does not wrap os.ErrNotExist", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ReadCPUStat = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
