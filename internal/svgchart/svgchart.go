// Package svgchart draws line charts (panels stacked top to bottom, each with axes, ticks,
// grid, lines with point markers and a legend) as plain SVG text. It exists so that
// `gorn bench --chart` needs no plotting library: those embed fonts and rasterisers, and
// the gorn master's whole binary is resident, so their megabytes would count against
// every deployment's memory. Text names a generic font family and its widths are
// estimated, which is close enough for labels of a few words.
package svgchart

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Chart is a title above panels of equal height.
type Chart struct {
	Title         string
	Width, Height float64 // in px
	Panels        []Panel
}

// Panel is one plot area. Series are styled by their position, so the same index in
// another panel gets the same colour and marker.
type Panel struct {
	X, Y   Axis
	Series []Series
	Legend bool // list the series (those with points) in the bottom right corner
}

// Axis maps [Min, Max] onto the panel. Ticks outside that range are not drawn.
type Axis struct {
	Label    string
	Min, Max float64
	Ticks    []Tick
}

// Tick is a labelled position on an axis, with a grid line across the panel.
type Tick struct {
	Value float64
	Label string
}

// Series is one line. A series without points takes its style but draws nothing.
type Series struct {
	Name   string
	Points []Point
}

// Point is a data point; Label names X in the marker's tooltip (the tick label for a
// nominal axis), or X itself when empty.
type Point struct {
	X, Y  float64
	Label string
}

// NiceTicks returns ticks every 1, 2 or 5 times a power of ten (and at least minStep)
// covering [lo, hi] in about n steps, and the range from the first tick to the last.
func NiceTicks(lo, hi float64, n int, minStep float64) (ticks []Tick, first, last float64) {
	if hi < lo {
		lo, hi = hi, lo
	}
	if hi == lo {
		hi = lo + 1
	}
	n = max(n, 1)
	raw := (hi - lo) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := 10 * mag
	for _, m := range []float64{1, 2, 5} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	step = max(step, minStep)
	decimals := 0
	if step < 1 {
		decimals = int(math.Ceil(-math.Log10(step) - 1e-9))
	}
	first = math.Floor(lo/step+1e-9) * step
	last = math.Ceil(hi/step-1e-9) * step
	for i := 0; ; i++ {
		v := first + float64(i)*step
		if v > last+step/2 {
			break
		}
		ticks = append(ticks, Tick{Value: v, Label: strconv.FormatFloat(v, 'f', decimals, 64)})
	}
	return ticks, first, last
}

// Colours and markers by series index; the colours stay apart for the common kinds of
// colour blindness.
var (
	colors  = [...]string{"#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000"}
	markers = [...]string{"circle", "square", "triangle", "diamond", "triangle-down", "cross"}
)

const (
	fontSize      = 12.0
	titleSize     = 14.0
	charWidth     = 0.6 * fontSize // an estimate for a sans-serif face
	tickLen       = 4.0
	markerRadius  = 3.5
	legendLineLen = 24.0
)

