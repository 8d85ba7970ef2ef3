package config

import (
	"errors"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		env   func(string) string
		check func(*Config) bool
	}{
		{"defaults", []string{"app:app"}, env(), func(c *Config) bool {
			return slices.Equal(c.Binds, []string{"127.0.0.1:8000"}) && c.Workers == 0 && c.Backlog == 2048 &&
				c.Timeout == 30*time.Second && c.GracefulTimeout == 30*time.Second && c.Keepalive == 75*time.Second &&
				c.LimitRequestLine == 4094 && c.LimitFields == 100 && c.LimitFieldSize == 8190 && c.Python == "python3" &&
				c.AccessLog == "" && c.ErrorLog == "-" && c.Name == "app:app"
		}},
		{"PORT", []string{"app"}, env("PORT", "5000"), func(c *Config) bool { return c.Binds[0] == "0.0.0.0:5000" }},
		{"WEB_CONCURRENCY", []string{"app"}, env("WEB_CONCURRENCY", "7"), func(c *Config) bool {
			return c.Workers == 7 && c.WorkersSource == "WEB_CONCURRENCY"
		}},
		{"-w beats WEB_CONCURRENCY", []string{"-w", "3", "app"}, env("WEB_CONCURRENCY", "7"), func(c *Config) bool { return c.Workers == 3 }},
		{"flags after the app", []string{"app:create_app()", "-w", "2", "--bind", "[::1]:9000", "-b", "unix:/tmp/x.sock"}, env(), func(c *Config) bool {
			return c.App == "app:create_app()" && c.Workers == 2 && slices.Equal(c.Binds, []string{"[::1]:9000", "unix:/tmp/x.sock"})
		}},
		{"gunicorn spellings", []string{"--limit-request-field_size", "100", "--keep-alive", "0.5", "-t", "0", "-e", "A=1", "-e", "B=x=y", "app"}, env(), func(c *Config) bool {
			return c.LimitFieldSize == 100 && c.Keepalive == 500*time.Millisecond && c.Timeout == 0 && slices.Equal(c.Env, []string{"A=1", "B=x=y"})
		}},
		{"virtualenv python", []string{"app"}, env("VIRTUAL_ENV", "/srv/venv"), func(c *Config) bool { return c.Python == "/srv/venv/bin/python" }},
		{"cpus in millicores", []string{"app"}, env("GORN_CPUS", "1500m"), func(c *Config) bool { return c.CPUs == 1.5 && c.CPUsSource == "GORN_CPUS" }},
		{"pythonpath list", []string{"--pythonpath", "a, b", "app"}, env(), func(c *Config) bool { return slices.Equal(c.PythonPath, []string{"a", "b"}) }},
		{"forwarded ips from env", []string{"app"}, env("FORWARDED_ALLOW_IPS", "10.0.0.0/8"), func(c *Config) bool {
			return slices.Equal(c.ForwardedAllowIPs, []string{"10.0.0.0/8"})
		}},
		{"statsd", []string{"--statsd-host", "localhost", "--statsd-prefix", "web..", "--dogstatsd-tags", "env:prod", "app"}, env(), func(c *Config) bool {
			w := WorkerSettings(c, "gorn/test").Options
			return c.StatsdHost == "localhost:8125" && w["statsd_host"] == "localhost:8125" && w["statsd_prefix"] == "web." && w["dogstatsd_tags"] == "env:prod" && len(c.Warnings) == 0
		}},
		{"statsd unix socket", []string{"--statsd-host", "unix:///run/statsd.sock", "app"}, env(), func(c *Config) bool { return c.StatsdHost == "unix:///run/statsd.sock" }},
		{"log config files made absolute", []string{"--log-config", "parse_test.go", "--log-config-json", "testdata/../parse.go", "app"}, env(), func(c *Config) bool {
			w := WorkerSettings(c, "gorn/test").Options
			return filepath.IsAbs(c.LogConfig) && strings.HasSuffix(c.LogConfig, "/config/parse_test.go") && w["logconfig"] == c.LogConfig &&
				strings.HasSuffix(c.LogConfigJSON, "/config/parse.go") && w["logconfig_json"] == c.LogConfigJSON && len(c.Warnings) == 0
		}},
		{"max worker memory", []string{"--max-worker-memory", "256M", "app"}, env(), func(c *Config) bool { return c.MaxWorkerMemory == 256<<20 }},
		{"max worker memory off", []string{"app"}, env(), func(c *Config) bool { return c.MaxWorkerMemory == 0 }},
		{"version needs no app", []string{"-v"}, env(), func(c *Config) bool { return c.Version }},
		{"gunicorn-only flags warn", []string{"--preload", "--worker-tmp-dir", "/dev/shm", "--log-syslog-to=udp://localhost:514", "-R", "app"}, env(), func(c *Config) bool {
			all := strings.Join(c.Warnings, "\n")
			return len(c.Warnings) == 3 && c.Preload &&
				strings.Contains(all, "--log-syslog-to") && strings.Contains(all, "--worker-tmp-dir") && strings.Contains(all, "--enable-stdio-inheritance")
		}},
		{"user and group", []string{"-u", "65534", "-g", "65533", "-m", "027", "app"}, env(), func(c *Config) bool {
			return c.Credential != nil && c.Credential.Uid == 65534 && c.Credential.Gid == 65533 && c.Umask == 0o27
		}},
		{"no user: the master's", []string{"app"}, env(), func(c *Config) bool { return c.Credential == nil && c.Umask == -1 }},
		{"--threads makes gthread", []string{"--threads", "4", "app"}, env(), func(c *Config) bool {
			return c.WorkerClass == "gthread" && c.Threads == 4 && len(c.Warnings) == 1
		}},
		{"-k gevent", []string{"-k", "gevent", "--worker-connections", "500", "app"}, env(), func(c *Config) bool {
			return c.WorkerClass == "gevent" && c.WorkerConnections == 500 && len(c.Warnings) == 0
		}},
		{"-k eventlet", []string{"-k", "eventlet", "app"}, env(), func(c *Config) bool {
			return c.WorkerClass == "eventlet" && c.WorkerConnections == 1000
		}},
		{"-k gevent_pywsgi is gevent", []string{"-k", "gevent_pywsgi", "app"}, env(), func(c *Config) bool {
			return c.WorkerClass == "gevent" && len(c.Warnings) == 1
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.args, tc.env, nil)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.args, err)
			}
			if !tc.check(c) {
				t.Errorf("Parse(%q) = %+v", tc.args, c)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  func(string) string
		want string
	}{
		{[]string{}, env(), "no application module"},
		{[]string{"--bogus", "app"}, env(), "unknown option --bogus"},
		{[]string{"-w", "0", "app"}, env(), "-w/--workers"},
		{[]string{"-w", "x", "app"}, env(), "-w"},
		{[]string{"app"}, env("WEB_CONCURRENCY", "lots"), "WEB_CONCURRENCY"},
		{[]string{"a", "b"}, env(), "unexpected arguments"},
		{[]string{"-b", "host:http", "app"}, env(), "host:http"},
		{[]string{"--timeout", "soon", "app"}, env(), "timeout"},
		{[]string{"-e", "NOEQUALS", "app"}, env(), "KEY=VALUE"},
		{[]string{"--log-level", "loud", "app"}, env(), "--log-level"},
		{[]string{"app:"}, env(), "empty variable"},
		{[]string{"path/to/app.py"}, env(), "MODULE[:VARIABLE]"},
		{[]string{"--certfile", "c.pem", "--keyfile", "k.pem", "app"}, env(), "TLS is not supported"},
		{[]string{"-D", "app"}, env(), "--daemon: gorn stays in the foreground"},
		{[]string{"--paste", "dev.ini"}, env(), "PasteDeploy"},
		{[]string{"--proxy-protocol=v2", "app"}, env(), "PROXY protocol"},
		{[]string{"--initgroups", "app"}, env(), "--initgroups needs -u/--user"},
		{[]string{"-u", "no-such-user-here", "app"}, env(), "-u/--user \"no-such-user-here\""},
		{[]string{"-m", "999", "app"}, env(), "-m/--umask"},
		{[]string{"-k", "asgi", "app"}, env(), "not supported yet: use sync, gthread (--threads), gevent or eventlet"},
		{[]string{"--reload-engine", "magic", "app"}, env(), "--reload-engine"},
		{[]string{"-k", "tornado", "app"}, env(), "worker-class"},
		{[]string{"--cpus", "-1", "app"}, env(), "--cpus"},
		{[]string{"--max-worker-memory", "lots", "app"}, env(), "--max-worker-memory"},
		{[]string{"--backlog", "0", "app"}, env(), "--backlog"},
		{[]string{"--statsd-host", "host:port", "app"}, env(), `--statsd-host "host:port"`},
		{[]string{"--log-config-json", "/no/such/logging.json", "app"}, env(), `--log-config-json "/no/such/logging.json"`},
		{[]string{"--log-config", "/no/such/logging.ini", "app"}, env(), `--log-config "/no/such/logging.ini"`},
	} {
		_, err := Parse(tc.args, tc.env, nil)
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Parse(%q) error = %v, want a one-line usage error mentioning %q", tc.args, err, tc.want)
		}
	}
}

