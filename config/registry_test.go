package config

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gornhq/gorn/internal/testenv"
	"github.com/gornhq/gorn/worker"
)

// pythonDefaults runs the worker runtime's settings table (gorn_worker/config.py) and
// returns every setting's default, or "required" for the required ones.
func pythonDefaults(t *testing.T) map[string]any {
	t.Helper()
	script := `
import dataclasses, json, sys
sys.path.insert(0, "../worker/pyworker")
from gorn_worker.config import Settings
out = {}
for f in dataclasses.fields(Settings):
    if f.metadata["required"]:
        out[f.name] = "required"
    elif f.default_factory is not dataclasses.MISSING:
        out[f.name] = list(f.default_factory())
    else:
        out[f.name] = f.default
print(json.dumps(out))
`
	cmd := exec.Command(testenv.Python(t), "-c", script)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dumping the Python settings' defaults: %v", err)
	}
	var defaults map[string]any
	if err := json.Unmarshal(out, &defaults); err != nil {
		t.Fatalf("decoding %q: %v", out, err)
	}
	return defaults
}

// perWorkerKeys are the worker settings the spawner fills in (worker.Settings' fields).
func perWorkerKeys() []string {
	var keys []string
	st := reflect.TypeFor[worker.Settings]()
	for i := range st.NumField() {
		if tag, _, _ := strings.Cut(st.Field(i).Tag.Get("json"), ","); tag != "-" {
			keys = append(keys, tag)
		}
	}
	return keys
}

// TestWorkerSettingsMatchPython: the registry's worker keys, the spawner's per-worker
// fields and the app/server_software pair are exactly the Python runtime's settings, and
// each option's default is the runtime's default, as JSON.
func TestWorkerSettingsMatchPython(t *testing.T) {
	py := pythonDefaults(t)
	seen := map[string]string{"app": "the app", "server_software": "the version"}
	for _, k := range perWorkerKeys() {
		seen[k] = "the spawner"
	}
	c := defaults(t)
	for _, o := range Options() {
		if o.Worker == "" {
			continue
		}
		if prev, dup := seen[o.Worker]; dup {
			t.Errorf("worker key %s: option --%s and %s", o.Worker, o.Name, prev)
		}
		seen[o.Worker] = "--" + o.Name
		want, ok := py[o.Worker]
		if !ok {
			t.Errorf("option --%s: worker key %s is not a setting of gorn_worker/config.py", o.Name, o.Worker)
			continue
		}
		if o.Default == "" && o.DefaultHelp != "" {
			continue // computed at start (from the app, the terminal): no fixed default
		}
		got, _ := json.Marshal(o.workerValue(c))
		wantJS, _ := json.Marshal(want)
		if string(got) != string(wantJS) && !(isNumber(want) && numbersEqual(got, wantJS)) {
			t.Errorf("option --%s: default %s for the workers, gorn_worker/config.py says %s = %s", o.Name, got, o.Worker, wantJS)
		}
	}
	for k := range py {
		if _, ok := seen[k]; !ok {
			t.Errorf("gorn_worker/config.py setting %s has no registry option or spawner field", k)
		}
	}
	for k, by := range seen {
		if _, ok := py[k]; !ok {
			t.Errorf("%s sets worker key %s, which gorn_worker/config.py does not know", by, k)
		}
	}
}

func isNumber(v any) bool { _, ok := v.(float64); return ok }

func numbersEqual(a, b []byte) bool {
	var x, y float64
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && x == y
}

