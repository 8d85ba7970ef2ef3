// Package config is gorn's option registry and its configuration layering. Each option is
// one entry in Options: its flags, gunicorn's setting name, type, default, help, validation,
// whether a HUP applies it and its key in the workers' settings. The flag set, --help, the
// config-file mapping, --print-config, the environment layers, the start-only check on HUP
// and the workers' settings are all derived from that table, as gunicorn derives its CLI
// and docs from one Setting per option.
package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/gornhq/gorn/internal/sizing"
)

// Kind is how an option's value is written and stored.
type Kind int

// The kinds of option values.
const (
	String    Kind = iota // string
	Int                   // int: a whole number
	Bool                  // bool: a flag without a value
	Seconds               // time.Duration given in (fractional) seconds, as gunicorn's
	List                  // []string: a repeatable flag
	CommaList             // []string: one comma-separated value
	Mode                  // int: an octal file mode such as 022; -1 = not set
	CPUs                  // float64: a CPU count such as 1.5 or 1500m
	Bytes                 // int64: a memory size such as 512M or 1.5GiB (sizing.ParseBytes)
	Action                // bool: an action (help, version) rather than a setting
)

// Option is one registry entry.
type Option struct {
	Name     string   // the long flag, without "--"
	Short    string   // the one-letter flag, "" if none
	Aliases  []string // other long spellings accepted (gunicorn's)
	Gunicorn string   // gunicorn's setting name; "" for gorn's own options
	Kind     Kind
	Arg      string // the value's name in --help
	// Default is the value when no layer sets one, written as on the command line.
	Default string
	// DefaultHelp is what --help says about a default computed at start (or too long to
	// show); the Python runtime's default is not compared for such options.
	DefaultHelp string
	// Env is an environment variable that supplies the value beneath every other layer
	// (gunicorn's WEB_CONCURRENCY, SCRIPT_NAME, FORWARDED_ALLOW_IPS).
	Env   string
	Help  string // --help text; lines separated by "\n"
	Min   int    // Int: the smallest value allowed once some layer set it
	Start bool   // applied only at start: a HUP that changes it gets a warning
	// NotInFile options choose or act on the config file, or are actions: a config file
	// cannot set them.
	NotInFile bool
	// Worker is the option's key in the workers' settings ($GORN_WORKER,
	// worker/CONTRACT.md); "" for the master's own options.
	Worker string

	field  func(*Config) any                // pointer to the Config field holding the value
	check  func(*Config, Environment) error // validation and derived values, after layering
	worker func(*Config) any                // the workers' value, when not the field's own
}

// Environment is the process environment, injected so tests control it.
type Environment func(string) string

// FlagNames is how messages name the option: "-w/--workers" or "--backlog".
func (o *Option) FlagNames() string {
	if o.Short != "" {
		return "-" + o.Short + "/--" + o.Name
	}
	return "--" + o.Name
}

// Setting is the option's name in a config file and in --print-config: gunicorn's name,
// else the long flag with "_" for "-".
func (o *Option) Setting() string {
	if o.Gunicorn != "" {
		return o.Gunicorn
	}
	return strings.ReplaceAll(o.Name, "-", "_")
}

// flags are every command-line spelling of the option.
func (o *Option) flags() []string {
	names := []string{o.Name}
	if o.Short != "" {
		names = append(names, o.Short)
	}
	return append(names, o.Aliases...)
}

// set parses v into the option's field of c.
func (o *Option) set(c *Config, v string, appendList bool) error {
	switch p := o.field(c).(type) {
	case *string:
		*p = v
	case *bool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("want true or false")
		}
		*p = b
	case *int:
		if o.Kind == Mode {
			m, err := strconv.ParseUint(v, 0, 32) // 022 and 0o022 are octal
			if err != nil || m > 0o777 {
				return errors.New("want an octal mode such as 022 or 0o022")
			}
			*p = int(m)
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return errors.New("want a whole number")
		}
		*p = n
	case *int64:
		n, err := sizing.ParseBytes(v)
		if err != nil {
			return errors.New("want a size such as 512M or 1.5GiB (K, M, G: powers of 1024), or bytes")
		}
		*p = n
	case *float64:
		f, err := sizing.ParseCPUs(v)
		if err != nil || f <= 0 {
			return errors.New("want a number of CPUs > 0, e.g. 1.5 or 1500m")
		}
		*p = f
	case *time.Duration:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			return errors.New("want a number of seconds >= 0")
		}
		*p = time.Duration(f * float64(time.Second))
	case *[]string:
		if o.Kind == List {
			if !appendList {
				*p = nil
			}
			*p = append(*p, v)
			return nil
		}
		*p = nil
		for _, item := range strings.Split(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				*p = append(*p, item)
			}
		}
	default:
		panic(fmt.Sprintf("config: option %s: unsupported field type %T", o.Name, p))
	}
	return nil
}

// value is the option's value as --print-config and the start-only check show it.
func (o *Option) value(c *Config) string {
	switch p := o.field(c).(type) {
	case *time.Duration:
		return strconv.FormatFloat(p.Seconds(), 'f', -1, 64)
	case *[]string:
		return strings.Join(*p, ",")
	case *int:
		if o.Kind == Mode && *p >= 0 {
			return fmt.Sprintf("0o%03o", *p)
		}
		return strconv.Itoa(*p)
	case *float64:
		return strconv.FormatFloat(*p, 'f', -1, 64)
	default:
		return fmt.Sprint(reflectElem(p))
	}
}

// workerValue is the option's value in the workers' settings JSON.
func (o *Option) workerValue(c *Config) any {
	if o.worker != nil {
		return o.worker(c)
	}
	switch p := o.field(c).(type) {
	case *time.Duration:
		return p.Seconds()
	case *[]string:
		return append([]string{}, *p...) // [] rather than null, and not aliased
	default:
		return reflectElem(p)
	}
}

func reflectElem(p any) any {
	switch p := p.(type) {
	case *string:
		return *p
	case *bool:
		return *p
	case *int:
		return *p
	case *float64:
		return *p
	case *int64:
		return *p
	}
	panic(fmt.Sprintf("config: unsupported field type %T", p))
}

// fromEnv reports whether the option's value came from its environment variable.
func (o *Option) fromEnv(c *Config) bool {
	return o.Env != "" && c.Source(o.Name) == "$"+o.Env
}

// minCheck enforces Min on an Int option once some layer set it.
func (o *Option) minCheck(c *Config) error {
	p, ok := o.field(c).(*int)
	if !ok || o.Kind != Int || c.Source(o.Name) == "" || *p >= o.Min {
		return nil
	}
	if o.fromEnv(c) {
		return usagef("%s=%d: want a whole number >= %d", o.Env, *p, o.Min)
	}
	return usagef("%s %d: want a whole number >= %d", o.FlagNames(), *p, o.Min)
}
