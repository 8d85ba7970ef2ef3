package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// WriteChart draws req/s and p99 against the worker count (one line per class), or against
// the layouts, into path: SVG or PNG by its extension. Generator-bound runs are left out:
// they are not the server's figures.
func (r Report) WriteChart(path string) error {
	ext := strings.ToLower(filepath.Ext(path))
	if ext != ".svg" && ext != ".png" {
		return usagef("--chart %q: want a .svg or .png file", path)
	}
	rps, p99, err := r.plots()
	if err != nil {
		return fmt.Errorf("drawing the chart: %w", err)
	}
	w, h := 16*vg.Centimeter, 16*vg.Centimeter
	var c interface {
		vg.CanvasSizer
	}
	var save func(f *os.File) error
	if ext == ".svg" {
		s := vgsvg.New(w, h)
		c, save = s, func(f *os.File) error { _, err := s.WriteTo(f); return err }
	} else {
		img := vgimg.New(w, h)
		c, save = img, func(f *os.File) error { _, err := vgimg.PngCanvas{Canvas: img}.WriteTo(f); return err }
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter, PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	plots := [][]*plot.Plot{{rps}, {p99}}
	canvases := plot.Align(plots, tiles, dc)
	rps.Draw(canvases[0][0])
	p99.Draw(canvases[1][0])

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("writing the chart: %w", err)
	}
	if err := save(f); err != nil {
		f.Close()
		return fmt.Errorf("writing the chart %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the chart %s: %w", path, err)
	}
	return nil
}

// plots builds the two panels. In a worker sweep x is the worker count; for layouts x is
// the layout's position, labelled with its name.
func (r Report) plots() (*plot.Plot, *plot.Plot, error) {
	rps, p99 := plot.New(), plot.New()
	rps.Title.Text = fmt.Sprintf("gorn bench %s: %s", r.Module, limitTitle(r))
	rps.Y.Label.Text = "req/s"
	p99.Y.Label.Text = "p99 latency (ms)"
	rps.Y.Min, p99.Y.Min = 0, 0
	layouts := len(r.Runs) > 0 && r.Runs[0].Layout != ""
	var names []string
	if layouts {
		p99.X.Label.Text = "layout (pods x CPUs)"
		for _, run := range r.Runs {
			if !containsString(names, run.Layout) {
				names = append(names, run.Layout)
			}
		}
		rps.NominalX(names...)
		p99.NominalX(names...)
	} else {
		p99.X.Label.Text = "workers"
	}
	var series []string
	for _, run := range r.Runs {
		if key := seriesKey(run); !containsString(series, key) {
			series = append(series, key)
		}
	}
	for i, key := range series {
		var a, b plotter.XYs
		for _, run := range r.Runs {
			if seriesKey(run) != key || run.GeneratorBound {
				continue
			}
			x := float64(run.Workers)
			if layouts {
				x = float64(indexOf(names, run.Layout))
			}
			a = append(a, plotter.XY{X: x, Y: run.RPS})
			b = append(b, plotter.XY{X: x, Y: run.P99})
		}
		if len(a) == 0 {
			continue
		}
		for _, pp := range []struct {
			p   *plot.Plot
			xys plotter.XYs
		}{{rps, a}, {p99, b}} {
			line, points, err := plotter.NewLinePoints(pp.xys)
			if err != nil {
				return nil, nil, fmt.Errorf("plotting %s: %w", key, err)
			}
			line.Color, points.Color = plotutil.Color(i), plotutil.Color(i)
			points.Shape = plotutil.Shape(i)
			pp.p.Add(line, points)
			if pp.p == rps {
				rps.Legend.Add(key, line, points)
			}
		}
	}
	if !layouts && len(r.Runs) > 0 {
		// A little room either side, so the end points are not cut in half by the axes.
		lo, hi := r.Runs[0].Workers, r.Runs[0].Workers
		for _, run := range r.Runs {
			lo, hi = min(lo, run.Workers), max(hi, run.Workers)
		}
		for _, p := range []*plot.Plot{rps, p99} {
			p.X.Min, p.X.Max = float64(lo)-0.3, float64(hi)+0.3
		}
	}
	rps.Legend.Top = false
	rps.Legend.Left = false
	rps.Add(plotter.NewGrid())
	p99.Add(plotter.NewGrid())
	return rps, p99, nil
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
