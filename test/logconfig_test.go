package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A gunicorn.conf.py's logconfig_dict configures Python logging in every worker before the
// app is imported, and in the hook host (gunicorn's master): the app's and the hooks'
// loggers write through the file's handler and formatter.
func TestLogconfigDict(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "app.log")
	writeFile(t, filepath.Join(dir, "gunicorn.conf.py"), `workers = 2
logconfig_dict = {
    "formatters": {"app": {"format": "APP [%(process)d] %(name)s %(levelname)s %(message)s"}},
    "handlers": {"file": {"class": "logging.FileHandler", "filename": "`+logPath+`", "formatter": "app"}},
    "loggers": {"myapp": {"handlers": ["file"], "level": "INFO", "propagate": False}},
    "root": {"handlers": ["file"], "level": "WARNING"},
}


def when_ready(server):
    import logging
    logging.getLogger("myapp").info("ready, from the hook host")
`)
	writeFile(t, filepath.Join(dir, "logged.py"), `import logging

log = logging.getLogger("myapp")
log.info("imported")


def application(environ, start_response):
    log.info("serving %s", environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
`)
	g := startGorn(t, gornOpts{dir: dir}, "logged")
	if code, _ := get(t, g.url("/hello")); code != 200 {
		t.Fatalf("GET: %d", code)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(logPath)
		got := string(data)
		if strings.Count(got, "myapp INFO imported") == 2 && strings.Contains(got, "myapp INFO serving /hello") &&
			strings.Contains(got, "myapp INFO ready, from the hook host") && strings.HasPrefix(got, "APP [") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the app's log file:\n%s", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(g.logs.String(), "gorn does not implement") {
		t.Errorf("logconfig_dict warned about as unimplemented:\n%s", g.logs.String())
	}
}

// A logconfig_dict that logging.config rejects stops the boot with one line naming it.
func TestLogconfigDictBroken(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "gunicorn.conf.py"), `logconfig_dict = {"handlers": {"h": {"class": "no.such.Handler"}}}
`)
	writeFile(t, filepath.Join(dir, "plain.py"), "def application(environ, start_response):\n    return []\n")
	g := startGorn(t, gornOpts{dir: dir, noWait: true}, "-w", "1", "plain")
	if code := g.wait(30 * time.Second); code != 3 {
		t.Fatalf("exit %d, want 3", code)
	}
	if !strings.Contains(g.logs.String(), "cannot start the worker: logconfig_dict: ") {
		t.Errorf("no line naming logconfig_dict:\n%s", g.logs.String())
	}
}
