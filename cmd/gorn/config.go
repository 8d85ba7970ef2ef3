package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gornhq/gorn/internal/sizing"
	"github.com/gornhq/gorn/socket"
)

// Config is everything the command line and environment say, validated.
type Config struct {
	App               string
	ConfigFile        string   // the Python config file read, if any
	Warnings          []string // settings read but ignored, for the log
	Binds             []string
	Workers           int // 0 = size from the CPU and memory limits
	WorkersSource     string
	WorkerClass       string
	Threads           int
	WorkerConnections int
	CPUs              float64 // 0 = detect
	CPUsSource        string
	ResizeInterval    time.Duration
	MaxWorkers        int
	Backlog           int
	Chdir             string
	PythonPath        []string
	Env               []string
	Python            string
	Timeout           time.Duration
	GracefulTimeout   time.Duration
	BootTimeout       time.Duration
	ShutdownDelay     time.Duration
	Keepalive         time.Duration
	HeaderTimeout     time.Duration
	MaxRequests       int
	MaxRequestsJitter int
	LimitRequestLine  int
	LimitFields       int
	LimitFieldSize    int
	LimitBody         int64
	RootPath          string
	ForwardedAllowIPs []string
	AccessLog         string
	AccessLogFormat   string
	ErrorLog          string
	LogLevel          string
	LogFormat         string
	PidFile           string
	Name              string
	MetricsBind       string
	MinReady          int
	Credential        *syscall.Credential // --user/--group: whom the workers run as; nil = as gorn
	InitGroups        bool
	Umask             int // -1 = inherit
	PrintConfig       bool
	Reload            bool // restart workers when the app's source files change
	ReloadEngine      string
	ReloadExtraFiles  []string
	CheckConfig       bool
	Version           bool
	Help              bool
}

// usageError is a bad command line: one line on stderr, exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// multi is a repeatable string flag. Values that came from $GORN_CMD_ARGS are replaced,
// not extended, by the command line's first value, as gunicorn's command line overrides
// $GUNICORN_CMD_ARGS setting by setting.
type multi struct {
	vals    []string
	fromEnv bool
}

func (m *multi) String() string { return strings.Join(m.vals, ",") }

func (m *multi) Set(v string) error {
	if m.fromEnv {
		m.vals, m.fromEnv = nil, false
	}
	m.vals = append(m.vals, v)
	return nil
}

// splitWords splits an argument string as a POSIX shell would, without expansions:
// whitespace separates words; '...' is literal; "..." and a bare backslash escape.
func splitWords(s string) ([]string, error) {
	var words []string
	var word strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case ch == ' ' || ch == '\t' || ch == '\n':
			if inWord {
				words, inWord = append(words, word.String()), false
				word.Reset()
			}
		case ch == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("unterminated ' quote")
			}
			word.WriteString(s[i+1 : i+1+end])
			i, inWord = i+1+end, true
		case ch == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				word.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated \" quote")
			}
			inWord = true
		case ch == '\\' && i+1 < len(s):
			i++
			word.WriteByte(s[i])
			inWord = true
		default:
			word.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, word.String())
	}
	return words, nil
}

// seconds is a duration flag given in (fractional) seconds, as gunicorn's.
type seconds struct{ d *time.Duration }

func (s seconds) String() string {
	if s.d == nil {
		return ""
	}
	return strconv.FormatFloat(s.d.Seconds(), 'f', -1, 64)
}

func (s seconds) Set(v string) error {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return errors.New("want a number of seconds >= 0")
	}
	*s.d = time.Duration(f * float64(time.Second))
	return nil
}

const defaultAccessLogFormat = `%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"`

// rawFlags are the flags parsed into strings and lists first, validated into Config after
// every layer (config file, environment, command line) was parsed.
type rawFlags struct {
	binds, envs, reloadFiles       multi
	pythonpath, workers, cpus, fwd string
	user, group, umask             string
	given                          []*unimplemented // gunicorn-only flags given
}

// fromEnvNext marks the lists as set by a lower layer: the next layer's first value
// replaces them.
func (r *rawFlags) fromEnvNext() {
	r.binds.fromEnv, r.envs.fromEnv, r.reloadFiles.fromEnv = true, true, true
}

