package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gornhq/gorn/internal/bench"
	"github.com/gornhq/gorn/internal/loadgen"
	"github.com/gornhq/gorn/internal/sizing"
	"github.com/gornhq/gorn/master"
)

const benchUsage = `usage: gorn bench [flags] MODULE:APP [-- GORN FLAGS...]

Measure how many workers your app should run. gorn bench starts gorn itself on
127.0.0.1 (a free port) inside a CPU limit it creates, once per worker count (or pod
layout), loads it from outside the limit with its own load generator, and prints
req/s, latency percentiles, CPU used against the limit, throttling and memory (PSS) for
each run, the count gorn picks by itself, and a recommendation.

What to run:
  --cpus N               the CPU limit of each run, e.g. 1.5 or 1500m (default 1)
  --workers LIST         worker counts: 4, 1..8 or 1,2,4 (default: gorn's own choice -2..+2)
  -k, --worker-class L   worker classes, comma-separated (default sync)
  --threads N            threads for gthread workers
  --layouts LIST         pod layouts instead of worker counts: "1x2,2x1" is one pod of
                         2 CPUs, then two pods of 1 CPU each; every pod is a gorn in its
                         own limit that sizes itself, and the load is spread over them
  --isolation MODE       auto (a cgroup when root, else affinity), cgroup or affinity.
                         A cgroup quota (v1 or v2) is what a pod's CPU limit is. The
                         affinity fallback pins the server to whole CPUs: weaker, since
                         1.5 CPUs become 2, there is no throttling to read, and the load
                         generator may share those CPUs; the report says which was used.

The load (only ever to the servers it starts on 127.0.0.1):
  --url SPEC             a request: "[WEIGHT] [METHOD] PATH [BODY_BYTES]", repeatable,
                         e.g. --url "3 /json" --url "1 POST /echo 512" (default GET /)
  --urls FILE            one SPEC per line (# comments)
  --requests FILE        replay an access log (gorn's or gunicorn's default format, or
                         gorn's json): requests are drawn from its lines; POST/PUT/PATCH
                         bodies are synthesized to the logged byte count (access logs do
                         not record request bodies: the size is an approximation)
  --connections N        concurrent connections (default 32)
  --rate R               open loop: R requests/s whatever the answers, latency counted
                         from when each was due (no coordinated omission); 0 = closed loop
  --no-keepalive         send Connection: close on every request
  --duration D           measured time per run (default 5s, at most 10m)
  --warmup D             load before measuring, per run (default 1s)
  --repeats N            runs per configuration (default 1)
  --request-limit N      at most N requests per run (default 10000000)

Output:
  --json                 one JSON object instead of the table
  --chart FILE.svg       also draw req/s and p99 against workers (or layouts) into
                         an SVG file
  A progress line is shown while running when stderr is a terminal.

Serving flags passed to gorn: --chdir DIR, --python PATH, -c/--config FILE,
--pythonpath P, -e/--env K=V, --timeout S, --worker-connections N, --preload; any other
gorn flag after "--". Ctrl-C stops the run in progress, removes its cgroups and processes
and prints what was measured. Exit status 2 for bad input.
`

// runBench implements `gorn bench`; it returns the exit code.
func runBench(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "gorn bench: error: finding the gorn binary: %v\n", err)
		return master.ExitError
	}
	var progress io.Writer
	if f, ok := stderr.(*os.File); ok && stderrIsTerminal(f) {
		progress = f
	}
	return benchCommand(ctx, args, exe, progress, stdout, stderr)
}

func stderrIsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// benchCommand is runBench with its surroundings passed in, for tests.
func benchCommand(ctx context.Context, args []string, exe string, progress, stdout, stderr io.Writer) int {
	usage := func(err error) int {
		fmt.Fprintf(stderr, "gorn bench: error: %v (see gorn bench --help)\n", strings.TrimPrefix(err.Error(), "usage: "))
		return master.ExitUsage
	}
	o, out, err := parseBench(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, benchUsage)
		return master.ExitOK
	}
	if err != nil {
		return usage(err)
	}
	o.Exe, o.Progress = exe, progress
	rep, err := bench.Sweep(ctx, o)
	if err != nil {
		if bench.IsUsage(err) {
			return usage(err)
		}
		fmt.Fprintf(stderr, "gorn bench: error: %v\n", err)
		return master.ExitError
	}
	if out.chart != "" && len(rep.Runs) > 0 {
		if err := rep.WriteChart(out.chart); err != nil {
			fmt.Fprintf(stderr, "gorn bench: error: %v\n", err)
			return master.ExitError
		}
	}
	if out.json {
		if err := rep.WriteJSON(stdout); err != nil {
			fmt.Fprintf(stderr, "gorn bench: error: %v\n", err)
			return master.ExitError
		}
	} else {
		rep.WriteText(stdout)
	}
	if rep.Interrupted {
		return 128 + int(syscall.SIGINT)
	}
	return master.ExitOK
}

// benchOutput says how to print the report.
type benchOutput struct {
	json  bool
	chart string // "" for none
}

