package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// TestMissingFailsWhenStrict runs a test that calls Missing in a child test binary, with
// and without GORN_TEST_STRICT=1.
func TestMissingFailsWhenStrict(t *testing.T) {
	if os.Getenv("GORN_TESTENV_CHILD") == "1" {
		Missing(t, "nothing here")
		return
	}
	for strict, wantFail := range map[string]bool{"1": true, "": false} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMissingFailsWhenStrict$", "-test.v")
		cmd.Env = append(os.Environ(), "GORN_TESTENV_CHILD=1", "GORN_TEST_STRICT="+strict)
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != wantFail {
			t.Errorf("GORN_TEST_STRICT=%q: failed=%v, want %v:\n%s", strict, failed, wantFail, out)
		}
	}
}
