package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestOwnVenv(t *testing.T) {
	dir := t.TempDir()
	venv := filepath.Join(dir, "venv")
	bin := filepath.Join(venv, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(venv, "pyvenv.cfg"), "home = /usr/bin\n")
	gorn := filepath.Join(bin, "gorn")
	writeTestFile(t, gorn, "")
	elsewhere := filepath.Join(dir, "usr", "bin", "gorn")
	if err := os.MkdirAll(filepath.Dir(elsewhere), 0o755); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, elsewhere, "")
	link := filepath.Join(dir, "gorn-link")
	if err := os.Symlink(gorn, link); err != nil {
		t.Fatal(err)
	}
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

	for _, tc := range []struct {
		name string
		env  map[string]string
		exe  string
		want string
	}{
		{"installed in a venv", nil, gorn, venv},
		{"through a symlink", nil, link, venv},
		{"an active venv wins", map[string]string{"VIRTUAL_ENV": "/srv/other"}, gorn, "/srv/other"},
		{"not in a venv", nil, elsewhere, ""},
		{"unknown binary", nil, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := ownVenv(env(tc.env), tc.exe)
			if got := getenv("VIRTUAL_ENV"); got != tc.want {
				t.Errorf("VIRTUAL_ENV = %q, want %q", got, tc.want)
			}
			if got := getenv("PATH"); got != "" {
				t.Errorf("other variables changed: PATH = %q", got)
			}
		})
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}
