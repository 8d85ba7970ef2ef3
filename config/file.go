package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// FileSettings is what a config file set, as the runtime's evaluator reports it: plain
// values by name, and the names bound to functions (gunicorn's server hooks) or to values
// of other types.
type FileSettings struct {
	Settings  map[string]json.RawMessage `json:"settings"`
	Callables []string                   `json:"callables"`
	Other     []string                   `json:"other"`
	Error     string                     `json:"error"`
}

// fileLayer is a config file turned into command-line arguments, parsed beneath
// $GORN_CMD_ARGS and the command line.
type fileLayer struct {
	args     []string
	app      string // wsgi_app: the application when the command line names none
	warnings []string
	hooks    []string // master-side hooks it defines
}

// fileOption finds the option a config-file name sets: gunicorn's setting name, or any
// long flag with "_" for "-" (max_requests); nil if none.
func fileOption(options []Option, name string) *Option {
	for i := range options {
		o := &options[i]
		if o.Gunicorn == name {
			return o
		}
		for _, f := range append([]string{o.Name}, o.Aliases...) {
			if strings.ReplaceAll(f, "-", "_") == name {
				return o
			}
		}
	}
	return nil
}

func newFileLayer(options []Option, source string, f *FileSettings) (*fileLayer, error) {
	l := &fileLayer{}
	var given []unimplemented
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
		if u, ok := unimplementedSetting(name); ok {
			if setsUnimplemented(u, string(raw)) {
				given = append(given, u)
			}
			continue
		}
		o := fileOption(options, name)
		if o == nil || o.NotInFile {
			continue // not a setting: gunicorn ignores such names too
		}
		values, err := settingValues(raw)
		if err != nil {
			return nil, fmt.Errorf("config file %s: %s: %w", source, name, err)
		}
		if o.Kind != List && len(values) > 1 {
			values = []string{strings.Join(values, ",")}
		}
		for _, v := range values {
			l.args = append(l.args, "--"+o.Name+"="+v)
		}
	}
	for _, name := range f.Callables {
		if slices.Contains(MasterHooks(), name) {
			l.hooks = append(l.hooks, name)
		}
		if slices.Contains(UnsupportedHooks(), name) {
			l.warnings = append(l.warnings, fmt.Sprintf("config file %s: server hook %s is not supported by gorn; ignored", source, name))
		}
	}
	for _, name := range f.Other {
		if slices.Contains(WorkerFileSettings(), name) {
			continue
		}
		if u, ok := unimplementedSetting(name); ok {
			given = append(given, u)
		} else if fileOption(options, name) != nil {
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
		return nil, fmt.Errorf("decoding the value: %w", err)
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

// WorkerFileSettings are the config-file settings that are not flags (dicts, in gunicorn)
// and that the workers read themselves when they evaluate the file for its hooks.
func WorkerFileSettings() []string {
	return []string{"secure_scheme_headers", "logconfig_dict"}
}