func newFlagSet(c *Config, r *rawFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("gorn", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	str := func(p *string, def string, names ...string) {
		for _, n := range names {
			fs.StringVar(p, n, def, "")
		}
	}
	integer := func(p *int, def int, names ...string) {
		for _, n := range names {
			fs.IntVar(p, n, def, "")
		}
	}
	dur := func(p *time.Duration, def time.Duration, names ...string) {
		*p = def
		for _, n := range names {
			fs.Var(seconds{p}, n, "")
		}
	}
	boolean := func(p *bool, names ...string) {
		for _, n := range names {
			fs.BoolVar(p, n, false, "")
		}
	}
	fs.Var(&r.binds, "b", "")
	fs.Var(&r.binds, "bind", "")
	fs.Var(&r.envs, "e", "")
	fs.Var(&r.envs, "env", "")
	fs.Var(&r.reloadFiles, "reload-extra-file", "")
	registerUnimplemented(fs, &r.given)
	str(&r.user, "", "u", "user")
	str(&r.group, "", "g", "group")
	str(&r.umask, "", "m", "umask")
	boolean(&c.InitGroups, "initgroups")
	boolean(&c.PrintConfig, "print-config")
	str(&r.workers, "", "w", "workers")
	str(&r.cpus, "", "cpus")
	str(&c.ConfigFile, "", "c", "config")
	str(&c.WorkerClass, "sync", "k", "worker-class")
	integer(&c.Threads, 1, "threads")
	integer(&c.WorkerConnections, 1000, "worker-connections")
	integer(&c.MaxWorkers, 0, "max-workers")
	integer(&c.Backlog, 2048, "backlog")
	str(&c.Chdir, "", "chdir")
	str(&r.pythonpath, "", "pythonpath")
	str(&c.Python, "", "python")
	dur(&c.Timeout, 30*time.Second, "t", "timeout")
	dur(&c.GracefulTimeout, 30*time.Second, "graceful-timeout")
	dur(&c.BootTimeout, 120*time.Second, "boot-timeout")
	dur(&c.ShutdownDelay, 0, "shutdown-delay")
	dur(&c.Keepalive, 2*time.Second, "keep-alive")
	dur(&c.HeaderTimeout, 10*time.Second, "header-timeout")
	dur(&c.ResizeInterval, 30*time.Second, "resize-interval")
	integer(&c.MaxRequests, 0, "max-requests")
	integer(&c.MaxRequestsJitter, 0, "max-requests-jitter")
	integer(&c.LimitRequestLine, 4094, "limit-request-line")
	integer(&c.LimitFields, 100, "limit-request-fields")
	integer(&c.LimitFieldSize, 8190, "limit-request-field_size", "limit-request-field-size")
	fs.Int64Var(&c.LimitBody, "limit-request-body", 0, "")
	str(&c.RootPath, os.Getenv("SCRIPT_NAME"), "root-path")
	str(&r.fwd, "127.0.0.1,::1", "forwarded-allow-ips")
	str(&c.AccessLog, "", "access-logfile")
	str(&c.AccessLogFormat, defaultAccessLogFormat, "access-logformat")
	str(&c.ErrorLog, "-", "error-logfile", "log-file")
	str(&c.LogLevel, "info", "log-level")
	str(&c.LogFormat, "", "log-format")
	str(&c.PidFile, "", "p", "pid")
	str(&c.Name, "", "n", "name")
	str(&c.MetricsBind, "", "metrics-bind")
	integer(&c.MinReady, 1, "min-ready")
	boolean(&c.Reload, "reload")
	str(&c.ReloadEngine, "auto", "reload-engine")
	boolean(&c.CheckConfig, "check-config")
	boolean(&c.Version, "v", "version")
	boolean(&c.Help, "h", "help")
	return fs
}

// cmdArgs returns the words of $GORN_CMD_ARGS, else $GUNICORN_CMD_ARGS, and the name of
// the variable they came from ("" if neither is set).
func cmdArgs(getenv func(string) string) ([]string, string, error) {
	for _, name := range []string{"GORN_CMD_ARGS", "GUNICORN_CMD_ARGS"} {
		if v := getenv(name); v != "" {
			words, err := splitWords(v)
			return words, name, err
		}
	}
	return nil, "", nil
}

func defaultPython(python string, getenv func(string) string) string {
	if python != "" {
		return python
	}
	if venv := getenv("VIRTUAL_ENV"); venv != "" {
		return filepath.Join(venv, "bin", "python")
	}
	return "python3"
}

// parseInterspersed parses args with fs, allowing options after the module name (as
// gunicorn's argparse does), and returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return positional, err
		}
		if args = fs.Args(); len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// parseConfig turns arguments, environment and the config file (evaluated by load; nil
