package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gornhq/gorn/internal/statsd"
	"github.com/gornhq/gorn/socket"
)

// Config is everything the command line, the environment and the config file say,
// validated. Each option of the registry (Options) owns one field; the rest is derived.
type Config struct {
	App           string              // MODULE[:VARIABLE]: the argument, else wsgi_app in the file
	Warnings      []string            // settings read but ignored, for the log
	WorkersSource string              // where Workers came from, for the sizing log line
	CPUsSource    string              // where CPUs came from
	Credential    *syscall.Credential // --user/--group: whom the workers run as; nil = as gorn
	MasterHooks   []string            // the master-side server hooks the config file defines

	ConfigFile        string // the Python config file read, if any
	Binds             []string
	Workers           int     // 0 = size from the CPU and memory limits
	CPUs              float64 // 0 = detect
	MaxWorkers        int
	ResizeInterval    time.Duration
	WorkerClass       string
	Threads           int
	WorkerConnections int
	Backlog           int
	ReusePort         bool // SO_REUSEPORT on the listeners: another process may bind the address too
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
	MaxWorkerMemory   int64 // bytes of USS past which a worker is replaced; 0 = off
	LimitRequestLine  int
	LimitFields       int
	LimitFieldSize    int
	LimitBody         int
	RootPath          string
	ForwardedAllowIPs []string
	ForwardedRealIP   bool
	AccessLog         string
	AccessLogFormat   string
	ErrorLog          string
	LogLevel          string
	LogFormat         string
	LogConfigJSON     string // absolute
	LogConfig         string // absolute
	StatsdHost        string // "" = off; else HOST:PORT or unix://PATH (normalized)
	StatsdPrefix      string
	DogstatsdTags     string
	BacklogMetric     bool
	User              string
	Group             string
	InitGroups        bool
	Umask             int // -1 = inherit
	PidFile           string
	Name              string
	MetricsBind       string
	MinReady          int
	Preload           bool // --preload: workers are forked from a mold that imported the app
	Reload            bool // restart workers when the app's source files change
	ReloadExtraFiles  []string
	ReloadEngine      string
	CheckConfig       bool
	PrintConfig       bool
	Version           bool
	Help              bool

	sources map[string]string // option name -> the layer that set it last
}

// Source is the layer that set the option last: "$VAR" for the environment, "config file
// PATH", "$GORN_CMD_ARGS", "command line", or "" if none did (the default).
func (c *Config) Source(name string) string { return c.sources[name] }

// DefaultAccessLogFormat is gunicorn's access log format.
const DefaultAccessLogFormat = `%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"`

