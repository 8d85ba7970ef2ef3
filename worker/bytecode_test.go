package worker

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/internal/testenv"
)

// probeApp prints which file the runtime's entry module was loaded from.
const probeApp = `import sys
print(sys.modules["gorn_worker.main"].__file__)
def application(environ, start_response):
    return []
`

// loadedFrom runs the worker of zip f in check mode under py and returns the file
// gorn_worker.main was imported from.
func loadedFrom(t *testing.T, py string, f *os.File) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "probe.py"), []byte(probeApp), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "/proc/self/fd/3")
	cmd.Dir = dir
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(os.Environ(), `GORN_WORKER={"app": "probe", "check": true, "listen_fds": []}`)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", py, err, out)
	}
	return strings.TrimSpace(string(out))
}

// askTag is the bytecode directory of interpreter py, as it says: "cpython-311".
func askTag(t *testing.T, py string) string {
	t.Helper()
	out, err := exec.Command(py, "-c", `import sys; print("cpython-%d%d" % sys.version_info[:2])`).Output()
	if err != nil {
		t.Fatalf("asking %s its version: %v", py, err)
	}
	return strings.TrimSpace(string(out))
}

// TestRuntimeBytecode checks that a worker imports its runtime from the embedded bytecode
// of its interpreter's version, and from the source when that bytecode is stale.
func TestRuntimeBytecode(t *testing.T) {
	py := testenv.Python(t)
	tag := askTag(t, py)
	if _, err := bytecodeFS.ReadFile("bytecode/" + tag + "/gorn_worker/main.pyc"); err != nil {
		testenv.Missing(t, "no embedded bytecode for %s (%s): run `make bytecode` before go test", tag, py)
	}
	if stale := staleSources(t, tag); len(stale) > 0 {
		testenv.Missing(t, "the embedded %s bytecode is older than %v: run `make bytecode` before go test", tag, stale)
	}
	// A name that does not say the version (a pyenv shim) packs every version's bytecode.
	if guess := pythonTag(py); guess != tag && guess != "" {
		t.Errorf("the spawner guesses %s is %q, it is %s", py, guess, tag)
	}
	f, err := runtimeZip(tag)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, want := loadedFrom(t, py, f), "/"+tag+"/gorn_worker/main.pyc"; !strings.HasSuffix(got, want) {
		t.Errorf("gorn_worker.main loaded from %s, want .../%s", got, want)
	}

	// The same zip with the source beside the bytecode edited: the bytecode is stale.
	stale := editZip(t, f, tag+"/gorn_worker/main.py", func(src []byte) []byte { return append(src, "\n# edited\n"...) })
	defer stale.Close()
	if got, want := loadedFrom(t, py, stale), "/"+tag+"/gorn_worker/main.py"; !strings.HasSuffix(got, want) {
		t.Errorf("with stale bytecode, gorn_worker.main loaded from %s, want the source .../%s", got, want)
	}

}

// interpreters are the CPython 3.X interpreters found: python3.X on PATH, pyenv's 3.X.*.
func interpreters(minor string) []string {
	var out []string
	if py, err := exec.LookPath("python3." + minor); err == nil {
		out = append(out, py)
	}
	root := os.Getenv("PYENV_ROOT")
	if root == "" {
		root = filepath.Join(os.Getenv("HOME"), ".pyenv")
	}
	found, _ := filepath.Glob(filepath.Join(root, "versions", "3."+minor+".*", "bin", "python3"))
	return append(out, found...)
}

