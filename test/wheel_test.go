package test

import (
	"archive/zip"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/testenv"
)

// wheelArch is the wheel platform's name for this machine's architecture.
var wheelArch = map[string]string{"amd64": "x86_64", "arm64": "aarch64"}

// gornVersion reads the version from cmd/gorn/main.go, the one place it is written.
func gornVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "cmd", "gorn", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`var version = "([^"]+)"`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no version in cmd/gorn/main.go")
	}
	return string(m[1])
}

// TestWheelServesFlaskWithoutGo builds this machine's wheel with `make wheel`, installs it
// with Flask into a fresh virtual environment whose PATH holds no Go, and serves the
// example with the installed gorn, started as a user would: no --python, no activated
// environment. `python -m gorn` runs the same binary.
func TestWheelServesFlaskWithoutGo(t *testing.T) {
	arch, ok := wheelArch[runtime.GOARCH]
	if !ok {
		t.Fatalf("no wheel for GOARCH %s", runtime.GOARCH)
	}
	py := python(t) // the test venv: it has build and hatchling (requirements-test.txt)
	venvOfTests := filepath.Dir(filepath.Dir(py))
	dir := t.TempDir()
	dist := filepath.Join(dir, "dist")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := func(env []string, name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = repoRoot
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// -o: the test venv is what it is, and the bytecode is what make build left (compiling
	// it again would rewrite worker/bytecode while other packages' tests embed it).
	build := filepath.Join(dir, "build")
	run(os.Environ(), "make", "-o", py, "-o", "bytecode", "wheel", "VENV="+venvOfTests,
		"DIST="+dist, "WHEEL_BUILD="+build)

	// Every architecture's wheel is what its tag says: a static binary for the machine,
	// and an accelerator for the same machine needing nothing past glibc 2.17.
	version := gornVersion(t)
	wheelOf := func(a string) string {
		return filepath.Join(dist, "gorn-"+version+"-py3-none-manylinux_2_17_"+a+".manylinux2014_"+a+".whl")
	}
	for _, a := range []string{"x86_64", "aarch64"} {
		checkWheel(t, wheelOf(a), version)
		checkELF(t, filepath.Join(build, a, "gorn"), a, true)
		checkELF(t, filepath.Join(build, a, "gorn_native.abi3.so"), a, false)
	}
	wheel := wheelOf(arch)

	// The tag cannot lie: a binary for one machine under another's tag is refused.
	other := map[string]string{"x86_64": "aarch64", "aarch64": "x86_64"}[arch]
	forge := exec.CommandContext(ctx, py, "-m", "build", "--wheel", "--no-isolation", "--outdir", filepath.Join(dir, "forged"), "python")
	forge.Dir = repoRoot
	forge.Env = append(os.Environ(), "GORN_WHEEL_BINARY="+filepath.Join(build, arch, "gorn"),
		"GORN_WHEEL_PLATFORM=manylinux_2_17_"+other+".manylinux2014_"+other)
	if out, err := forge.CombinedOutput(); err == nil || !strings.Contains(string(out), "not "+other) {
		t.Errorf("a %s binary tagged %s: %v\n%s", arch, other, err, out)
	}

	// A fresh environment of this machine's python3 (which a container's user can run),
	// and a PATH of its bin directory alone: no go anywhere.
	venv := filepath.Join(containerDir(t), "venv")
	base := "/usr/bin/python3"
	if err := exec.Command(base, "-m", "venv", "--help").Run(); err != nil {
		testenv.Missing(t, "no %s with venv (apt-get install python3-venv): %v", base, err)
	}
	run(os.Environ(), base, "-m", "venv", venv)
	bin := filepath.Join(venv, "bin")
	env := append(cleanEnv(), "PATH="+bin)
	for _, d := range filepath.SplitList(bin) {
		if _, err := os.Stat(filepath.Join(d, "go")); err == nil {
			t.Fatalf("go is on the install PATH: %s", d)
		}
	}
	run(env, filepath.Join(bin, "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
		wheel, "-r", filepath.Join(repoRoot, "examples", "flask", "requirements.txt"))

	gorn := filepath.Join(bin, "gorn")
	if out := run(env, gorn, "--version"); strings.TrimSpace(out) != "gorn "+version {
		t.Errorf("gorn --version = %q, want gorn %s", out, version)
	}
	if out := run(env, filepath.Join(bin, "python"), "-m", "gorn", "--version"); strings.TrimSpace(out) != "gorn "+version {
		t.Errorf("python -m gorn --version = %q, want gorn %s", out, version)
	}

	// Started by its path with an empty PATH: only the environment it is installed in can
	// give it a Python (and that one has Flask). GORN_NATIVE=1: a worker that cannot load
	// the wheel's accelerator does not boot.
	g := startGornWith(t, gornOpts{env: []string{"PATH=" + t.TempDir(), "GORN_NATIVE=1"}, ownPython: true}, gorn, "-w", "2", "app:app")
	if n := g.logs.count("request path: native (gorn_native)"); n < 2 {
		t.Errorf("%d of 2 workers run the native request path", n)
	}
	for _, path := range []string{"/", "/json"} {
		if code, body := get(t, g.url(path)); code != 200 || (path == "/" && body != "Hello, World!\n") {
			t.Errorf("GET %s: %d %q", path, code, body)
		}
	}
	g.signal(syscall.SIGTERM)
	if code := g.wait(30 * time.Second); code != 0 {
		t.Errorf("gorn exited %d after TERM", code)
	}

	// The Dockerfile's wheel-example stage is this environment as /venv, in a python:
	// image: run it as its ENTRYPOINT, CMD and USER say, as the image test does.
	t.Run("Dockerfile wheel-example stage", func(t *testing.T) {
		needContainerTools(t)
		var example *dockerStage
		stages := readDockerfile(t, filepath.Join(repoRoot, "Dockerfile"))
		for i := range stages {
			if stages[i].name == "wheel-example" {
				example = &stages[i]
			}
		}
		if example == nil {
			t.Fatal("the Dockerfile has no wheel-example stage")
		}
		if len(example.entrypoint) == 0 || !strings.HasPrefix(example.entrypoint[0], "/venv/bin/") {
			t.Fatalf("the wheel-example stage runs %q, not the venv's gorn", example.entrypoint)
		}
		runImage(t, *example, filepath.Dir(venv), [][2]string{
			{venv, "/venv"},
			{filepath.Join(repoRoot, "examples", "flask"), "/app"},
		})
	})
}

// elfMachines are the ELF machines of the wheel architectures.
var elfMachines = map[string]elf.Machine{"x86_64": elf.EM_X86_64, "aarch64": elf.EM_AARCH64}

// checkELF: the file at path is for arch; static (no interpreter, no shared library), or
// else needing no glibc symbol version past 2.17.
func checkELF(t *testing.T, path, arch string, static bool) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Errorf("%v", err)
		return
	}
	defer f.Close()
	if f.Machine != elfMachines[arch] {
		t.Errorf("%s is for %v, not %s", path, f.Machine, arch)
	}
	libs, _ := f.ImportedLibraries()
	if static {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has an ELF interpreter: not static", path)
			}
		}
		if len(libs) > 0 {
			t.Errorf("%s needs %v: not static", path, libs)
		}
		return
	}
	syms, err := f.ImportedSymbols()
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	for _, s := range syms {
		v, ok := strings.CutPrefix(s.Version, "GLIBC_")
		if !ok {
			continue
		}
		var major, minor int
		fmt.Sscanf(v, "%d.%d", &major, &minor)
		if major > 2 || major == 2 && minor > 17 {
			t.Errorf("%s: %s needs %s, past the manylinux_2_17 tag", path, s.Name, s.Version)
		}
	}
}

