package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// UsageError is a bad command line or setting: one line on stderr, exit 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, args ...any) error {
	return &UsageError{fmt.Sprintf(format, args...)}
}

// Layers, low to high precedence, as gunicorn's. A layer's name is what Config.Source says.
const (
	layerFile = "config file "
	layerArgs = "command line"
)

// parser holds one parse: the Config being filled, the registry and the layer being read.
type parser struct {
	c       *Config
	options []Option
	layer   string
	given   []unimplemented // gunicorn-only flags given
	bad     error           // the last value an option refused, named as the user wrote it
}

// optionValue is one option's flag.Value: it parses into the option's Config field and
// records the layer that set it.
type optionValue struct {
	p *parser
	o *Option
}

func (v optionValue) String() string   { return "" }
func (v optionValue) IsBoolFlag() bool { return v.o.Kind == Bool || v.o.Kind == Action }
func (v optionValue) Set(s string) error {
	// A repeatable option set by a lower layer is replaced, not extended, by the next
	// layer's first value, as gunicorn's command line overrides its config file.
	appendList := v.p.c.sources[v.o.Name] == v.p.layer
	if err := v.o.set(v.p.c, s, appendList); err != nil {
		v.p.bad = fmt.Errorf("%s %q: %w", v.o.FlagNames(), s, err)
		return err
	}
	v.p.c.sources[v.o.Name] = v.p.layer
	return nil
}

func newParser() *parser {
	p := &parser{c: &Config{sources: map[string]string{}}, options: Options()}
	for i := range p.options {
		o := &p.options[i]
		if o.Kind == Mode && o.Default == "-1" {
			*(o.field(p.c).(*int)) = -1 // "not set" is not a mode the flag accepts
		} else if o.Default != "" {
			if err := o.set(p.c, o.Default, false); err != nil {
				panic(fmt.Sprintf("config: option %s: default %q: %v", o.Name, o.Default, err))
			}
		}
	}
	return p
}

// flagSet is the registry's command line, plus gunicorn's flags that gorn does not
// implement (recorded in p.given).
func (p *parser) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("gorn", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for i := range p.options {
		o := &p.options[i]
		for _, name := range o.flags() {
			fs.Var(optionValue{p, o}, name, o.Help)
		}
	}
	for _, u := range unimplementedSettings() {
		for _, name := range u.flags {
			// --proxy-protocol takes an optional value (v1, v2, auto): as a bool flag it
			// accepts both the bare flag and --proxy-protocol=v2.
			fs.Var(unimplementedFlag{&p.given, u}, name, u.why)
		}
	}
	return fs
}

// parseError is a flag-set error as one line: a refused value names the option's flags
// and says what it wants. Go's flag package spells every flag with one dash ("flag needs
// an argument: -workers"); gorn's messages spell them as --help does ("-w/--workers").
func (p *parser) parseError(where string, err error) error {
	if p.bad != nil {
		return usagef("%s%v", where, p.bad)
	}
	msg := err.Error()
	for _, f := range []struct{ flagPkg, gorn string }{
		{"flag needs an argument: -", "%s needs a value"},
		{"flag provided but not defined: -", "unknown option %s"},
		{"bad flag syntax: ", "bad option syntax: %s"},
	} {
		if name, ok := strings.CutPrefix(msg, f.flagPkg); ok {
			if f.flagPkg != "bad flag syntax: " {
				name = p.flagNames(name)
			}
			return usagef("%s"+f.gorn, where, name)
		}
	}
	return usagef("%s%s", where, msg)
}

