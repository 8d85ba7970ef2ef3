package svgchart

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
)

// node is any SVG element, parsed generically.
type node struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Text     string     `xml:",chardata"`
	Children []node     `xml:",any"`
}

func (n node) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func (n node) float(t *testing.T, name string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(n.attr(name), 64)
	if err != nil {
		t.Fatalf("<%s %s=%q>: %v", n.XMLName.Local, name, n.attr(name), err)
	}
	return v
}

// all returns the descendants of n (n included) with the element name and class.
func (n node) all(element, class string) []node {
	var out []node
	if (element == "" || n.XMLName.Local == element) && (class == "" || n.attr("class") == class) {
		out = append(out, n)
	}
	for _, c := range n.Children {
		out = append(out, c.all(element, class)...)
	}
	return out
}

func parse(t *testing.T, b []byte) node {
	t.Helper()
	var root node
	if err := xml.Unmarshal(b, &root); err != nil {
		t.Fatalf("not XML: %v\n%s", err, b)
	}
	if root.XMLName.Local != "svg" || root.XMLName.Space != "http://www.w3.org/2000/svg" {
		t.Fatalf("root element %v", root.XMLName)
	}
	return root
}

// scale fits value -> pixel from an axis' tick marks: the tick label's value and the
// coordinate (x1 for the x axis, y1 for the y axis) of its grid line.
func scale(t *testing.T, axis node, coord string) func(float64) float64 {
	t.Helper()
	var vals, px []float64
	for _, tick := range axis.all("g", "tick") {
		v, err := strconv.ParseFloat(tick.all("text", "")[0].Text, 64)
		if err != nil {
			t.Fatalf("tick label %q: %v", tick.all("text", "")[0].Text, err)
		}
		vals, px = append(vals, v), append(px, tick.all("line", "")[0].float(t, coord))
	}
	if len(vals) < 2 {
		t.Fatalf("%d ticks", len(vals))
	}
	k := (px[len(px)-1] - px[0]) / (vals[len(vals)-1] - vals[0])
	for i := range vals { // every tick on the same straight line
		if want := px[0] + k*(vals[i]-vals[0]); math.Abs(px[i]-want) > 0.02 {
			t.Errorf("tick %v at %v, want %v", vals[i], px[i], want)
		}
	}
	return func(v float64) float64 { return px[0] + k*(v-vals[0]) }
}