// reads none) into a validated Config. Precedence, low to high, as gunicorn's: defaults
// from the environment, the config file, $GORN_CMD_ARGS, the command line.
func parseConfig(args []string, getenv func(string) string, load configLoader) (*Config, error) {
	c := &Config{}
	r := &rawFlags{}
	fs := newFlagSet(c, r)
	if v := getenv("FORWARDED_ALLOW_IPS"); v != "" {
		r.fwd = v
		_ = fs.Lookup("forwarded-allow-ips").Value.Set(v)
		fs.Lookup("forwarded-allow-ips").DefValue = v
	}
	if v := getenv("SCRIPT_NAME"); v != "" {
		c.RootPath = v
	}
	var file *fileLayer
	fileWorkers := ""
	if source, python := configSource(args, getenv); source != "" && load != nil {
		f, err := load(python, source)
		if err != nil {
			return nil, err
		}
		if file, err = newFileLayer(fs, source, f); err != nil {
			return nil, err
		}
		if err := fs.Parse(file.args); err != nil {
			return nil, usagef("config file %s: %s", source, err)
		}
		r.fromEnvNext()
		fileWorkers = r.workers
		c.ConfigFile, c.Warnings = source, file.warnings
	}
	// Options from the environment next ($GORN_CMD_ARGS, else $GUNICORN_CMD_ARGS, so a
	// gunicorn deployment keeps working); the command line overrides them.
	words, name, err := cmdArgs(getenv)
	if err != nil {
		return nil, usagef("$%s: %v", name, err)
	}
	if name != "" {
		if err := fs.Parse(words); err != nil {
			return nil, usagef("$%s: %s", name, strings.TrimPrefix(err.Error(), "flag provided but not defined: "))
		}
		if fs.NArg() > 0 {
			return nil, usagef("$%s: options only, found %q", name, fs.Arg(0))
		}
		r.fromEnvNext()
	}
	positional, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		c.Help = true
		return c, nil
	}
	if err != nil {
		return nil, usagef("%s", strings.TrimPrefix(err.Error(), "flag provided but not defined: "))
	}
	if c.Help || c.Version {
		return c, nil
	}
	if err := applyUnimplemented(r.given, "", &c.Warnings); err != nil {
		return nil, err
	}
	if len(positional) == 0 && file != nil && file.app != "" {
		positional = []string{file.app}
	}
	switch len(positional) {
	case 0:
		return nil, usagef("no application module given: usage: gorn [OPTIONS] MODULE[:VARIABLE]")
	case 1:
		c.App = positional[0]
	default:
		return nil, usagef("unexpected arguments after %s: %s", positional[0], strings.Join(positional[1:], " "))
	}
	if err := validateApp(c.App); err != nil {
		return nil, err
	}

	c.Binds = r.binds.vals
	if len(c.Binds) == 0 {
		c.Binds = []string{socket.DefaultBind(getenv)}
	}
	for _, b := range c.Binds {
		if _, err := socket.ParseAddress(b); err != nil {
			return nil, usagef("%v", err)
		}
	}
	for _, e := range r.envs.vals {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return nil, usagef("-e %q: want KEY=VALUE", e)
		}
	}
	c.Env = r.envs.vals
	cred, err := credential(r.user, r.group, c.InitGroups)
	if err != nil {
		return nil, err
	}
	c.Credential = cred
	c.Umask = -1
	if r.umask != "" {
		m, err := strconv.ParseUint(r.umask, 0, 32)
		if err != nil || m > 0o777 {
			return nil, usagef("-m/--umask %q: want an octal mode such as 022 or 0o022", r.umask)
		}
		c.Umask = int(m)
	}
	c.ReloadExtraFiles = r.reloadFiles.vals
	switch c.ReloadEngine {
	case "auto", "poll":
	case "inotify":
		c.Warnings = append(c.Warnings, "--reload-engine inotify: gorn polls the files every second instead")
	default:
		return nil, usagef("--reload-engine %q: want auto, poll or inotify", c.ReloadEngine)
	}
	for _, p := range strings.Split(r.pythonpath, ",") {
		if p = strings.TrimSpace(p); p != "" {
			c.PythonPath = append(c.PythonPath, p)
		}
	}
	for _, ip := range strings.Split(r.fwd, ",") {
		if ip = strings.TrimSpace(ip); ip != "" {
			c.ForwardedAllowIPs = append(c.ForwardedAllowIPs, ip)
		}
	}

	switch {
	case r.workers != "":
		n, err := strconv.Atoi(r.workers)
		if err != nil || n < 1 {
			return nil, usagef("-w/--workers %q: want a whole number >= 1", r.workers)
		}
		c.Workers, c.WorkersSource = n, "--workers"
		if r.workers == fileWorkers {
			c.WorkersSource = "workers in " + c.ConfigFile
		}
	case getenv("WEB_CONCURRENCY") != "":
		n, err := strconv.Atoi(getenv("WEB_CONCURRENCY"))
		if err != nil || n < 1 {
			return nil, usagef("WEB_CONCURRENCY=%q: want a whole number >= 1", getenv("WEB_CONCURRENCY"))
		}
		c.Workers, c.WorkersSource = n, "WEB_CONCURRENCY"
	}
	c.CPUsSource = "--cpus"
	cpus := r.cpus
	if cpus == "" {
		cpus, c.CPUsSource = getenv("GORN_CPUS"), "GORN_CPUS"
	}
	if cpus == "" {
		c.CPUsSource = ""
	} else {
		f, err := sizing.ParseCPUs(cpus)
		if err != nil || f <= 0 {
			return nil, usagef("%s %q: want a number of CPUs > 0, e.g. 1.5 or 1500m", c.CPUsSource, cpus)
		}
		c.CPUs = f
	}

	switch c.WorkerClass {
	case "sync":
		if c.Threads > 1 {
			// gunicorn does the same, silently.
			c.WorkerClass = "gthread"
			c.Warnings = append(c.Warnings, fmt.Sprintf("--threads %d with the sync worker class: running gthread workers, as gunicorn does", c.Threads))
		}
	case "gthread":
	case "gevent", "eventlet", "tornado", "asgi", "uvicorn.workers.UvicornWorker":
		return nil, usagef("-k/--worker-class %q is not supported yet: use sync, or gthread with --threads for concurrency in one worker", c.WorkerClass)
	default:
		return nil, usagef("-k/--worker-class %q: want sync or gthread", c.WorkerClass)
	}
	for _, v := range []struct {
		name string
		val  int
	}{{"--backlog", c.Backlog}, {"--limit-request-fields", c.LimitFields}, {"--limit-request-field_size", c.LimitFieldSize}, {"--min-ready", c.MinReady}, {"--threads", c.Threads}, {"--worker-connections", c.WorkerConnections}} {
		if v.val < 1 {
			return nil, usagef("%s %d: want a whole number >= 1", v.name, v.val)
		}
	}
	for _, v := range []struct {
		name string
		val  int64
	}{{"--limit-request-line", int64(c.LimitRequestLine)}, {"--max-requests", int64(c.MaxRequests)}, {"--max-requests-jitter", int64(c.MaxRequestsJitter)}, {"--max-workers", int64(c.MaxWorkers)}, {"--limit-request-body", c.LimitBody}} {
		if v.val < 0 {
			return nil, usagef("%s %d: want a whole number >= 0", v.name, v.val)
		}
	}
	switch c.LogLevel = strings.ToLower(c.LogLevel); c.LogLevel {
	case "debug", "info", "warning", "error", "critical":
	default:
		return nil, usagef("--log-level %q: want debug, info, warning, error or critical", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "text":
	case "":
		c.LogFormat = "text"
		if !isTerminal(os.Stdout) {
			c.LogFormat = "json"
		}
	default:
		return nil, usagef("--log-format %q: want json or text", c.LogFormat)
	}

	c.Python = defaultPython(c.Python, getenv)
	if c.Name == "" {
		c.Name = c.App
	}
	if c.Chdir != "" {
		abs, err := filepath.Abs(c.Chdir)
		if err != nil {
			return nil, usagef("--chdir %q: %v", c.Chdir, err)
		}
		if st, err := os.Stat(abs); err != nil || !st.IsDir() {
			return nil, usagef("--chdir %q: not a directory", c.Chdir)
		}
		c.Chdir = abs
	}
	return c, nil
}