// Options is the registry: every option gorn has, in --help order.
func Options() []Option {
	return []Option{
		{Name: "config", Short: "c", Gunicorn: "config", Arg: "FILE", NotInFile: true, Worker: "config_file",
			Help:  "Python config file with gunicorn's setting names\n(PATH, file:PATH or python:MODULE; default ./gorn.conf.py\nor ./gunicorn.conf.py if present); re-read on HUP",
			field: func(c *Config) any { return &c.ConfigFile }, worker: workerConfigFile},
		{Name: "bind", Short: "b", Gunicorn: "bind", Kind: List, Arg: "ADDR", Start: true,
			DefaultHelp: "127.0.0.1:8000, or 0.0.0.0:$PORT",
			Help:        "HOST:PORT, [::1]:PORT, unix:PATH or fd://N; repeatable",
			field:       func(c *Config) any { return &c.Binds }, check: checkBinds},
		{Name: "workers", Short: "w", Gunicorn: "workers", Kind: Int, Arg: "N", Min: 1, Env: "WEB_CONCURRENCY",
			DefaultHelp: "sized from the cgroup CPU and memory limits",
			Help:        "worker processes",
			field:       func(c *Config) any { return &c.Workers }, check: checkWorkers},
		{Name: "cpus", Kind: CPUs, Arg: "N", Env: "GORN_CPUS", DefaultHelp: "detected",
			Help:  "CPUs to size for, e.g. 1.5 or 1500m",
			field: func(c *Config) any { return &c.CPUs }, check: checkCPUs},
		{Name: "max-workers", Kind: Int, Arg: "N", Default: "0",
			Help:  "ceiling for the automatic worker count; 0 = none",
			field: func(c *Config) any { return &c.MaxWorkers }},
		{Name: "resize-interval", Kind: Seconds, Arg: "S", Default: "30",
			Help:  "re-read the limits and the load this often when sized\nautomatically",
			field: func(c *Config) any { return &c.ResizeInterval }},
		{Name: "worker-class", Short: "k", Gunicorn: "worker_class", Arg: "CLASS", Default: "sync", Worker: "worker_class",
			Help:  "sync (one request at a time), gthread (--threads at once),\ngevent or eventlet (--worker-connections at once; the app\ninstalls the library)",
			field: func(c *Config) any { return &c.WorkerClass }, check: checkWorkerClass},
		{Name: "threads", Gunicorn: "threads", Kind: Int, Arg: "N", Default: "1", Min: 1, Worker: "threads",
			Help:  "threads per gthread worker; > 1 turns sync into gthread",
			field: func(c *Config) any { return &c.Threads }},
		{Name: "worker-connections", Gunicorn: "worker_connections", Kind: Int, Arg: "N", Default: "1000", Min: 1, Worker: "worker_connections",
			Help:  "open connections a worker holds, idle keep-alive ones included;\nfor gevent and eventlet also the requests served at once",
			field: func(c *Config) any { return &c.WorkerConnections }},
		{Name: "backlog", Gunicorn: "backlog", Kind: Int, Arg: "N", Default: "2048", Min: 1, Start: true,
			Help:  "listen queue length",
			field: func(c *Config) any { return &c.Backlog }},
		{Name: "reuse-port", Gunicorn: "reuse_port", Kind: Bool, Start: true,
			Help:  "set SO_REUSEPORT, so other processes may bind the same address and share its connections",
			field: func(c *Config) any { return &c.ReusePort }},
		{Name: "chdir", Gunicorn: "chdir", Arg: "DIR",
			Help:  "working directory of the workers",
			field: func(c *Config) any { return &c.Chdir }, check: checkChdir},
		{Name: "pythonpath", Gunicorn: "pythonpath", Kind: CommaList, Arg: "DIRS", Worker: "pythonpath",
			Help:  "comma-separated directories to add to sys.path",
			field: func(c *Config) any { return &c.PythonPath }},
		{Name: "env", Short: "e", Gunicorn: "raw_env", Kind: List, Arg: "KEY=VALUE",
			Help:  "environment for the workers; repeatable",
			field: func(c *Config) any { return &c.Env }, check: checkEnv},
		{Name: "python", Arg: "PATH", Start: true, NotInFile: true, DefaultHelp: "$VIRTUAL_ENV/bin/python, else the python of the venv gorn is installed in, else python3",
			Help:  "interpreter of the workers (and of the config file)",
			field: func(c *Config) any { return &c.Python }, check: checkPython},
		{Name: "timeout", Short: "t", Gunicorn: "timeout", Kind: Seconds, Arg: "S", Default: "30", Worker: "timeout",
			Help:  "abort a worker busy on one request this long; 0 = off",
			field: func(c *Config) any { return &c.Timeout }},
		{Name: "graceful-timeout", Gunicorn: "graceful_timeout", Kind: Seconds, Arg: "S", Default: "30", Worker: "graceful_timeout",
			Help:  "wait this long for workers to stop before SIGKILL",
			field: func(c *Config) any { return &c.GracefulTimeout }},
		{Name: "boot-timeout", Kind: Seconds, Arg: "S", Default: "120",
			Help:  "abort (stack dumped) and kill a worker not ready after this long",
			field: func(c *Config) any { return &c.BootTimeout }},
		{Name: "shutdown-delay", Kind: Seconds, Arg: "S", Default: "0",
			Help:  "on SIGTERM, keep serving this long first",
			field: func(c *Config) any { return &c.ShutdownDelay }},
		{Name: "keep-alive", Gunicorn: "keepalive", Kind: Seconds, Arg: "S", Default: "75", Worker: "keepalive",
			Help:  "idle keep-alive connection timeout; above the idle timeout of any proxy in front (nginx, ALB: 60 s)",
			field: func(c *Config) any { return &c.Keepalive }},
		{Name: "header-timeout", Kind: Seconds, Arg: "S", Default: "10", Worker: "header_timeout",
			Help:  "time allowed for a request head to arrive; a body may pause\nthis long and must then average 1 KiB/s",
			field: func(c *Config) any { return &c.HeaderTimeout }},
		{Name: "max-requests", Gunicorn: "max_requests", Kind: Int, Arg: "N", Default: "0",
			Help:  "recycle a worker after N requests; 0 = never",
			field: func(c *Config) any { return &c.MaxRequests }},
		{Name: "max-requests-jitter", Gunicorn: "max_requests_jitter", Kind: Int, Arg: "N", Default: "0",
			Help:  "add up to N to each worker's max requests",
			field: func(c *Config) any { return &c.MaxRequestsJitter }},
		{Name: "max-worker-memory", Kind: Bytes, Arg: "SIZE", Default: "0",
			Help:  "replace a worker whose unique memory (USS) grows past SIZE,\nafter its request, its replacement ready first; 0 = never",
			field: func(c *Config) any { return &c.MaxWorkerMemory }},
		{Name: "limit-request-line", Gunicorn: "limit_request_line", Kind: Int, Arg: "N", Default: "4094", Worker: "limit_request_line",
			Help:  "longest request line; 0 = unlimited",
			field: func(c *Config) any { return &c.LimitRequestLine }},
		{Name: "limit-request-fields", Gunicorn: "limit_request_fields", Kind: Int, Arg: "N", Default: "100", Min: 1, Worker: "limit_request_fields",
			Help:  "most header fields in a request",
			field: func(c *Config) any { return &c.LimitFields }},
		{Name: "limit-request-field_size", Aliases: []string{"limit-request-field-size"}, Gunicorn: "limit_request_field_size",
			Kind: Int, Arg: "N", Default: "8190", Min: 1, Worker: "limit_request_field_size",
			Help:  "longest header line",
			field: func(c *Config) any { return &c.LimitFieldSize }},
		{Name: "limit-request-body", Kind: Int, Arg: "N", Default: "0", Worker: "limit_request_body",
			Help:  "largest request body in bytes; 0 = unlimited",
			field: func(c *Config) any { return &c.LimitBody }},
		{Name: "root-path", Gunicorn: "root_path", Arg: "PATH", Env: "SCRIPT_NAME", Worker: "root_path",
			Help:  "SCRIPT_NAME prefix",
			field: func(c *Config) any { return &c.RootPath }},
		{Name: "forwarded-allow-ips", Gunicorn: "forwarded_allow_ips", Kind: CommaList, Arg: "L", Default: "127.0.0.1,::1",
			Env: "FORWARDED_ALLOW_IPS", Worker: "forwarded_allow_ips",
			Help:  "proxies trusted for the scheme headers (X-Forwarded-Proto, ...; gunicorn's secure_scheme_headers)",
			field: func(c *Config) any { return &c.ForwardedAllowIPs }},
		{Name: "forwarded-real-ip", Kind: Bool, Worker: "forwarded_real_ip",
			Help:  "set REMOTE_ADDR from X-Forwarded-For: the rightmost hop not appended by a --forwarded-allow-ips proxy",
			field: func(c *Config) any { return &c.ForwardedRealIP }},
		{Name: "access-logfile", Gunicorn: "accesslog", Arg: "FILE", Worker: "access_log",
			Help:  `access log ("-" = stdout; off by default)`,
			field: func(c *Config) any { return &c.AccessLog }, worker: func(c *Config) any { return nullIfEmpty(c.AccessLog) }},
		{Name: "access-logformat", Gunicorn: "access_log_format", Arg: "FMT", Default: DefaultAccessLogFormat,
			DefaultHelp: "gunicorn's", Worker: "access_log_format",
			Help:  `gunicorn atoms, or "json"`,
			field: func(c *Config) any { return &c.AccessLogFormat }},
		{Name: "error-logfile", Aliases: []string{"log-file"}, Gunicorn: "errorlog", Arg: "FILE", Default: "-", Start: true, Worker: "error_log",
			Help:  `error log file; "-" = stderr`,
			field: func(c *Config) any { return &c.ErrorLog }},
		{Name: "log-level", Gunicorn: "loglevel", Arg: "LEVEL", Default: "info", Worker: "log_level",
			Help:  "debug, info, warning, error, critical",
			field: func(c *Config) any { return &c.LogLevel }, check: checkLogLevel},
		{Name: "log-format", Arg: "FMT", Start: true, Worker: "log_format", DefaultHelp: "json when stdout is not a terminal, else text",
			Help:  "json or text",
			field: func(c *Config) any { return &c.LogFormat }, check: checkLogFormat},
		{Name: "log-config-json", Gunicorn: "logconfig_json", Arg: "FILE", Worker: "logconfig_json",
			Help:  "configure Python logging in the workers from this JSON dictConfig file (gunicorn's defaults underneath)",
			field: func(c *Config) any { return &c.LogConfigJSON }, check: checkLogConfigFiles},
		{Name: "log-config", Gunicorn: "logconfig", Arg: "FILE", Worker: "logconfig",
			Help:  "configure Python logging in the workers from this ini fileConfig file",
			field: func(c *Config) any { return &c.LogConfig }},
		{Name: "statsd-host", Gunicorn: "statsd_host", Arg: "ADDR", Worker: "statsd_host",
			Help:  "send gunicorn's StatsD metrics to HOST[:PORT] (UDP, port 8125) or unix://PATH",
			field: func(c *Config) any { return &c.StatsdHost }, check: checkStatsdHost},
		{Name: "statsd-prefix", Gunicorn: "statsd_prefix", Arg: "PREFIX", Worker: "statsd_prefix",
			Help:  `put PREFIX. in front of every StatsD metric name`,
			field: func(c *Config) any { return &c.StatsdPrefix }, worker: func(c *Config) any { return statsd.Prefix(c.StatsdPrefix) }},
		{Name: "dogstatsd-tags", Gunicorn: "dogstatsd_tags", Arg: "TAGS", Worker: "dogstatsd_tags",
			Help:  "DogStatsD tags for every StatsD metric, e.g. env:prod,service:web",
			field: func(c *Config) any { return &c.DogstatsdTags }},
		{Name: "enable-backlog-metric", Gunicorn: "enable_backlog_metric", Kind: Bool, Start: true,
			Help:  "with --statsd-host, send gunicorn.backlog (connections waiting in the TCP listen queues) every second",
			field: func(c *Config) any { return &c.BacklogMetric }},
		{Name: "user", Short: "u", Gunicorn: "user", Arg: "USER",
			Help:  "run the workers as this user (name or uid; needs root)",
			field: func(c *Config) any { return &c.User }, check: checkCredential},
		{Name: "group", Short: "g", Gunicorn: "group", Arg: "GROUP",
			Help:  "run the workers in this group (name or gid)",
			field: func(c *Config) any { return &c.Group }},
		{Name: "initgroups", Gunicorn: "initgroups", Kind: Bool,
			Help:  "give the workers the user's supplementary groups too",
			field: func(c *Config) any { return &c.InitGroups }},
		{Name: "umask", Short: "m", Gunicorn: "umask", Kind: Mode, Arg: "MODE", Default: "-1", DefaultHelp: "inherited", Worker: "umask",
			Help:  "the workers' umask, e.g. 022",
			field: func(c *Config) any { return &c.Umask }},
		{Name: "pid", Short: "p", Gunicorn: "pidfile", Arg: "FILE", Start: true,
			Help:  "write the master's pid here",
			field: func(c *Config) any { return &c.PidFile }},
		{Name: "name", Short: "n", Gunicorn: "proc_name", Arg: "NAME", Worker: "proc_name", DefaultHelp: "the app",
			Help:  "in the workers' titles, gorn: worker [NAME]",
			field: func(c *Config) any { return &c.Name }, check: checkName},
		{Name: "metrics-bind", Arg: "ADDR", Start: true,
			Help:  "serve /metrics, /healthz and /readyz here (off by default)",
			field: func(c *Config) any { return &c.MetricsBind }},
		{Name: "min-ready", Kind: Int, Arg: "N", Default: "1", Min: 1, Start: true,
			Help:  "workers ready for /readyz to pass",
			field: func(c *Config) any { return &c.MinReady }},
		{Name: "preload", Gunicorn: "preload_app", Kind: Bool, Start: true, Worker: "preload",
			Help:  "import the app once in a mold process and fork the workers\nfrom it: shared memory, millisecond respawns; HUP builds\na new mold from the new code",
			field: func(c *Config) any { return &c.Preload }},
		{Name: "reload", Gunicorn: "reload", Kind: Bool, Worker: "reload",
			Help:  "reload the workers (as HUP does) when a source file changes",
			field: func(c *Config) any { return &c.Reload }},
		{Name: "reload-extra-file", Gunicorn: "reload_extra_files", Kind: List, Arg: "F", Worker: "reload_extra_files",
			Help:  "another file to watch with --reload; repeatable",
			field: func(c *Config) any { return &c.ReloadExtraFiles }},
		{Name: "reload-engine", Gunicorn: "reload_engine", Arg: "E", Default: "auto",
			Help:  "auto, poll or inotify (gorn polls every second)",
			field: func(c *Config) any { return &c.ReloadEngine }, check: checkReloadEngine},
		{Name: "check-config", Gunicorn: "check_config", Kind: Action, NotInFile: true,
			Help:  "load the app once and exit 0, or 4 if it fails",
			field: func(c *Config) any { return &c.CheckConfig }},
		{Name: "print-config", Gunicorn: "print_config", Kind: Action, NotInFile: true,
			Help:  "print the resolved settings and exit",
			field: func(c *Config) any { return &c.PrintConfig }},
		{Name: "version", Short: "v", Kind: Action, NotInFile: true,
			Help:  "print the version",
			field: func(c *Config) any { return &c.Version }},
		{Name: "help", Short: "h", Kind: Action, NotInFile: true,
			Help:  "this help",
			field: func(c *Config) any { return &c.Help }},
	}
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// workerConfigFile is the config file as the workers name it: a path made absolute, since
// a worker's working directory is --chdir; null when there is none.
func workerConfigFile(c *Config) any {
	source := c.ConfigFile
	if source == "" {
		return nil
	}
	path, isPath := strings.CutPrefix(source, "file:")
	if !isPath && strings.HasPrefix(source, "python:") {
		return source
	}
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

func checkBinds(c *Config, getenv Environment) error {
	if len(c.Binds) == 0 {
		c.Binds = []string{socket.DefaultBind(getenv)}
	}
	for _, b := range c.Binds {
		if _, err := socket.ParseAddress(b); err != nil {
			return usagef("%v", err)
		}
	}
	return nil
}

func checkWorkers(c *Config, _ Environment) error {
	switch src := c.Source("workers"); {
	case src == "":
	case src == "$WEB_CONCURRENCY":
		c.WorkersSource = "WEB_CONCURRENCY"
	case strings.HasPrefix(src, layerFile):
		c.WorkersSource = "workers in " + c.ConfigFile
	default:
		c.WorkersSource = "--workers"
	}
	return nil
}

func checkCPUs(c *Config, _ Environment) error {
	switch src := c.Source("cpus"); {
	case src == "":
	case src == "$GORN_CPUS":
		c.CPUsSource = "GORN_CPUS"
	default:
		c.CPUsSource = "--cpus"
	}
	return nil
}

func checkWorkerClass(c *Config, _ Environment) error {
	switch c.WorkerClass {
	case "sync":
		if c.Threads > 1 {
			// gunicorn does the same, silently.
			c.WorkerClass = "gthread"
			c.Warnings = append(c.Warnings, fmt.Sprintf("--threads %d with the sync worker class: running gthread workers, as gunicorn does", c.Threads))
		}
	case "gthread", "gevent", "eventlet":
	case "gevent_wsgi", "gevent_pywsgi":
		// gunicorn serves these with gevent's own pywsgi server; gorn serves every class
		// with one HTTP implementation, so they are the gevent class.
		c.Warnings = append(c.Warnings, fmt.Sprintf("-k %s: serving with the gevent worker class (gorn has one HTTP implementation for every class)", c.WorkerClass))
		c.WorkerClass = "gevent"
	case "tornado", "asgi", "uvicorn.workers.UvicornWorker":
		return usagef("-k/--worker-class %q is not supported yet: use sync, gthread (--threads), gevent or eventlet", c.WorkerClass)
	default:
		return usagef("-k/--worker-class %q: want sync, gthread, gevent or eventlet", c.WorkerClass)
	}
	return nil
}

// checkLogConfigFiles makes --log-config-json and --log-config absolute (the workers run
// in --chdir) and refuses a file that is not there, as gunicorn refuses a missing one.
func checkLogConfigFiles(c *Config, _ Environment) error {
	for _, f := range []struct {
		flag string
		path *string
	}{{"--log-config-json", &c.LogConfigJSON}, {"--log-config", &c.LogConfig}} {
		if *f.path == "" {
			continue
		}
		abs, err := filepath.Abs(*f.path)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			return usagef("%s %q: %v", f.flag, *f.path, err)
		}
		*f.path = abs
	}
	return nil
}

func checkStatsdHost(c *Config, _ Environment) error {
	if c.StatsdHost == "" {
		return nil
	}
	addr, err := statsd.ParseAddress(c.StatsdHost)
	if err != nil {
		return usagef("--statsd-host %q: %v", c.StatsdHost, err)
	}
	c.StatsdHost = addr
	return nil
}

func checkChdir(c *Config, _ Environment) error {
	if c.Chdir == "" {
		return nil
	}
	abs, err := filepath.Abs(c.Chdir)
	if err != nil {
		return usagef("--chdir %q: %v", c.Chdir, err)
	}
	if st, err := os.Stat(abs); err != nil || !st.IsDir() {
		return usagef("--chdir %q: not a directory", c.Chdir)
	}
	c.Chdir = abs
	return nil
}

func checkEnv(c *Config, _ Environment) error {
	for _, e := range c.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return usagef("-e %q: want KEY=VALUE", e)
		}
	}
	return nil
}