// Write writes the chart as a standalone SVG document.
func (c Chart) Write(w io.Writer) error {
	if len(c.Panels) == 0 || c.Width <= 0 || c.Height <= 0 {
		return fmt.Errorf("drawing a chart: want a size and at least one panel")
	}
	for i, p := range c.Panels {
		if !(p.X.Max > p.X.Min) || !(p.Y.Max > p.Y.Min) {
			return fmt.Errorf("drawing a chart: panel %d: an axis has an empty range", i+1)
		}
	}
	bw := bufio.NewWriter(w)
	s := &svg{w: bw}
	s.printf(`<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<svg xmlns="http://www.w3.org/2000/svg" width="%s" height="%s" viewBox="0 0 %s %s" font-family="sans-serif" font-size="%s">`+"\n",
		num(c.Width), num(c.Height), num(c.Width), num(c.Height), num(fontSize))
	s.printf(`<rect width="%s" height="%s" fill="#ffffff"/>`+"\n", num(c.Width), num(c.Height))
	top := 8.0
	if c.Title != "" {
		s.text("title", c.Width/2, top+titleSize, "middle", fmt.Sprintf(` font-size="%s"`, num(titleSize)), c.Title)
		top += titleSize + 8
	}
	// The same left edge in every panel, so their x axes line up.
	left := 0.0
	for _, p := range c.Panels {
		for _, t := range p.Y.Ticks {
			left = max(left, textWidth(t.Label))
		}
	}
	left += tickLen + 8 + fontSize + 10
	right := c.Width - 16
	panelHeight := (c.Height - top) / float64(len(c.Panels))
	for i, p := range c.Panels {
		y0 := top + float64(i)*panelHeight
		box := rect{x0: left, x1: right, y0: y0 + 6, y1: y0 + panelHeight - (tickLen + 2*fontSize + 14)}
		if box.x1-box.x0 < 10 || box.y1-box.y0 < 10 {
			return fmt.Errorf("drawing a chart: %sx%s px is too small", num(c.Width), num(c.Height))
		}
		s.panel(p, box)
	}
	s.printf("</svg>\n")
	if s.err != nil {
		return fmt.Errorf("writing a chart: %w", s.err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing a chart: %w", err)
	}
	return nil
}

type rect struct{ x0, x1, y0, y1 float64 } // y0 is the top edge

// svg writes elements, keeping the first error.
type svg struct {
	w   io.Writer
	err error
}

func (s *svg) printf(format string, args ...any) {
	if s.err == nil {
		_, s.err = fmt.Fprintf(s.w, format, args...)
	}
}

// text writes a <text> element; extra holds further attributes, each with a leading space.
func (s *svg) text(class string, x, y float64, anchor, extra, content string) {
	s.printf(`<text class="%s" x="%s" y="%s" text-anchor="%s"%s>%s</text>`+"\n", class, num(x), num(y), anchor, extra, escape(content))
}

func (s *svg) panel(p Panel, b rect) {
	px := func(v float64) float64 { return b.x0 + (v-p.X.Min)/(p.X.Max-p.X.Min)*(b.x1-b.x0) }
	py := func(v float64) float64 { return b.y1 - (v-p.Y.Min)/(p.Y.Max-p.Y.Min)*(b.y1-b.y0) }
	s.printf(`<g class="panel">` + "\n")
	s.printf(`<g class="x-axis">` + "\n")
	for _, t := range p.X.Ticks {
		if t.Value < p.X.Min || t.Value > p.X.Max {
			continue
		}
		x := px(t.Value)
		s.printf(`<g class="tick"><line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#dddddd"/><line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#000000"/>`,
			num(x), num(b.y0), num(x), num(b.y1), num(x), num(b.y1), num(x), num(b.y1+tickLen))
		s.printf(`<text x="%s" y="%s" text-anchor="middle">%s</text></g>`+"\n", num(x), num(b.y1+tickLen+fontSize+2), escape(t.Label))
	}
	if p.X.Label != "" {
		s.text("label", (b.x0+b.x1)/2, b.y1+tickLen+2*fontSize+10, "middle", "", p.X.Label)
	}
	s.printf("</g>\n")
	s.printf(`<g class="y-axis">` + "\n")
	for _, t := range p.Y.Ticks {
		if t.Value < p.Y.Min || t.Value > p.Y.Max {
			continue
		}
		y := py(t.Value)
		s.printf(`<g class="tick"><line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#dddddd"/><line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#000000"/>`,
			num(b.x0), num(y), num(b.x1), num(y), num(b.x0-tickLen), num(y), num(b.x0), num(y))
		s.printf(`<text x="%s" y="%s" text-anchor="end" dominant-baseline="middle">%s</text></g>`+"\n", num(b.x0-tickLen-5), num(y), escape(t.Label))
	}
	if p.Y.Label != "" {
		x, y := 6+fontSize/2, (b.y0+b.y1)/2 // left of the widest tick label
		s.text("label", x, y, "middle", fmt.Sprintf(` dominant-baseline="middle" transform="rotate(-90 %s %s)"`, num(x), num(y)), p.Y.Label)
	}
	s.printf("</g>\n")
	s.printf(`<rect class="frame" x="%s" y="%s" width="%s" height="%s" fill="none" stroke="#000000"/>`+"\n",
		num(b.x0), num(b.y0), num(b.x1-b.x0), num(b.y1-b.y0))
	for i, se := range p.Series {
		if len(se.Points) == 0 {
			continue
		}
		color := colors[i%len(colors)]
		s.printf(`<g class="series" data-name="%s" stroke="%s" fill="%s">`+"\n", escape(se.Name), color, color)
		var pts []string
		for _, pt := range se.Points {
			pts = append(pts, num(px(pt.X))+","+num(py(pt.Y)))
		}
		s.printf(`<polyline points="%s" fill="none" stroke-width="1.5"/>`+"\n", strings.Join(pts, " "))
		for _, pt := range se.Points {
			label := pt.Label
			if label == "" {
				label = strconv.FormatFloat(pt.X, 'g', -1, 64)
			}
			s.marker(i, px(pt.X), py(pt.Y), fmt.Sprintf("%s: %s, %s", se.Name, label, strconv.FormatFloat(pt.Y, 'g', 4, 64)))
		}
		s.printf("</g>\n")
	}
	if p.Legend {
		s.legend(p.Series, b)
	}
	s.printf("</g>\n")
}

// marker draws series i's point shape centred on (x, y), with title as its tooltip.
func (s *svg) marker(i int, x, y float64, title string) {
	r := markerRadius
	var shape string
	switch markers[i%len(markers)] {
	case "circle":
		shape = fmt.Sprintf(`<circle class="point" cx="%s" cy="%s" r="%s">`, num(x), num(y), num(r))
	case "square":
		shape = fmt.Sprintf(`<rect class="point" x="%s" y="%s" width="%s" height="%s">`, num(x-r), num(y-r), num(2*r), num(2*r))
	default:
		shape = fmt.Sprintf(`<path class="point" d="%s">`, markerPath(markers[i%len(markers)], x, y, r))
	}
	end := shape[1:strings.IndexByte(shape, ' ')]
	s.printf("%s<title>%s</title></%s>\n", shape, escape(title), end)
}

func markerPath(kind string, x, y, r float64) string {
	r *= 1.2
	switch kind {
	case "triangle":
		return fmt.Sprintf("M%s,%s L%s,%s L%s,%s Z", num(x), num(y-r), num(x+r), num(y+r*0.8), num(x-r), num(y+r*0.8))
	case "triangle-down":
		return fmt.Sprintf("M%s,%s L%s,%s L%s,%s Z", num(x), num(y+r), num(x+r), num(y-r*0.8), num(x-r), num(y-r*0.8))
	case "diamond":
		return fmt.Sprintf("M%s,%s L%s,%s L%s,%s L%s,%s Z", num(x), num(y-r), num(x+r), num(y), num(x), num(y+r), num(x-r), num(y))
	default: // cross
		return fmt.Sprintf("M%s,%s L%s,%s M%s,%s L%s,%s", num(x-r), num(y-r), num(x+r), num(y+r), num(x-r), num(y+r), num(x+r), num(y-r))
	}
}

func (s *svg) legend(series []Series, b rect) {
	var shown []int
	width := 0.0
	for i, se := range series {
		if len(se.Points) > 0 {
			shown = append(shown, i)
			width = max(width, textWidth(se.Name))
		}
	}
	if len(shown) == 0 {
		return
	}
	const pad, lineHeight = 6.0, fontSize + 6
	w := pad + legendLineLen + 6 + width + pad
	h := pad + float64(len(shown))*lineHeight + pad - 6
	x0, y0 := b.x1-8-w, b.y1-8-h
	s.printf(`<g class="legend"><rect x="%s" y="%s" width="%s" height="%s" fill="#ffffff" fill-opacity="0.85" stroke="#999999"/>`+"\n",
		num(x0), num(y0), num(w), num(h))
	for row, i := range shown {
		color := colors[i%len(colors)]
		y := y0 + pad + float64(row)*lineHeight + fontSize/2
		s.printf(`<g class="entry" stroke="%s" fill="%s"><line x1="%s" y1="%s" x2="%s" y2="%s" stroke-width="1.5"/>`,
			color, color, num(x0+pad), num(y), num(x0+pad+legendLineLen), num(y))
		s.marker(i, x0+pad+legendLineLen/2, y, series[i].Name)
		s.printf(`<text x="%s" y="%s" dominant-baseline="middle" fill="#000000" stroke="none">%s</text></g>`+"\n",
			num(x0+pad+legendLineLen+6), num(y), escape(series[i].Name))
	}
	s.printf("</g>\n")
}

func textWidth(s string) float64 { return float64(len([]rune(s))) * charWidth }

// num formats a coordinate with two decimals at most.
func num(v float64) string { return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64) }

func escape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // a strings.Builder does not fail
	return b.String()
}
