package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gornhq/gorn/config"
	"github.com/gornhq/gorn/internal/testenv"
	"github.com/gornhq/gorn/master"
	"github.com/gornhq/gorn/worker"
)

// testLoader evaluates config files through the test binary's one reaper: a second
// reaper would race it for the exits.
var testLoader = sync.OnceValue(func() config.Loader {
	return configFileLoader(worker.NewReaper(make(chan master.Exit, 64)), worker.StartThread())
})

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// TestLoadConfigFile evaluates real config files with the test interpreter.
func TestLoadConfigFile(t *testing.T) {
	python := testenv.Python(t)
	dir := t.TempDir()
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("gunicorn.conf.py", `
import multiprocessing
bind = ("127.0.0.1:7001",)
workers = multiprocessing.cpu_count() * 0 + 3
timeout = 2.5
secure_scheme_headers = {"X-PROTO": "https"}
print("the file's own output goes to stderr")
def post_fork(server, worker):
    pass
def on_starting(server):
    pass
`)
	c, err := config.Parse([]string{"-c", good, "--python", python, "app"}, env(), testLoader())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Binds, []string{"127.0.0.1:7001"}) || c.Workers != 3 || c.Timeout != 2500*time.Millisecond {
		t.Errorf("config %+v: want the file's bind, workers and timeout", c)
	}
	if len(c.Warnings) != 0 || !slices.Equal(c.MasterHooks, []string{"on_starting"}) {
		t.Errorf("warnings %q, master hooks %q: want none (the workers read secure_scheme_headers) and on_starting (the hook host runs it)", c.Warnings, c.MasterHooks)
	}
	for name, tc := range map[string]struct{ src, want string }{
		"raises":   {"x = 1\ny = 1 / 0\n", "ZeroDivisionError: division by zero (line 2)"},
		"syntax":   {"bind = (\n", "SyntaxError"},
		"bad type": {"workers = {1: 2}\n", "workers: want a string, a number"},
	} {
		_, err := config.Parse([]string{"-c", write(name+".py", tc.src), "--python", python, "app"}, env(), testLoader())
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line with %q", name, err, tc.want)
		}
	}
	_, err = config.Parse([]string{"-c", filepath.Join(dir, "missing.py"), "--python", python, "app"}, env(), testLoader())
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing file: error %v", err)
	}
}
