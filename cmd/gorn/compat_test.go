package main

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// workerHooks are the gunicorn server hooks the workers run (gorn_worker/conffile.py).
var workerHooks = []string{"post_fork", "post_worker_init", "pre_request", "post_request", "worker_int", "worker_exit"}

// TestEveryGunicornSettingIsKnown: each of gunicorn's settings is a gorn flag, a hook the
// workers run, or a known gap (warned about or refused), never silently ignored.
func TestEveryGunicornSettingIsKnown(t *testing.T) {
	data, err := os.ReadFile("testdata/gunicorn_settings.txt")
	if err != nil {
		t.Fatal(err)
	}
	fs := newFlagSet(&Config{}, &rawFlags{})
	n := 0
	for _, name := range strings.Split(string(data), "\n") {
		if name == "" || strings.HasPrefix(name, "#") {
			continue
		}
		n++
		flagName, ok := gunicornNames[name]
		if !ok {
			flagName = strings.ReplaceAll(name, "_", "-")
		}
		switch {
		case name == "wsgi_app" || name == "default_proc_name": // the app; gunicorn-internal
		case unimplementedSetting(name) != nil:
		case slices.Contains(masterHooks, name) || slices.Contains(workerHooks, name):
		case fs.Lookup(flagName) != nil:
		default:
			t.Errorf("gunicorn setting %s is unknown to gorn", name)
		}
	}
	if n < 100 {
		t.Fatalf("only %d settings read", n)
	}
}

// TestUnimplementedFlagsAreAccepted: a gunicorn command line with settings gorn does not
// implement still parses (one warning each), and the refused ones name the reason.
func TestUnimplementedFlagsAreAccepted(t *testing.T) {
	for _, u := range unimplementedSettings {
		for _, f := range u.flags {
			args := []string{"-" + f}
			if len(f) > 1 {
				args[0] = "--" + f
			}
			if !u.isBool {
				args = append(args, "value")
			}
			c, err := parseConfig(append(args, "app"), env(), nil)
			switch {
			case u.refuse && (err == nil || !strings.Contains(err.Error(), u.why)):
				t.Errorf("%v: error %v, want a refusal saying %q", args, err, u.why)
			case !u.refuse && (err != nil || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], u.why)):
				t.Errorf("%v: %v, warnings %q; want one warning saying %q", args, err, c.Warnings, u.why)
			}
		}
	}
}