// flagNames spells the flag called name as --help does: "-w/--workers" for -w or
// --workers, "--NAME" for a long flag, "-N" for an unknown one-letter one.
func (p *parser) flagNames(name string) string {
	for i := range p.options {
		if slices.Contains(p.options[i].flags(), name) {
			return p.options[i].FlagNames()
		}
	}
	for _, u := range unimplementedSettings() {
		if slices.Contains(u.flags, name) {
			return u.flagNames()
		}
	}
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// fromEnvironment applies the environment variables that supply defaults (the lowest
// layer).
func (p *parser) fromEnvironment(getenv Environment) error {
	for i := range p.options {
		o := &p.options[i]
		if o.Env == "" {
			continue
		}
		v := getenv(o.Env)
		if v == "" {
			continue
		}
		p.layer = "$" + o.Env
		if err := (optionValue{p, o}).Set(v); err != nil {
			return usagef("%s=%q: %v", o.Env, v, err)
		}
	}
	return nil
}

// Loader evaluates a config file source (PATH, file:PATH or python:MODULE) with the given
// interpreter.
type Loader func(python, source string) (*FileSettings, error)

// Parse turns arguments, environment and the config file (evaluated by load; nil reads
// none) into a validated Config. Precedence, low to high, as gunicorn's: defaults, the
// environment variables of the registry, the config file, $GORN_CMD_ARGS (else
// $GUNICORN_CMD_ARGS), the command line.
func Parse(args []string, getenv Environment, load Loader) (*Config, error) {
	p := newParser()
	c := p.c
	fs := p.flagSet()
	if err := p.fromEnvironment(getenv); err != nil {
		return nil, err
	}
	var file *fileLayer
	if source, python := findSource(args, getenv); source != "" && load != nil {
		f, err := load(python, source)
		if err != nil {
			return nil, err
		}
		if file, err = newFileLayer(p.options, source, f); err != nil {
			return nil, err
		}
		p.layer = layerFile + source
		if err := fs.Parse(file.args); err != nil {
			return nil, p.parseError("config file "+source+": ", err)
		}
		c.ConfigFile, c.Warnings, c.MasterHooks = source, file.warnings, file.hooks
	}
	// Options from the environment next ($GORN_CMD_ARGS, else $GUNICORN_CMD_ARGS, so a
	// gunicorn deployment keeps working); the command line overrides them.
	words, name, err := cmdArgs(getenv)
	if err != nil {
		return nil, usagef("$%s: %v", name, err)
	}
	if name != "" {
		p.layer = "$" + name
		if err := fs.Parse(words); err != nil {
			return nil, p.parseError("$"+name+": ", err)
		}
		if fs.NArg() > 0 {
			return nil, usagef("$%s: options only, found %q", name, fs.Arg(0))
		}
	}
	p.layer = layerArgs
	positional, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		c.Help = true
		return c, nil
	}
	if err != nil {
		return nil, p.parseError("", err)
	}
	if c.Help || c.Version {
		return c, nil
	}
	if err := applyUnimplemented(p.given, "", &c.Warnings); err != nil {
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
	for i := range p.options {
		o := &p.options[i]
		if err := o.minCheck(c); err != nil {
			return nil, err
		}
		if o.check != nil {
			if err := o.check(c, getenv); err != nil {
				return nil, err
			}
		}
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

// cmdArgs returns the words of $GORN_CMD_ARGS, else $GUNICORN_CMD_ARGS, and the name of
// the variable they came from ("" if neither is set).
func cmdArgs(getenv Environment) ([]string, string, error) {
	for _, name := range []string{"GORN_CMD_ARGS", "GUNICORN_CMD_ARGS"} {
		if v := getenv(name); v != "" {
			words, err := splitWords(v)
			return words, name, err
		}
	}
	return nil, "", nil
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

// findSource is the config file to read: -c from the command line or $GORN_CMD_ARGS, else
// the first default file that exists, and the interpreter to evaluate it with. The flags
// are parsed on a throwaway Config only to find them; errors are left for the real parse
// to report.
func findSource(args []string, getenv Environment) (source, python string) {
	p := newParser()
	fs := p.flagSet()
	if words, name, err := cmdArgs(getenv); err == nil && name != "" {
		_ = fs.Parse(words)
	}
	_, _ = parseInterspersed(fs, args)
	c := p.c
	python = defaultPython(c.Python, getenv)
	if c.Help || c.Version {
		return "", python
	}
	if c.ConfigFile != "" {
		return c.ConfigFile, python
	}
	// gunicorn reads ./gunicorn.conf.py, so a gunicorn deployment keeps its settings.
	for _, f := range []string{"gorn.conf.py", "gunicorn.conf.py"} {
		if st, err := os.Stat(f); err == nil && !st.IsDir() {
			return f, python
		}
	}
	return "", python
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