func TestChartPointsMatchTheData(t *testing.T) {
	data := []Series{
		{Name: "sync", Points: []Point{{1, 83, ""}, {2, 153, ""}, {3, 260, ""}, {6, 358, ""}}},
		{Name: "empty"},
		{Name: "gthread, 4 threads", Points: []Point{{1, 120, ""}, {2, 240.5, ""}}},
	}
	yt, lo, hi := NiceTicks(0, 358, 5, 0)
	xt, _, _ := NiceTicks(1, 6, 6, 1)
	c := Chart{Title: "a <title> & more", Width: 600, Height: 600, Panels: []Panel{
		{X: Axis{Label: "workers", Min: 0.7, Max: 6.3, Ticks: xt}, Y: Axis{Label: "req/s", Min: lo, Max: hi, Ticks: yt}, Series: data, Legend: true},
		{X: Axis{Label: "workers", Min: 0.7, Max: 6.3, Ticks: xt}, Y: Axis{Label: "ms", Min: 0, Max: 10, Ticks: []Tick{{0, "0"}, {5, "5"}, {10, "10"}}},
			Series: []Series{{Name: "sync", Points: []Point{{1, 9, ""}}}}},
	}}
	var buf bytes.Buffer
	if err := c.Write(&buf); err != nil {
		t.Fatal(err)
	}
	root := parse(t, buf.Bytes())
	if got := root.all("text", "title"); len(got) != 1 || got[0].Text != c.Title {
		t.Errorf("title: %+v", got)
	}
	if ff := root.attr("font-family"); ff != "sans-serif" {
		t.Errorf("font-family %q, want a generic family", ff)
	}
	panels := root.all("g", "panel")
	if len(panels) != 2 {
		t.Fatalf("%d panels", len(panels))
	}
	p := panels[0]
	var labels []string
	for _, l := range p.all("text", "label") {
		labels = append(labels, l.Text)
	}
	if fmt.Sprint(labels) != "[workers req/s]" {
		t.Errorf("axis labels %q", labels)
	}
	xAxis, yAxis := p.all("g", "x-axis")[0], p.all("g", "y-axis")[0]
	for _, a := range []struct {
		axis node
		want string
	}{{xAxis, "[1 2 3 4 5 6]"}, {yAxis, "[0 100 200 300 400]"}} {
		var got []string
		for _, tick := range a.axis.all("g", "tick") {
			got = append(got, tick.all("text", "")[0].Text)
		}
		if fmt.Sprint(got) != a.want {
			t.Errorf("ticks %q, want %s", got, a.want)
		}
	}
	px, py := scale(t, xAxis, "x1"), scale(t, yAxis, "y1")
	if py(300) >= py(100) {
		t.Errorf("y grows downwards: %v at 300, %v at 100", py(300), py(100))
	}
	series := p.all("g", "series")
	if len(series) != 2 { // "empty" draws nothing
		t.Fatalf("%d series", len(series))
	}
	for i, want := range []Series{data[0], data[2]} {
		g := series[i]
		if g.attr("data-name") != want.Name {
			t.Errorf("series %d is %q, want %q", i, g.attr("data-name"), want.Name)
		}
		line := g.all("polyline", "")
		if len(line) != 1 {
			t.Fatalf("%s: %d lines", want.Name, len(line))
		}
		vertices := strings.Fields(line[0].attr("points"))
		points := g.all("", "point")
		if len(vertices) != len(want.Points) || len(points) != len(want.Points) {
			t.Fatalf("%s: %d vertices, %d markers, want %d", want.Name, len(vertices), len(points), len(want.Points))
		}
		for j, pt := range want.Points {
			var x, y float64
			if _, err := fmt.Sscanf(vertices[j], "%g,%g", &x, &y); err != nil {
				t.Fatalf("vertex %q: %v", vertices[j], err)
			}
			if math.Abs(x-px(pt.X)) > 0.02 || math.Abs(y-py(pt.Y)) > 0.02 {
				t.Errorf("%s point %v drawn at %v,%v, want %v,%v", want.Name, pt, x, y, px(pt.X), py(pt.Y))
			}
			title := fmt.Sprintf("%s: %g, %g", want.Name, pt.X, pt.Y)
			if got := points[j].all("title", ""); len(got) != 1 || got[0].Text != title {
				t.Errorf("marker tooltip %+v, want %q", got, title)
			}
		}
	}
	if series[0].all("circle", "point") == nil || series[1].all("path", "point") == nil {
		t.Errorf("series 1 and 3 should get different markers")
	}
	var legend []string
	for _, e := range p.all("g", "entry") {
		legend = append(legend, e.all("text", "")[0].Text)
	}
	if fmt.Sprint(legend) != "[sync gthread, 4 threads]" {
		t.Errorf("legend %q", legend)
	}
	if panels[1].all("g", "legend") != nil {
		t.Errorf("the second panel asked for no legend")
	}
}

func TestNiceTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi, minStep float64
		n               int
		want            string
		first, last     float64
	}{
		{0, 393, 0, 5, "[0 100 200 300 400]", 0, 400},
		{0, 358, 0, 5, "[0 100 200 300 400]", 0, 400},
		{0, 0.9, 0, 5, "[0.0 0.2 0.4 0.6 0.8 1.0]", 0, 1},
		{1, 6, 1, 6, "[1 2 3 4 5 6]", 1, 6},
		{1, 64, 1, 6, "[0 20 40 60 80]", 0, 80},
		{3, 3, 1, 6, "[3 4]", 3, 4},
		{0, 0, 0, 5, "[0.0 0.2 0.4 0.6 0.8 1.0]", 0, 1},
	} {
		ticks, first, last := NiceTicks(tc.lo, tc.hi, tc.n, tc.minStep)
		var labels []string
		for _, tk := range ticks {
			labels = append(labels, tk.Label)
		}
		if got := fmt.Sprint(labels); got != tc.want || first != tc.first || last != tc.last {
			t.Errorf("NiceTicks(%v, %v, %d): %s from %v to %v, want %s from %v to %v", tc.lo, tc.hi, tc.n, got, first, last, tc.want, tc.first, tc.last)
		}
	}
}

func TestChartRejectsAnEmptyRange(t *testing.T) {
	c := Chart{Width: 100, Height: 100, Panels: []Panel{{X: Axis{Min: 1, Max: 1}, Y: Axis{Max: 1}}}}
	if err := c.Write(&bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "empty range") {
		t.Errorf("got %v", err)
	}
	if err := (Chart{Width: 100, Height: 100}).Write(&bytes.Buffer{}); err == nil {
		t.Errorf("no panels: no error")
	}
}
