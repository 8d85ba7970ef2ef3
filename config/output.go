package config

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

const usageHead = `usage: gorn [OPTIONS] MODULE[:VARIABLE]
       gorn limits [--json] [--worker-class CLASS] [--cpus N]
       gorn bench [--cpus N] [--workers 1..8] ... MODULE:APP   (see gorn bench --help)

Serve a WSGI application with supervised pre-forked Python workers.
VARIABLE defaults to "application" and may be a factory call: app:create_app().
Options may also come from a Python config file and $GORN_CMD_ARGS (else
$GUNICORN_CMD_ARGS); the command line wins, then the environment, then the file.

`

const usageTail = `
Other gunicorn flags are accepted with a warning, or refused when ignoring them would serve
something else (TLS, --proxy-protocol, --paste, --daemon).
`

// helpColumn is where the help text starts on an option's line; helpWidth is the most
// text on one line after it.
const (
	helpColumn = 31
	helpWidth  = 61
)

// wrap breaks s into lines of at most width bytes at spaces.
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		if line != "" && len(line)+1+len(word) > width {
			lines, line = append(lines, line), ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	return append(lines, line)
}

// Usage writes --help: one entry per option of the registry, in its order.
func Usage(w io.Writer) {
	var b strings.Builder
	b.WriteString(usageHead)
	for _, o := range Options() {
		head := "      --" + o.Name
		if o.Short != "" {
			head = "  -" + o.Short + ", --" + o.Name
		}
		if o.Arg != "" {
			head += " " + o.Arg
		}
		var lines []string
		for _, line := range strings.Split(o.Help, "\n") {
			lines = append(lines, wrap(line, helpWidth)...)
		}
		if d := o.defaultNote(); d != "" {
			if last := lines[len(lines)-1]; len(last)+len(d)+3 > helpWidth {
				lines = append(lines, wrap("("+d+")", helpWidth)...)
			} else {
				lines[len(lines)-1] = last + " (" + d + ")"
			}
		}
		for i, line := range lines {
			if i > 0 {
				head = ""
			}
			if len(head) < helpColumn {
				head += strings.Repeat(" ", helpColumn-len(head))
			} else {
				head += " "
			}
			b.WriteString(head + line + "\n")
		}
	}
	b.WriteString(usageTail)
	fmt.Fprint(w, b.String())
}

// defaultNote is how --help states the default: "30", "default $WEB_CONCURRENCY, else
// sized from ...", or "" when there is nothing to say (no value, or a flag).
func (o *Option) defaultNote() string {
	d := o.DefaultHelp
	if d == "" && o.Kind != Bool && o.Kind != Action {
		d = o.Default
	}
	switch {
	case o.Env != "" && d != "":
		return "default $" + o.Env + ", else " + d
	case o.Env != "":
		return "default $" + o.Env
	case o.DefaultHelp != "":
		return "default " + d
	}
	return d
}

// Print writes the resolved settings, one "name = value" line each, sorted, by gunicorn's
// setting names where gorn has them (gunicorn's --print-config).
func Print(w io.Writer, c *Config) {
	lines := []string{"wsgi_app = " + c.App}
	for _, o := range Options() {
		if o.Kind == Action {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s = %s", o.Setting(), o.value(c)))
	}
	sort.Strings(lines)
	fmt.Fprintln(w, strings.Join(lines, "\n"))
}

// Change is a start-only setting that a re-read configuration changed.
type Change struct {
	Setting, Running, Configured string
}

// StartOnlyChanges lists the settings that apply only at start (the sockets, the
// interpreter, the master's own logs and metrics endpoint) and differ between the
// running configuration and the next one: a HUP warns about them, a restart or USR2
// applies them.
func StartOnlyChanges(running, next *Config) []Change {
	var out []Change
	for _, o := range Options() {
		if !o.Start {
			continue
		}
		if was, now := o.value(running), o.value(next); was != now {
			out = append(out, Change{o.Name, was, now})
		}
	}
	return out
}
