package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gornhq/gorn/internal/svgchart"
)

// WriteChart draws req/s and p99 against the worker count (one line per class), or against
// the layouts, into path, an SVG file. Generator-bound runs are left out: they are not the
// server's figures.
func (r Report) WriteChart(path string) error {
	if err := CheckChartPath(path); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("writing the chart: %w", err)
	}
	if err := r.chart().Write(f); err != nil {
		f.Close()
		return fmt.Errorf("writing the chart %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the chart %s: %w", path, err)
	}
	return nil
}

// CheckChartPath returns a usage error unless path names an SVG file. PNG is not offered:
// rasterising needs embedded fonts, and the gorn binary is resident in every master.
func CheckChartPath(path string) error {
	if strings.ToLower(filepath.Ext(path)) != ".svg" {
		return usagef("--chart %q: want a .svg file", path)
	}
	return nil
}

// chart builds the two panels. In a worker sweep x is the worker count; for layouts x is
// the layout's position, labelled with its name.
func (r Report) chart() svgchart.Chart {
	rps := svgchart.Panel{Y: svgchart.Axis{Label: "req/s"}, Legend: true}
	p99 := svgchart.Panel{Y: svgchart.Axis{Label: "p99 latency (ms)"}}
	layouts := len(r.Runs) > 0 && r.Runs[0].Layout != ""
	var names []string
	var x svgchart.Axis
	if layouts {
		for _, run := range r.Runs {
			if !containsString(names, run.Layout) {
				names = append(names, run.Layout)
			}
		}
		x = svgchart.Axis{Label: "layout (pods x CPUs)", Min: -0.5, Max: float64(len(names)) - 0.5}
		for i, n := range names {
			x.Ticks = append(x.Ticks, svgchart.Tick{Value: float64(i), Label: n})
		}
	} else {
		lo, hi := 1, 1
		if len(r.Runs) > 0 {
			lo, hi = r.Runs[0].Workers, r.Runs[0].Workers
		}
		for _, run := range r.Runs {
			lo, hi = min(lo, run.Workers), max(hi, run.Workers)
		}
		// A little room either side, so the end points are not cut in half by the axes.
		x = svgchart.Axis{Label: "workers", Min: float64(lo) - 0.3, Max: float64(hi) + 0.3}
		x.Ticks, _, _ = svgchart.NiceTicks(float64(lo), float64(hi), 6, 1)
	}
	rps.X, p99.X = x, x
	var series []string
	for _, run := range r.Runs {
		if key := seriesKey(run); !containsString(series, key) {
			series = append(series, key)
		}
	}
	maxRPS, maxP99 := 0.0, 0.0
	for _, key := range series {
		a, b := svgchart.Series{Name: key}, svgchart.Series{Name: key}
		for _, run := range r.Runs {
			if seriesKey(run) != key || run.GeneratorBound {
				continue
			}
			x, label := float64(run.Workers), ""
			if layouts {
				x, label = float64(indexOf(names, run.Layout)), run.Layout
			}
			a.Points = append(a.Points, svgchart.Point{X: x, Y: run.RPS, Label: label})
			b.Points = append(b.Points, svgchart.Point{X: x, Y: run.P99, Label: label})
			maxRPS, maxP99 = max(maxRPS, run.RPS), max(maxP99, run.P99)
		}
		rps.Series, p99.Series = append(rps.Series, a), append(p99.Series, b)
	}
	rps.Y.Ticks, rps.Y.Min, rps.Y.Max = svgchart.NiceTicks(0, maxRPS*1.04, 5, 0) // headroom: no point on the frame
	p99.Y.Ticks, p99.Y.Min, p99.Y.Max = svgchart.NiceTicks(0, maxP99*1.04, 5, 0)
	return svgchart.Chart{
		Title: fmt.Sprintf("gorn bench %s: %s", r.Module, limitTitle(r)),
		Width: 600, Height: 600, Panels: []svgchart.Panel{rps, p99},
	}
}

func limitTitle(r Report) string {
	if len(r.Runs) > 0 && r.Runs[0].Layout != "" {
		return fmt.Sprintf("%g CPUs split into pods", r.CPUs)
	}
	return fmt.Sprintf("%g CPU limit", r.CPUs)
}

func seriesKey(r Run) string {
	if r.Threads > 0 {
		return fmt.Sprintf("%s, %d threads", r.Class, r.Threads)
	}
	return r.Class
}

func containsString(list []string, s string) bool { return indexOf(list, s) >= 0 }

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}
