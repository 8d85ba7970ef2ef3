package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/gornhq/gorn/internal/loadgen"
)

// ErrUsage marks errors in the user's input (flags, files): the command exits 2 for them.
var ErrUsage = errors.New("usage")

// usagef returns an error wrapping ErrUsage.
func usagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

// maxWorkers bounds a sweep: more processes than this on a benchmark box measures the
// box, not the app.
const maxWorkers = 64

// ParseWorkers parses a worker count list: "4", "1..8", "1,2,4" or "1..3,6".
func ParseWorkers(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "..")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b, err2 := strconv.Atoi(strings.TrimSpace(hi))
		switch {
		case err1 != nil || err2 != nil:
			return nil, usagef("--workers %q: want counts such as 4, 1..8 or 1,2,4", s)
		case a < 1 || b < 1:
			return nil, usagef("--workers %q: a worker count must be at least 1", s)
		case b < a:
			return nil, usagef("--workers %q: range %d..%d goes down", s, a, b)
		case b > maxWorkers:
			return nil, usagef("--workers %q: at most %d workers", s, maxWorkers)
		}
		for n := a; n <= b; n++ {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// Layout is Pods pods with CPUs each: "2x1" is two pods of one CPU.
type Layout struct {
	Pods int
	CPUs float64
}

func (l Layout) String() string {
	return strconv.Itoa(l.Pods) + "x" + strconv.FormatFloat(l.CPUs, 'f', -1, 64)
}

// Total is the CPU the layout takes in all.
func (l Layout) Total() float64 { return float64(l.Pods) * l.CPUs }

// maxPods bounds a layout for the same reason as maxWorkers.
const maxPods = 16

// ParseLayouts parses "1x2,2x1,4x0.5".
func ParseLayouts(s string) ([]Layout, error) {
	var out []Layout
	for _, part := range strings.Split(s, ",") {
		p, c, ok := strings.Cut(strings.TrimSpace(part), "x")
		pods, err1 := strconv.Atoi(p)
		cpus, err2 := strconv.ParseFloat(c, 64)
		if !ok || err1 != nil || err2 != nil || pods < 1 || cpus < 0.01 || pods > maxPods {
			return nil, usagef("--layouts %q: want PODSxCPUS items such as 1x2,2x1,4x0.5 (1..%d pods, at least 0.01 CPU each)", s, maxPods)
		}
		out = append(out, Layout{Pods: pods, CPUs: cpus})
	}
	return out, nil
}

// CheckLoopback returns an error wrapping ErrUsage unless host (a name or address, with or
// without a port) is on this machine's loopback: gorn bench never sends load elsewhere.
func CheckLoopback(host string) error {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" {
		return nil
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
		return nil
	}
	return usagef("%q is not a loopback address: gorn bench only loads the server it starts on 127.0.0.1", host)
}

// ParseURL parses one request of a load mix: "[WEIGHT] [METHOD] PATH [BODY_BYTES]", e.g.
// "/", "3 GET /json", "POST /echo 512" (a body of 512 bytes). PATH may be a full
// http://127.0.0.1/... URL; any host other than a loopback one is refused.
func ParseURL(line string) (loadgen.Request, error) {
	f := strings.Fields(line)
	var r loadgen.Request
	if len(f) > 0 {
		if w, err := strconv.Atoi(f[0]); err == nil {
			if w < 1 {
				return r, usagef("request %q: the weight must be at least 1", line)
			}
			r.Weight, f = w, f[1:]
		}
	}
	if len(f) > 0 && isMethod(f[0]) {
		r.Method, f = f[0], f[1:]
	}
	if len(f) == 0 || len(f) > 2 {
		return r, usagef("request %q: want [WEIGHT] [METHOD] PATH [BODY_BYTES]", line)
	}
	target := f[0]
	if strings.Contains(target, "://") {
		u, err := url.Parse(target)
		if err != nil || u.Scheme != "http" {
			return r, usagef("request %q: want an http:// URL or a path", line)
		}
		if err := CheckLoopback(u.Host); err != nil {
			return r, err
		}
		target = u.RequestURI()
	}
	if !strings.HasPrefix(target, "/") {
		return r, usagef("request %q: the path must start with /", line)
	}
	r.Path = target
	if len(f) == 2 {
		n, err := strconv.Atoi(f[1])
		if err != nil || n < 0 || n > maxBody {
			return r, usagef("request %q: the body size must be 0..%d bytes", line, maxBody)
		}
		r.Body = synthBody(n)
	}
	return r, nil
}

// maxBody bounds a synthesized request body.
const maxBody = 16 << 20

func isMethod(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

// synthBody is n bytes of 'x': the size of a logged body, not its content.
func synthBody(n int) []byte { return bytes.Repeat([]byte("x"), n) }

// ReadURLFile reads a load mix, one ParseURL line each; blank lines and # comments are
// skipped.
func ReadURLFile(path string) ([]loadgen.Request, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usagef("reading the URL file: %v", err)
	}
	defer f.Close()
	var out []loadgen.Request
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r, err := ParseURL(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, usagef("%s holds no request", path)
	}
	return out, nil
}

// requestLine finds `"METHOD TARGET HTTP/x.y" STATUS BYTES` in a text access log line:
// gunicorn's and gorn's default format, and any format with %(r)s %(s)s %(b)s in a row.
var requestLine = regexp.MustCompile(`"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+|-)`)

// maxReplay bounds how many log lines are kept: the replay cycles through them.
const maxReplay = 100000

// ReadAccessLog reads a gunicorn or gorn access log (text with the default format, or
// gorn's --access-logformat json) into a replay mix: each line is one request, with its
// method and path. A POST, PUT or PATCH line gets a body synthesized to the logged byte
// count (the response size in the default format: access logs do not record request
// bodies, so this is an approximation). Lines that are not requests are skipped.
func ReadAccessLog(path string) ([]loadgen.Request, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usagef("reading the access log: %v", err)
	}
	defer f.Close()
	out, err := parseAccessLog(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, usagef("%s holds no access log line with a request (want the default format or json)", path)
	}
	return out, nil
}

func parseAccessLog(r io.Reader) ([]loadgen.Request, error) {
	var out []loadgen.Request
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() && len(out) < maxReplay {
		line := sc.Text()
		var method, target string
		size := 0
		if strings.HasPrefix(line, "{") {
			var j struct {
				Method string `json:"method"`
				URI    string `json:"uri"`
				Path   string `json:"path"`
				Query  string `json:"query"`
				Bytes  int    `json:"bytes"`
			}
			if json.Unmarshal([]byte(line), &j) != nil || j.Method == "" {
				continue
			}
			method, target, size = j.Method, j.URI, j.Bytes
			if target == "" {
				target = j.Path
				if j.Query != "" {
					target += "?" + j.Query
				}
			}
		} else {
			m := requestLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			method, target = m[1], m[2]
			size, _ = strconv.Atoi(m[4]) // "-" is 0
		}
		if !strings.HasPrefix(target, "/") {
			continue // absolute-form or CONNECT targets are not replayed
		}
		r := loadgen.Request{Method: method, Path: target}
		switch method {
		case "POST", "PUT", "PATCH":
			r.Body = synthBody(min(size, maxBody))
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scanning: %w", err)
	}
	return out, nil
}
