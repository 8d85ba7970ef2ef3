// Package testenv is how gorn's tests meet a missing prerequisite (root, a Python with
// Flask, a tool): they skip, except under GORN_TEST_STRICT=1 (CI), where a test that
// would have skipped fails, so a run that tested nothing cannot pass.
package testenv

import (
	"os"
	"testing"
)

// Strict reports whether a missing prerequisite fails the test (GORN_TEST_STRICT=1).
func Strict() bool { return os.Getenv("GORN_TEST_STRICT") == "1" }

// Missing skips t for a missing prerequisite, or fails it when Strict.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if Strict() {
		t.Fatalf("GORN_TEST_STRICT=1 and a prerequisite is missing: "+format, args...)
	}
	t.Skipf(format, args...)
}

// NeedRoot calls Missing unless the test runs as root.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root: %s", why)
	}
}
