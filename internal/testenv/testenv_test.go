package testenv

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// recorder is a testing.TB that records how a test ended instead of ending it.
type recorder struct {
	testing.TB
	failed, skipped bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Fatalf(string, ...any) { r.failed = true }
func (r *recorder) Skip(...any)           { r.skipped = true }

func TestMissing(t *testing.T) {
	t.Setenv(StrictVar, "")
	r := &recorder{TB: t}
	Missing(r, "no %s", "flask")
	if !r.skipped || r.failed {
		t.Errorf("without %s: skipped %v failed %v, want a skip", StrictVar, r.skipped, r.failed)
	}
	t.Setenv(StrictVar, "1")
	r = &recorder{TB: t}
	Missing(r, "no %s", "flask")
	if !r.failed {
		t.Errorf("with %s=1: skipped %v failed %v, want a failure", StrictVar, r.skipped, r.failed)
	}
}

// TestSkipsGoThroughHere: no test skips by itself, in Go or in the Python runtime's tests,
// so GORN_TEST_STRICT=1 sees every missing prerequisite.
func TestSkipsGoThroughHere(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	goSkip := regexp.MustCompile(`\.Skip(f|Now)?\(`)
	pySkip := regexp.MustCompile(`pytest\.skip\(|importorskip|mark\.skip|\bskipif\b`)
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir // .git, .venv
			}
			return nil
		}
		var re *regexp.Regexp
		switch {
		case strings.HasSuffix(path, ".go") && filepath.Dir(rel) != filepath.Join("internal", "testenv"):
			re = goSkip
		case strings.HasSuffix(path, ".py") && strings.HasPrefix(rel, filepath.Join("worker", "pyworker", "tests")) &&
			filepath.Base(rel) != "prereq.py":
			re = pySkip
		default:
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		checked++
		for i, line := range strings.Split(string(src), "\n") {
			if re.MatchString(line) {
				t.Errorf("%s:%d skips by itself: use internal/testenv (Go) or tests/prereq.py (Python): %s", rel, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("only %d files checked under %s", checked, root)
	}
}