// parseBench parses the command line into options; errors wrap bench.ErrUsage.
func parseBench(args []string) (bench.Options, benchOutput, error) {
	var out benchOutput
	o := bench.Options{KeepAlive: true}
	var passthrough []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, passthrough = args[:i], args[i+1:]
	}
	fs := flag.NewFlagSet("gorn bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cpus := fs.String("cpus", "1", "")
	workers := fs.String("workers", "", "")
	classes := fs.String("worker-class", "sync", "")
	fs.StringVar(classes, "k", "sync", "")
	fs.IntVar(&o.Threads, "threads", 0, "")
	layouts := fs.String("layouts", "", "")
	fs.StringVar(&o.Isolation, "isolation", bench.IsolationAuto, "")
	var urls, appArgs []string
	fs.Func("url", "", func(s string) error { urls = append(urls, s); return nil })
	urlFile := fs.String("urls", "", "")
	replay := fs.String("requests", "", "")
	fs.IntVar(&o.Connections, "connections", 32, "")
	fs.Float64Var(&o.Rate, "rate", 0, "")
	noKeep := fs.Bool("no-keepalive", false, "")
	fs.DurationVar(&o.Duration, "duration", 5*time.Second, "")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "")
	fs.IntVar(&o.Repeats, "repeats", 1, "")
	fs.Int64Var(&o.MaxRequests, "request-limit", bench.DefaultMaxRequests, "")
	fs.BoolVar(&out.json, "json", false, "")
	fs.StringVar(&out.chart, "chart", "", "")
	bind := fs.String("b", "", "")
	fs.StringVar(bind, "bind", "", "")
	// The serving flags passed through to gorn: name -> takes a value.
	passed := map[string]bool{
		"chdir": true, "python": true, "c": true, "config": true, "pythonpath": true, "e": true, "env": true,
		"timeout": true, "worker-connections": true, "preload": false,
	}
	for name, takesValue := range passed {
		flagName := "--" + name
		if len(name) == 1 {
			flagName = "-" + name
		}
		if takesValue {
			fs.Func(name, "", func(v string) error { appArgs = append(appArgs, flagName, v); return nil })
		} else {
			fs.BoolFunc(name, "", func(string) error { appArgs = append(appArgs, flagName); return nil })
		}
	}

	// Flags and the one argument may come in any order.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return o, out, err
			}
			return o, out, fmt.Errorf("%w: %v", bench.ErrUsage, err)
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != 1 {
		return o, out, fmt.Errorf("%w: want one MODULE:APP, got %q", bench.ErrUsage, positional)
	}
	o.Module = positional[0]
	o.AppArgs = append(appArgs, passthrough...)
	o.KeepAlive = !*noKeep

	if *bind != "" {
		// The bench always binds 127.0.0.1 on a free port itself; a bind elsewhere is refused
		// rather than silently ignored.
		if err := bench.CheckLoopback(*bind); err != nil {
			return o, out, err
		}
	}
	for _, a := range passthrough {
		if a == "-b" || a == "--bind" || strings.HasPrefix(a, "--bind=") || a == "-w" || a == "--workers" {
			return o, out, fmt.Errorf("%w: %s after --: gorn bench sets the bind and the worker count itself", bench.ErrUsage, a)
		}
	}
	c, err := sizing.ParseCPUs(*cpus)
	if err != nil {
		return o, out, fmt.Errorf("%w: --cpus: %v", bench.ErrUsage, err)
	}
	o.CPUs = c
	if *workers != "" {
		if o.Workers, err = bench.ParseWorkers(*workers); err != nil {
			return o, out, err
		}
	}
	for _, k := range strings.Split(*classes, ",") {
		if k = strings.TrimSpace(k); k != "" && !slices.Contains(o.Classes, k) {
			o.Classes = append(o.Classes, k)
		}
	}
	if *layouts != "" {
		if *workers != "" {
			return o, out, fmt.Errorf("%w: --layouts and --workers: each pod of a layout sizes itself", bench.ErrUsage)
		}
		if o.Layouts, err = bench.ParseLayouts(*layouts); err != nil {
			return o, out, err
		}
	}
	sources := 0
	for _, s := range []bool{len(urls) > 0, *urlFile != "", *replay != ""} {
		if s {
			sources++
		}
	}
	if sources > 1 {
		return o, out, fmt.Errorf("%w: use one of --url, --urls and --requests", bench.ErrUsage)
	}
	for _, u := range urls {
		r, err := bench.ParseURL(u)
		if err != nil {
			return o, out, err
		}
		o.Requests = append(o.Requests, r)
	}
	var reqs []loadgen.Request
	switch {
	case *urlFile != "":
		reqs, err = bench.ReadURLFile(*urlFile)
	case *replay != "":
		reqs, err = bench.ReadAccessLog(*replay)
	}
	if err != nil {
		return o, out, err
	}
	o.Requests = append(o.Requests, reqs...)
	if out.chart != "" {
		if err := bench.CheckChartPath(out.chart); err != nil {
			return o, out, err
		}
	}
	return o, out, nil
}
