package config

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestEveryGunicornSettingIsKnown: each of gunicorn's settings is a registry option (by
// its gunicorn name), a hook, or a known gap in the compat table (warned about or
// refused), never silently ignored; and every gunicorn name gorn claims is gunicorn's.
func TestEveryGunicornSettingIsKnown(t *testing.T) {
	data, err := os.ReadFile("testdata/gunicorn_settings.txt")
	if err != nil {
		t.Fatal(err)
	}
	gunicorn := map[string]bool{}
	for _, name := range strings.Split(string(data), "\n") {
		if name != "" && !strings.HasPrefix(name, "#") {
			gunicorn[name] = true
		}
	}
	if len(gunicorn) < 100 {
		t.Fatalf("only %d settings read", len(gunicorn))
	}
	known := map[string]string{"wsgi_app": "the app", "default_proc_name": "gunicorn-internal"}
	claim := func(name, by string) {
		if prev, dup := known[name]; dup {
			t.Errorf("gunicorn setting %s is claimed twice: %s and %s", name, prev, by)
		}
		known[name] = by
	}
	for _, o := range Options() {
		if o.Gunicorn != "" {
			claim(o.Gunicorn, "option --"+o.Name)
		}
	}
	for _, u := range unimplementedSettings() {
		claim(u.setting, "the compat table")
	}
	for _, h := range slices.Concat(MasterHooks(), UnsupportedHooks(), WorkerHooks()) {
		claim(h, "a hook")
	}
	for _, s := range WorkerFileSettings() {
		claim(s, "the workers' reading of the config file")
	}
	for name := range gunicorn {
		if _, ok := known[name]; !ok {
			t.Errorf("gunicorn setting %s is unknown to gorn", name)
		}
	}
	for name, by := range known {
		if !gunicorn[name] {
			t.Errorf("%s names %s, which is not a gunicorn setting", by, name)
		}
	}
}

// TestConfigFileNames: a config file sets an option by its gunicorn name or by any long
// flag with "_" for "-", and a gunicorn name is not another option's flag.
func TestConfigFileNames(t *testing.T) {
	options := Options()
	for _, o := range options {
		names := []string{o.Setting()}
		for _, f := range append([]string{o.Name}, o.Aliases...) {
			names = append(names, strings.ReplaceAll(f, "-", "_"))
		}
		for _, n := range names {
			if got := fileOption(options, n); got == nil || got.Name != o.Name {
				t.Errorf("config-file name %s: option %v, want --%s", n, got, o.Name)
			}
		}
	}
}

// TestUnimplementedFlagsAreAccepted: a gunicorn command line with settings gorn does not
// implement still parses (one warning each), and the refused ones name the reason.
func TestUnimplementedFlagsAreAccepted(t *testing.T) {
	for _, u := range unimplementedSettings() {
		for _, f := range u.flags {
			args := []string{"-" + f}
			if len(f) > 1 {
				args[0] = "--" + f
			}
			if !u.isBool {
				args = append(args, "value")
			}
			c, err := Parse(append(args, "app"), env(), nil)
			switch {
			case u.refuse && (err == nil || !strings.Contains(err.Error(), u.why)):
				t.Errorf("%v: error %v, want a refusal saying %q", args, err, u.why)
			case !u.refuse && (err != nil || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], u.why)):
				t.Errorf("%v: %v, warnings %q; want one warning saying %q", args, err, c.Warnings, u.why)
			}
		}
	}
}

// TestReadmeListsEveryUnimplementedSetting: the README's "Where gorn differs from
// gunicorn" names every gunicorn setting gorn does not implement, so the list stays whole
// as settings are implemented or added.
func TestReadmeListsEveryUnimplementedSetting(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	start := strings.Index(text, "### Where gorn differs from gunicorn")
	end := strings.Index(text, "### Exit codes")
	if start < 0 || end < start {
		t.Fatal("README has no differences section before Exit codes")
	}
	section := text[start:end]
	for _, u := range unimplementedSettings() {
		if !strings.Contains(section, "`"+u.setting+"`") && !(strings.HasPrefix(u.setting, "http2_") && strings.Contains(section, "`http2_*`")) {
			t.Errorf("README's differences do not name %s (%s)", u.setting, u.why)
		}
	}
	for _, implemented := range []string{"statsd_host", "logconfig_dict"} {
		if _, ok := unimplementedSetting(implemented); ok {
			t.Errorf("%s is implemented but still in the compat table", implemented)
		}
	}
}