// defaults is the configuration with nothing set but the app.
func defaults(t *testing.T) *Config {
	t.Helper()
	c, err := Parse([]string{"app"}, func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestContractListsEveryWorkerKey: worker/CONTRACT.md documents every key the workers get.
func TestContractListsEveryWorkerKey(t *testing.T) {
	doc, err := os.ReadFile("../worker/CONTRACT.md")
	if err != nil {
		t.Fatal(err)
	}
	keys := append([]string{"app", "server_software"}, perWorkerKeys()...)
	for _, o := range Options() {
		if o.Worker != "" {
			keys = append(keys, o.Worker)
		}
	}
	for _, k := range keys {
		if !bytes.Contains(doc, []byte("| `"+k+"` |")) {
			t.Errorf("worker/CONTRACT.md has no row for worker key %s", k)
		}
	}
}

// TestWorkerSettingsJSON: what a worker receives carries every option's key once, with
// the configuration's values, beside the spawner's fields.
func TestWorkerSettingsJSON(t *testing.T) {
	c, err := Parse([]string{"--keep-alive", "0.5", "-c", "conf.py", "--access-logfile", "-", "--pythonpath", "a,b", "app:x"},
		func(string) string { return "" }, func(string, string) (*FileSettings, error) { return &FileSettings{}, nil })
	if err != nil {
		t.Fatal(err)
	}
	s := WorkerSettings(c, "gorn/test")
	s.Slot, s.ListenFDs = 2, []int{3}
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(js, &got); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	for k, want := range map[string]any{
		"app": "app:x", "server_software": "gorn/test", "keepalive": 0.5, "access_log": "-", "slot": 2.0,
		"pythonpath": []any{"a", "b"}, "config_file": wd + "/conf.py", "umask": -1.0, "proc_name": "app:x",
		"forwarded_allow_ips": []any{"127.0.0.1", "::1"}, "limit_request_field_size": 8190.0,
	} {
		if !reflect.DeepEqual(got[k], want) {
			t.Errorf("%s = %#v, want %#v (all: %s)", k, got[k], want, js)
		}
	}
	if got := WorkerSettings(defaults(t), "x").Options; got["access_log"] != nil || got["config_file"] != nil {
		t.Errorf("unset access log and config file: %v %v, want null", got["access_log"], got["config_file"])
	}
	s.Options["slot"] = 9
	if _, err := json.Marshal(s); err == nil {
		t.Error("an option named like a per-worker field encoded without an error")
	}
}

// TestHelpListsEveryOption: --help names every flag spelling a user would look for and
// every default that is not computed at start.
func TestHelpListsEveryOption(t *testing.T) {
	var b strings.Builder
	Usage(&b)
	help := b.String()
	for _, o := range Options() {
		line := "\n      --" + o.Name
		if o.Short != "" {
			line = "\n  -" + o.Short + ", --" + o.Name
		}
		i := strings.Index(help, line+" ")
		if i < 0 {
			i = strings.Index(help, line+"\n")
		}
		if i < 0 {
			t.Errorf("--help lacks %q", line)
			continue
		}
		entry := help[i+1:]
		if next := strings.Index(entry, "\n  -"); next >= 0 {
			entry = entry[:next+1]
		}
		if d := o.defaultNote(); d != "" && !strings.Contains(strings.Join(strings.Fields(entry), " "), "("+d+")") {
			t.Errorf("--help for --%s does not state its default %q:\n%s", o.Name, d, entry)
		}
	}
	for _, line := range strings.Split(help, "\n") {
		if len(line) > helpColumn+helpWidth+1 {
			t.Errorf("--help line longer than %d: %q", helpColumn+helpWidth, line)
		}
	}
}

// TestRegistryIsConsistent: one spelling per flag, a field per option, kinds that match
// their fields, defaults that parse, and a worker key for no action.
func TestRegistryIsConsistent(t *testing.T) {
	seen := map[string]string{}
	c := &Config{sources: map[string]string{}}
	fields := map[any]string{}
	for _, o := range Options() {
		for _, f := range o.flags() {
			if prev, dup := seen[f]; dup {
				t.Errorf("flag %s: options %s and %s", f, prev, o.Name)
			}
			seen[f] = o.Name
		}
		if o.field == nil || o.Help == "" {
			t.Errorf("option %s: no field or no help", o.Name)
			continue
		}
		p := o.field(c)
		if prev, dup := fields[p]; dup {
			t.Errorf("options %s and %s share a field", prev, o.Name)
		}
		fields[p] = o.Name
		want := map[Kind]reflect.Type{
			String: reflect.TypeFor[*string](), Int: reflect.TypeFor[*int](), Bool: reflect.TypeFor[*bool](),
			Seconds: reflect.TypeFor[*time.Duration](), List: reflect.TypeFor[*[]string](), CommaList: reflect.TypeFor[*[]string](),
			Mode: reflect.TypeFor[*int](), CPUs: reflect.TypeFor[*float64](), Bytes: reflect.TypeFor[*int64](), Action: reflect.TypeFor[*bool](),
		}[o.Kind]
		if reflect.TypeOf(p) != want {
			t.Errorf("option %s: kind %d with a %T field", o.Name, o.Kind, p)
		}
		if o.Kind == Action && (o.Worker != "" || !o.NotInFile) {
			t.Errorf("action %s: in the workers' settings or settable from a file", o.Name)
		}
		if o.Min != 0 && o.Kind != Int {
			t.Errorf("option %s: Min on a non-integer", o.Name)
		}
	}
}

// TestStartOnlyChanges: a HUP that changes a start-only setting is told which; the others
// apply silently.
func TestStartOnlyChanges(t *testing.T) {
	parse := func(args ...string) *Config {
		c, err := Parse(append(args, "app"), func(string) string { return "" }, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	running := parse("-b", "127.0.0.1:1", "--backlog", "10", "-t", "5")
	next := parse("-b", "127.0.0.1:1", "-b", "127.0.0.1:2", "--backlog", "10", "-t", "9", "--metrics-bind", ":9")
	got := StartOnlyChanges(running, next)
	want := []Change{{"bind", "127.0.0.1:1", "127.0.0.1:1,127.0.0.1:2"}, {"metrics-bind", "", ":9"}}
	if !slices.Equal(got, want) {
		t.Errorf("changes %+v, want %+v", got, want)
	}
	if got := StartOnlyChanges(running, running); len(got) != 0 {
		t.Errorf("no change: %+v", got)
	}
}

// TestPrintConfig: one line per setting, by gunicorn's names, with resolved values.
func TestPrintConfig(t *testing.T) {
	c, err := Parse([]string{"-w", "3", "-t", "2.5", "-b", "127.0.0.1:1", "-b", "unix:/x", "app:app"}, func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	Print(&b, c)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	for _, want := range []string{"workers = 3", "timeout = 2.5", "bind = 127.0.0.1:1,unix:/x", "wsgi_app = app:app", "accesslog = ", "keepalive = 75"} {
		if !slices.Contains(lines, want) {
			t.Errorf("--print-config lacks %q:\n%s", want, b.String())
		}
	}
	if !slices.IsSorted(lines) {
		t.Errorf("--print-config is not sorted")
	}
}

// TestEnvironmentLayers: each variable of the registry sets its option beneath the config
// file, $GORN_CMD_ARGS and the command line, and Source says which layer won.
func TestEnvironmentLayers(t *testing.T) {
	for _, o := range Options() {
		if o.Env == "" {
			continue
		}
		value := map[string]string{"WEB_CONCURRENCY": "3", "GORN_CPUS": "1.5", "SCRIPT_NAME": "/p", "FORWARDED_ALLOW_IPS": "10.0.0.1"}[o.Env]
		if value == "" {
			t.Fatalf("no test value for $%s", o.Env)
		}
		getenv := func(k string) string {
			if k == o.Env {
				return value
			}
			return ""
		}
		c, err := Parse([]string{"app"}, getenv, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := o.value(c); got != value || c.Source(o.Name) != "$"+o.Env {
			t.Errorf("$%s=%s: --%s = %q from %q", o.Env, value, o.Name, got, c.Source(o.Name))
		}
		other := map[string]string{"workers": "4", "cpus": "2", "root-path": "/q", "forwarded-allow-ips": "10.0.0.2"}[o.Name]
		c, err = Parse([]string{"--" + o.Name, other, "app"}, getenv, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := o.value(c); got != other || c.Source(o.Name) != layerArgs {
			t.Errorf("--%s %s over $%s: %q from %q", o.Name, other, o.Env, got, c.Source(o.Name))
		}
	}
}