// checkWheel: the wheel holds the gorn package and the binary as an executable script,
// and says it is platform-specific.
func checkWheel(t *testing.T, path, version string) {
	t.Helper()
	z, err := zip.OpenReader(path)
	if err != nil {
		t.Fatalf("make wheel did not make %s: %v", path, err)
	}
	defer z.Close()
	files := map[string]*zip.File{}
	for _, f := range z.File {
		files[f.Name] = f
	}
	for _, name := range []string{"gorn/__init__.py", "gorn/__main__.py", "gorn-" + version + ".data/scripts/gorn"} {
		if files[name] == nil {
			t.Errorf("%s: no %s", filepath.Base(path), name)
		}
	}
	if f := files["gorn-"+version+".data/scripts/gorn"]; f != nil && f.Mode()&0o111 == 0 {
		t.Errorf("the gorn script is not executable: %v", f.Mode())
	}
	if f := files["gorn-"+version+".dist-info/WHEEL"]; f == nil {
		t.Error("no WHEEL file")
	} else {
		r, _ := f.Open()
		b := make([]byte, 4096)
		n, _ := r.Read(b)
		r.Close()
		if !strings.Contains(string(b[:n]), "Root-Is-Purelib: false") {
			t.Errorf("WHEEL:\n%s", b[:n])
		}
	}
}