// TestRuntimeModuleWithoutBytecode: a module added after the bytecode was compiled has
// none; the worker still boots, from that module's source beside the others' bytecode.
func TestRuntimeModuleWithoutBytecode(t *testing.T) {
	py := testenv.Python(t)
	tag := askTag(t, py)
	if _, err := bytecodeFS.ReadFile("bytecode/" + tag + "/gorn_worker/config.pyc"); err != nil {
		testenv.Missing(t, "no embedded bytecode for %s (%s): run `make bytecode` before go test", tag, py)
	}
	f, err := runtimeZip(tag)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	added := editZip(t, f, tag+"/gorn_worker/config.pyc", func([]byte) []byte { return nil })
	defer added.Close()
	if got := loadedFrom(t, py, added); !strings.Contains(got, "/"+tag+"/gorn_worker/main.py") {
		t.Errorf("with config.pyc missing, gorn_worker.main loaded from %s, want .../%s/gorn_worker/main.py[c]", got, tag)
	}
}

// staleSources lists the runtime sources whose embedded tag bytecode was compiled from
// another version of them (bytecode/TAG/SOURCES, written by compile.sh).
func staleSources(t *testing.T, tag string) []string {
	t.Helper()
	manifest, err := bytecodeFS.ReadFile("bytecode/" + tag + "/SOURCES")
	if err != nil {
		return []string{"SOURCES"}
	}
	compiled := map[string]string{}
	for line := range strings.Lines(string(manifest)) {
		if sum, name, ok := strings.Cut(strings.TrimSpace(line), "  "); ok {
			compiled[name] = sum
		}
	}
	var stale []string
	entries, _ := runtimeFS.ReadDir("pyworker/gorn_worker")
	for _, e := range entries {
		if e.IsDir() { // lib/: the native accelerator, not bytecode
			continue
		}
		src, err := runtimeFS.ReadFile("pyworker/gorn_worker/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(src); compiled[e.Name()] != hex.EncodeToString(sum[:]) {
			stale = append(stale, e.Name())
		}
	}
	return stale
}

// TestRuntimeBytecodeEachVersion runs the check under every embedded version with an
// interpreter on this machine (python3.X on PATH, or pyenv's).
func TestRuntimeBytecodeEachVersion(t *testing.T) {
	dirs, _ := bytecodeFS.ReadDir("bytecode")
	f, err := runtimeZip("") // every version's bytecode
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ran := 0
	for _, d := range dirs {
		minor, ok := strings.CutPrefix(d.Name(), "cpython-3")
		if !d.IsDir() || !ok {
			continue
		}
		py := ""
		for _, cand := range interpreters(minor) {
			out, err := exec.Command(cand, "-c", `import sys; print("cpython-%d%d" % sys.version_info[:2])`).Output()
			if err == nil && strings.TrimSpace(string(out)) == d.Name() {
				py = cand
				break
			}
		}
		if py == "" {
			t.Logf("%s: no interpreter found", d.Name())
			continue
		}
		if stale := staleSources(t, d.Name()); len(stale) > 0 {
			testenv.Missing(t, "the embedded %s bytecode is older than %v: run `make bytecode` before go test", d.Name(), stale)
		}
		ran++
		if got, want := loadedFrom(t, py, f), "/"+d.Name()+"/gorn_worker/main.pyc"; !strings.HasSuffix(got, want) {
			t.Errorf("%s: gorn_worker.main loaded from %s, want .../%s", py, got, want)
		}
	}
	if ran == 0 {
		testenv.Missing(t, "no embedded bytecode version has its interpreter on PATH (embedded: %v)", dirs)
	}
}

// editZip copies zip f into a new memfd with the entry name's contents changed by edit
// (dropped when edit returns nil).
func editZip(t *testing.T, f *os.File, name string, edit func([]byte) []byte) *os.File {
	t.Helper()
	st, _ := f.Stat()
	zr, err := zip.NewReader(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	found := false
	for _, zf := range zr.File {
		r, err := zf.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if zf.Name == name {
			data, found = edit(data), true
			if data == nil {
				continue // dropped
			}
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: zf.Name, Method: zf.Method})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if !found {
		t.Fatalf("zip has no %s", name)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.MemfdCreate("edited-runtime", 0)
	if err != nil {
		t.Fatal(err)
	}
	out := os.NewFile(uintptr(fd), "edited-runtime")
	if _, err := out.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	return out
}
