package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gornhq/gorn/worker"
)

// defaultConfigFiles are read, the first that exists, when no -c is given: gunicorn reads
// ./gunicorn.conf.py, so a gunicorn deployment keeps its settings.
var defaultConfigFiles = [...]string{"gorn.conf.py", "gunicorn.conf.py"}

// fileSettings is what a config file set: plain values by name, and the names bound to
// functions (gunicorn's server hooks) or to values of other types.
type fileSettings struct {
	Settings  map[string]json.RawMessage `json:"settings"`
	Callables []string                   `json:"callables"`
	Other     []string                   `json:"other"`
	Error     string                     `json:"error"`
}

// configLoader evaluates the config file source (PATH, file:PATH or python:MODULE).
type configLoader func(python, source string) (*fileSettings, error)

// configFileTimeout bounds a config file's evaluation.
const configFileTimeout = 10 * time.Second

// configFileLoader evaluates config files in children started on thread and reaped by
// children, the process's one reaper.
func configFileLoader(children *worker.Reaper, thread *worker.Thread) configLoader {
	return func(python, source string) (*fileSettings, error) {
		return loadConfigFile(children, thread, python, source)
	}
}

// loadConfigFile runs the config file in the given interpreter, as gunicorn executes it in
// its own; whatever the file prints goes to stderr. It blocks its caller (on HUP, the
// reload's own goroutine) until the evaluation ends or times out.
func loadConfigFile(children *worker.Reaper, thread *worker.Thread, python, source string) (*fileSettings, error) {
	fail := func(err error) (*fileSettings, error) {
		return nil, fmt.Errorf("evaluating config file %s with %s: %w", source, python, err)
	}
	path, err := exec.LookPath(python)
	if err != nil {
		return fail(err)
	}
	res, err := runChild(children, thread, childCmd{path: path, args: []string{python, "-c", worker.ConfigFileScript(), source},
		stderr: os.Stderr, timeout: configFileTimeout})
	if err != nil {
		return fail(err)
	}
	if !res.status.Exited() || res.status.ExitStatus() != 0 {
		return fail(fmt.Errorf("the evaluator ended with %s", exitStatus(res.status)))
	}
	var fs fileSettings
	if err := json.Unmarshal(res.output, &fs); err != nil {
		return nil, fmt.Errorf("evaluating config file %s: unexpected output %q", source, res.output)
	}
	if fs.Error != "" {
		return nil, fmt.Errorf("config file %s: %s", source, fs.Error)
	}
	return &fs, nil
}

// gunicornNames maps gunicorn setting names to gorn flags where the two differ; every
// other flag is also accepted under its own name with "_" for "-" (max_requests).
var gunicornNames = map[string]string{
	"accesslog":                "access-logfile",
	"access_log_format":        "access-logformat",
	"errorlog":                 "error-logfile",
	"loglevel":                 "log-level",
	"keepalive":                "keep-alive",
	"pidfile":                  "pid",
	"proc_name":                "name",
	"raw_env":                  "env",
	"reload_extra_files":       "reload-extra-file",
	"limit_request_field_size": "limit-request-field_size",
}

// notFromFile are flags a config file cannot set: they choose the file and how to run it,
// or are actions rather than settings.
var notFromFile = []string{"config", "python", "check-config", "print-config", "version", "help"}

// masterHooks are gunicorn's server hooks that run in its Python master: the Go master
// cannot call them. The worker-side ones (post_fork, post_worker_init, pre_request,
// post_request, worker_int, worker_exit) run in the workers; worker_abort does not (a
// hung worker gets its stack dumped by faulthandler instead).
var masterHooks = []string{
	"on_starting", "on_reload", "when_ready", "pre_fork", "worker_abort", "pre_exec",
	"child_exit", "nworkers_changed", "on_exit", "ssl_context",
	"on_dirty_starting", "dirty_post_fork", "dirty_worker_init", "dirty_worker_exit",
}

// fileLayer is a config file turned into command-line arguments for fs, which parses them
// beneath $GORN_CMD_ARGS and the command line.
type fileLayer struct {
	args     []string
	app      string // wsgi_app: the application when the command line names none
	warnings []string
}

func newFileLayer(fs *flag.FlagSet, source string, f *fileSettings) (*fileLayer, error) {
	l := &fileLayer{}
	var given []*unimplemented
	names := make([]string, 0, len(f.Settings))
	for name := range f.Settings {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		raw := f.Settings[name]
		if name == "wsgi_app" {
			if err := json.Unmarshal(raw, &l.app); err != nil {
				return nil, fmt.Errorf("config file %s: wsgi_app: want a string like \"app:app\"", source)
			}
			continue
		}
		flagName, ok := gunicornNames[name]
		if !ok {
			flagName = strings.ReplaceAll(name, "_", "-")
		}
		fl := fs.Lookup(flagName)
		switch u := unimplementedSetting(name); {
		case u != nil:
			if setsUnimplemented(u, string(raw)) {
				given = append(given, u)
			}
			continue
		case fl == nil || len(name) == 1 || slices.Contains(notFromFile, flagName):
			continue // not a setting: gunicorn ignores such names too
		}
		values, err := settingValues(raw)
		if err != nil {
			return nil, fmt.Errorf("config file %s: %s: %w", source, name, err)
		}
		if _, repeatable := fl.Value.(*multi); !repeatable && len(values) > 1 {
			values = []string{strings.Join(values, ",")}
		}
		for _, v := range values {
			l.args = append(l.args, "--"+flagName+"="+v)
		}
	}
	for _, name := range f.Callables {
		if slices.Contains(masterHooks, name) {
			l.warnings = append(l.warnings, fmt.Sprintf("config file %s: server hook %s is not supported by gorn; ignored", source, name))
		}
	}
	for _, name := range f.Other {
		if u := unimplementedSetting(name); u != nil {
			given = append(given, u)
		} else if _, ok := gunicornNames[name]; ok || fs.Lookup(strings.ReplaceAll(name, "_", "-")) != nil {
			return nil, fmt.Errorf("config file %s: %s: want a string, a number, a boolean or a list of them", source, name)
		}
	}
	if err := applyUnimplemented(given, "config file "+source+": ", &l.warnings); err != nil {
		return nil, err
	}
	return l, nil
}

// settingValues renders a JSON scalar or list as flag values, numbers exactly as written.
func settingValues(raw json.RawMessage) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	items, isList := v.([]any)
	if !isList {
		items = []any{v}
	}
	out := make([]string, 0, len(items))
	for _, item := range items {
		switch x := item.(type) {
		case string:
			out = append(out, x)
		case json.Number:
			out = append(out, x.String())
		case bool:
			out = append(out, fmt.Sprint(x))
		default:
			return nil, errors.New("want a string, a number, a boolean or a list of them")
		}
	}
	return out, nil
}

// configSource is the config file to read: -c from the command line or $GORN_CMD_ARGS,
// else the first default file that exists. The flags are parsed on a throwaway Config only
// to find it; errors are left for the real parse to report.
func configSource(args []string, getenv func(string) string) (source, python string) {
	c := &Config{}
	fs := newFlagSet(c, &rawFlags{})
	if words, name, err := cmdArgs(getenv); err == nil && name != "" {
		_ = fs.Parse(words)
	}
	_, _ = parseInterspersed(fs, args)
	python = defaultPython(c.Python, getenv)
	if c.Help || c.Version {
		return "", python
	}
	if c.ConfigFile != "" {
		return c.ConfigFile, python
	}
	for _, f := range defaultConfigFiles {
		if st, err := os.Stat(f); err == nil && !st.IsDir() {
			return f, python
		}
	}
	return "", python
}