func TestSplitWords(t *testing.T) {
	for in, want := range map[string][]string{
		`-w 3  --bind 0.0.0.0:80`:            {"-w", "3", "--bind", "0.0.0.0:80"},
		`--access-logformat '%(h)s "%(r)s"'`: {"--access-logformat", `%(h)s "%(r)s"`},
		`-e "GREETING=hello world" -e A\ B`:  {"-e", "GREETING=hello world", "-e", "A B"},
		`-e "Q=\"x\" \$HOME"`:                {"-e", `Q="x" $HOME`},
		`''`:                                 {""},
		"  ":                                 nil,
	} {
		got, err := splitWords(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("splitWords(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`'open`, `"open`} {
		if _, err := splitWords(bad); err == nil {
			t.Errorf("splitWords(%q): no error", bad)
		}
	}
}

func TestCmdArgsFromEnvironment(t *testing.T) {
	c, err := Parse([]string{"-b", "127.0.0.1:9", "app"},
		env("GUNICORN_CMD_ARGS", "-w 3 --bind 0.0.0.0:80 --bind [::]:80 -e A=1 --keep-alive 7"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Workers != 3 || c.Keepalive != 7*time.Second || !slices.Equal(c.Env, []string{"A=1"}) ||
		!slices.Equal(c.Binds, []string{"127.0.0.1:9"}) {
		t.Errorf("config %+v: want env options with the command line's bind winning", c)
	}
	c, err = Parse([]string{"-w", "5", "app"}, env("GORN_CMD_ARGS", "-w 2", "GUNICORN_CMD_ARGS", "-w 9"), nil)
	if err != nil || c.Workers != 5 {
		t.Errorf("command line -w must win over GORN_CMD_ARGS: %+v %v", c, err)
	}
	for _, bad := range []string{"app:app", "--nope", "'unterminated"} {
		if _, err := Parse([]string{"app"}, env("GORN_CMD_ARGS", bad), nil); err == nil || !strings.Contains(err.Error(), "GORN_CMD_ARGS") {
			t.Errorf("GORN_CMD_ARGS=%q: error %v", bad, err)
		}
	}
}

// singleDashLong is a long flag spelled with one dash, as Go's flag package writes them.
var singleDashLong = regexp.MustCompile(`(^|[^-\w])-[a-z][a-z0-9_-]+`)

// TestFlagErrorsSpellFlagsAsHelpDoes: every flag, by every spelling, given without its
// value or with a value it refuses, is named in the error as --help names it
// ("-w/--workers"), never as Go's flag package does ("-workers").
func TestFlagErrorsSpellFlagsAsHelpDoes(t *testing.T) {
	check := func(args []string, want string) {
		t.Helper()
		_, err := Parse(args, env(), nil)
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("Parse(%q) = %v, want a usage error", args, err)
			return
		}
		msg := err.Error()
		if !strings.Contains(msg, want) || singleDashLong.MatchString(msg) {
			t.Errorf("Parse(%q) error %q: want %q and no single-dash long flag", args, msg, want)
		}
	}
	n := 0
	for _, o := range Options() {
		for _, name := range o.flags() {
			spelled := "--" + name
			if len(name) == 1 {
				spelled = "-" + name
			}
			switch o.Kind {
			case Action:
				continue
			case Bool:
				check([]string{spelled + "=maybe", "app"}, o.FlagNames()+` "maybe"`)
			default:
				check([]string{"app", spelled}, o.FlagNames()+" needs a value")
			}
			n++
		}
	}
	for _, u := range unimplementedSettings() {
		for _, name := range u.flags {
			if !u.isBool {
				check([]string{"app", "--" + name}, u.flagNames()+" needs a value")
				n++
			}
		}
	}
	if n < 60 {
		t.Errorf("only %d flags checked", n)
	}
	check([]string{"--bogus", "app"}, "unknown option --bogus")
	check([]string{"-Z", "app"}, "unknown option -Z")
	check([]string{"---x", "app"}, "bad option syntax: ---x")
	_, err := Parse([]string{"-w"}, env("GORN_CMD_ARGS", "--timeout"), nil)
	if err == nil || !strings.Contains(err.Error(), "$GORN_CMD_ARGS: -t/--timeout needs a value") {
		t.Errorf("$GORN_CMD_ARGS error %v", err)
	}
}