func checkPython(c *Config, getenv Environment) error {
	c.Python = defaultPython(c.Python, getenv)
	return nil
}

func defaultPython(python string, getenv Environment) string {
	if python != "" {
		return python
	}
	if venv := getenv("VIRTUAL_ENV"); venv != "" {
		return filepath.Join(venv, "bin", "python")
	}
	return "python3"
}

func checkLogLevel(c *Config, _ Environment) error {
	switch c.LogLevel = strings.ToLower(c.LogLevel); c.LogLevel {
	case "debug", "info", "warning", "error", "critical":
		return nil
	}
	return usagef("--log-level %q: want debug, info, warning, error or critical", c.LogLevel)
}

func checkLogFormat(c *Config, _ Environment) error {
	switch c.LogFormat {
	case "json", "text":
	case "":
		c.LogFormat = "text"
		if !isTerminal(os.Stdout) {
			c.LogFormat = "json"
		}
	default:
		return usagef("--log-format %q: want json or text", c.LogFormat)
	}
	return nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func checkCredential(c *Config, _ Environment) error {
	cred, err := credential(c.User, c.Group, c.InitGroups)
	c.Credential = cred
	return err
}

func checkName(c *Config, _ Environment) error {
	if c.Name == "" {
		c.Name = c.App
	}
	return nil
}

func checkReloadEngine(c *Config, _ Environment) error {
	switch c.ReloadEngine {
	case "auto", "poll":
	case "inotify":
		c.Warnings = append(c.Warnings, "--reload-engine inotify: gorn polls the files every second instead")
	default:
		return usagef("--reload-engine %q: want auto, poll or inotify", c.ReloadEngine)
	}
	return nil
}
