// Package testenv decides what a test does when something it needs is missing from the
// machine (root, Python, Flask, a cgroup hierarchy, a user to run workers as): it skips, or,
// when GORN_TEST_STRICT=1 (as CI sets it), it fails, so that a run cannot pass green by
// having tested nothing. Tests skip only through this package (a test checks that).
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// StrictVar is the environment variable that turns missing prerequisites into failures.
const StrictVar = "GORN_TEST_STRICT"

// Strict reports whether a missing prerequisite fails the test.
func Strict() bool { return os.Getenv(StrictVar) == "1" }

// Missing ends the test for a missing prerequisite: a skip, or a failure under
// GORN_TEST_STRICT=1.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("missing prerequisite (%s=1 makes this a failure): %s", StrictVar, msg)
	}
	t.Skip(msg)
}

// Short skips a long test under go test -short: the runner's choice, not a missing
// prerequisite, so it never fails.
func Short(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skip(why)
	}
}

// Python is the interpreter for tests that run Python: $GORN_TEST_PYTHON (make test sets
// the venv's), else python3 on $PATH.
func Python(t testing.TB) string {
	t.Helper()
	py := os.Getenv("GORN_TEST_PYTHON")
	if py == "" {
		py = "python3"
	}
	path, err := exec.LookPath(py)
	if err != nil {
		Missing(t, "no Python interpreter %q: %v", py, err)
	}
	return path
}

// NeedRoot calls Missing unless the test runs as root.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root: %s", why)
	}
}