// validateApp checks MODULE[:VARIABLE] shape; the worker does the import.
func validateApp(app string) error {
	mod, expr, _ := strings.Cut(app, ":")
	if mod == "" || strings.ContainsAny(mod, " /()") || strings.HasPrefix(mod, ".") || strings.HasSuffix(mod, ".") {
		return usagef("application %q: want MODULE[:VARIABLE], e.g. app:app or app:create_app()", app)
	}
	if strings.Contains(app, ":") && strings.TrimSpace(expr) == "" {
		return usagef("application %q: empty variable after ':'", app)
	}
	return nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

const usageText = `usage: gorn [OPTIONS] MODULE[:VARIABLE]
       gorn limits [--json] [--worker-class CLASS] [--cpus N]

Serve a WSGI application with supervised pre-forked Python workers.
VARIABLE defaults to "application" and may be a factory call: app:create_app().
Options may also come from a Python config file and $GORN_CMD_ARGS (else
$GUNICORN_CMD_ARGS); the command line wins, then the environment, then the file.

  -c, --config FILE            Python config file with gunicorn's setting names
                               (PATH, file:PATH or python:MODULE; default ./gorn.conf.py
                               or ./gunicorn.conf.py if present); re-read on HUP
  -b, --bind ADDR              HOST:PORT, [::1]:PORT, unix:PATH or fd://N; repeatable
                               (default 127.0.0.1:8000, or 0.0.0.0:$PORT)
  -w, --workers N              worker processes (default $WEB_CONCURRENCY, else sized
                               from the cgroup CPU and memory limits)
      --cpus N                 CPUs to size for (default $GORN_CPUS, else detected)
      --max-workers N          ceiling for the automatic worker count
      --resize-interval S      re-read the limits and the load this often when sized
                               automatically (30)
  -k, --worker-class CLASS     sync (one request at a time) or gthread (--threads at once)
      --threads N              threads per gthread worker; > 1 turns sync into gthread (1)
      --worker-connections N   open connections per gthread worker, idle ones included (1000)
      --backlog N              listen queue length (2048)
      --chdir DIR              working directory of the workers
      --pythonpath DIRS        comma-separated directories to add to sys.path
  -e, --env KEY=VALUE          environment for the workers; repeatable
      --python PATH            interpreter ($VIRTUAL_ENV/bin/python, else python3)
  -t, --timeout S              abort a worker busy on one request this long (30; 0 = off)
      --graceful-timeout S     wait this long for workers to stop before SIGKILL (30)
      --boot-timeout S         kill a worker not ready after this long (120)
      --shutdown-delay S       on SIGTERM, keep serving this long first (0)
      --keep-alive S           idle keep-alive connection timeout (2)
      --header-timeout S       time allowed for a request head to arrive; a body may pause
                               this long and must then average 1 KiB/s (10)
      --max-requests N         recycle a worker after N requests (0 = never)
      --max-requests-jitter N  add up to N to each worker's max requests
      --limit-request-line N   (4094)
      --limit-request-fields N (100)
      --limit-request-field_size N (8190)
      --limit-request-body N   bytes; 0 = unlimited (0)
      --root-path PATH         SCRIPT_NAME prefix (default $SCRIPT_NAME)
      --forwarded-allow-ips L  peers trusted for X-Forwarded-* (127.0.0.1,::1)
      --access-logfile FILE    access log ("-" = stdout; off by default)
      --access-logformat FMT   gunicorn atoms, or "json"
      --error-logfile FILE     error log ("-" = stderr, default)
      --log-level LEVEL        debug, info, warning, error, critical (info)
      --log-format FMT         json or text (json when stdout is not a terminal)
  -u, --user USER              run the workers as this user (name or uid; needs root)
  -g, --group GROUP            run the workers in this group (name or gid)
      --initgroups             give the workers the user's supplementary groups too
  -m, --umask MODE             the workers' umask, e.g. 022
  -p, --pid FILE               write the master's pid here
  -n, --name NAME              in the workers' titles, gorn: worker [NAME] (default: the app)
      --metrics-bind ADDR      serve /metrics, /healthz and /readyz here (off)
      --min-ready N            workers ready for /readyz to pass (1)
      --reload                 reload the workers (as HUP does) when a source file changes
      --reload-extra-file F    another file to watch with --reload; repeatable
      --reload-engine E        auto, poll or inotify (gorn polls every second)
      --check-config           load the app once and exit 0, or 4 if it fails
      --print-config           print the resolved settings and exit
  -v, --version                print the version
  -h, --help                   this help

Other gunicorn flags are accepted with a warning, or refused when ignoring them would serve
something else (TLS, --proxy-protocol, --paste, --daemon).
`
