package config

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeFile is a loader that returns settings as if a config file had set them.
func fakeFile(t *testing.T, settings map[string]any, callables ...string) Loader {
	return func(python, source string) (*FileSettings, error) {
		f := &FileSettings{Settings: map[string]json.RawMessage{}, Callables: callables}
		for k, v := range settings {
			raw, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			f.Settings[k] = raw
		}
		return f, nil
	}
}

func TestConfigFileLayering(t *testing.T) {
	file := fakeFile(t, map[string]any{
		"bind": []string{"127.0.0.1:7001", "127.0.0.1:7002"}, "workers": 5, "timeout": 12.5,
		"keepalive": 4, "accesslog": "-", "raw_env": []string{"A=1", "B=2"}, "max_requests": 1000, "max_worker_memory": "300M",
		"pythonpath": "src,lib", "forwarded_allow_ips": []string{"10.0.0.1", "10.0.0.2"},
		"wsgi_app": "pkg.web:create_app()", "header_timeout": 3, "preload_app": true, "worker_tmp_dir": "/dev/shm",
		"w": 9, "python": "/nope", "helper_variable": "ignored",
	}, "on_starting", "cpu_count", "post_fork")
	for _, tc := range []struct {
		name  string
		args  []string
		env   func(string) string
		check func(*Config) bool
	}{
		{"file only", []string{"-c", "x.py"}, env(), func(c *Config) bool {
			return c.App == "pkg.web:create_app()" && c.ConfigFile == "x.py" &&
				slices.Equal(c.Binds, []string{"127.0.0.1:7001", "127.0.0.1:7002"}) &&
				c.Workers == 5 && c.WorkersSource == "workers in x.py" && c.Timeout == 12500*time.Millisecond &&
				c.Keepalive == 4*time.Second && c.AccessLog == "-" && slices.Equal(c.Env, []string{"A=1", "B=2"}) &&
				c.MaxRequests == 1000 && slices.Equal(c.PythonPath, []string{"src", "lib"}) &&
				slices.Equal(c.ForwardedAllowIPs, []string{"10.0.0.1", "10.0.0.2"}) &&
				c.HeaderTimeout == 3*time.Second && c.Python == "python3" && c.MaxWorkerMemory == 300<<20
		}},
		{"environment over file", []string{"--config=x.py"}, env("GUNICORN_CMD_ARGS", "-w 2 -b 127.0.0.1:7003"), func(c *Config) bool {
			return c.Workers == 2 && c.WorkersSource == "--workers" && slices.Equal(c.Binds, []string{"127.0.0.1:7003"}) && c.MaxRequests == 1000
		}},
		{"command line over file", []string{"other:app", "-c", "x.py", "-e", "C=3", "--timeout", "1"}, env(), func(c *Config) bool {
			return c.App == "other:app" && slices.Equal(c.Env, []string{"C=3"}) && c.Timeout == time.Second && c.Workers == 5
		}},
		{"-c from the environment", []string{}, env("GORN_CMD_ARGS", "-c x.py"), func(c *Config) bool {
			return c.ConfigFile == "x.py" && c.App == "pkg.web:create_app()"
		}},
		{"file settings beat WEB_CONCURRENCY", []string{"-c", "x.py"}, env("WEB_CONCURRENCY", "8"), func(c *Config) bool { return c.Workers == 5 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.args, tc.env, file)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.args, err)
			}
			if !tc.check(c) {
				t.Errorf("Parse(%q) = %+v", tc.args, c)
			}
			if all := strings.Join(c.Warnings, "\n"); len(c.Warnings) != 1 || !strings.Contains(all, "worker_tmp_dir") {
				t.Errorf("warnings %q: want worker_tmp_dir, nothing else", c.Warnings)
			}
			if !c.Preload {
				t.Errorf("preload_app = True in the file: want --preload")
			}
			if !slices.Equal(c.MasterHooks, []string{"on_starting"}) {
				t.Errorf("master hooks %q: want on_starting (the hook host runs it)", c.MasterHooks)
			}
		})
	}
}

func TestConfigFileUnimplementedSettings(t *testing.T) {
	for _, tc := range []struct {
		settings map[string]any
		warn     string // "" = nothing to say
		refuse   string
	}{
		{settings: map[string]any{"daemon": false, "preload_app": false, "sendfile": true, "certfile": "", "reuse_port": false}},
		{settings: map[string]any{"sendfile": false}, warn: "sendfile is a gunicorn setting gorn does not implement; ignored: file responses always use sendfile(2)"},
		{settings: map[string]any{"syslog_addr": "udp://localhost:514"}, warn: "syslog_addr is a gunicorn setting gorn does not implement; ignored: gorn logs to files or stderr"},
		{settings: map[string]any{"daemon": true}, refuse: "config file x.py: daemon: gorn stays in the foreground"},
		{settings: map[string]any{"certfile": "/etc/tls/cert.pem"}, refuse: "config file x.py: certfile: TLS is not supported"},
	} {
		c, err := Parse([]string{"-c", "x.py", "app"}, env(), fakeFile(t, tc.settings))
		switch {
		case tc.refuse != "":
			if err == nil || !strings.Contains(err.Error(), tc.refuse) {
				t.Errorf("%v: error %v, want %q", tc.settings, err, tc.refuse)
			}
		case err != nil:
			t.Errorf("%v: %v", tc.settings, err)
		case tc.warn == "" && len(c.Warnings) > 0:
			t.Errorf("%v: warnings %q, want none", tc.settings, c.Warnings)
		case tc.warn != "" && (len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], tc.warn)):
			t.Errorf("%v: warnings %q, want %q", tc.settings, c.Warnings, tc.warn)
		}
	}
}

func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct {
		settings map[string]any
		want     string
	}{
		{map[string]any{"timeout": "soon"}, "config file x.py: -t/--timeout \"soon\": want a number of seconds >= 0"},
		{map[string]any{"timeout": []any{true, map[string]int{}}}, "config file x.py: timeout: want a string"},
		{map[string]any{"wsgi_app": 3}, "wsgi_app: want a string"},
		{map[string]any{"workers": 0}, "-w/--workers"},
	} {
		_, err := Parse([]string{"-c", "x.py", "app"}, env(), fakeFile(t, tc.settings))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("settings %v: error %v, want %q", tc.settings, err, tc.want)
		}
	}
}
