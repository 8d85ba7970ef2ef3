package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// scrape returns the samples of /metrics as "name{labels}" -> value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := client().Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scraping: %v", err)
	}
	defer resp.Body.Close()
	samples := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q", line)
		}
		samples[line[:i]] = v
	}
	return samples
}

func (g *gorn) metricsAddr() string {
	g.t.Helper()
	g.waitLog("serving /metrics", 1, 10*time.Second)
	for _, l := range g.logLines() {
		if strings.HasPrefix(fmt.Sprint(l["msg"]), "serving /metrics") {
			return l["address"].(string)
		}
	}
	g.t.Fatal("no metrics address in the log")
	return ""
}

func status(url string) int {
	resp, err := client().Get(url)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestMetricsCountExactly(t *testing.T) {
	g := startGorn(t, gornOpts{}, "-w", "2", "--metrics-bind", "127.0.0.1:0", "app:app")
	maddr := g.metricsAddr()
	send := func(method, path string, n, want int) {
		for i := 0; i < n; i++ {
			req, _ := http.NewRequest(method, g.url(path), strings.NewReader("body"))
			resp, err := client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Fatalf("%s %s = %d, want %d", method, path, resp.StatusCode, want)
			}
		}
	}
	send("GET", "/", 10, 200)
	send("GET", "/missing", 5, 404)
	send("GET", "/error", 3, 500)
	send("POST", "/echo", 2, 200)
	send("GET", "/slow?ms=300", 1, 200)
	var m map[string]float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		m = scrape(t, maddr)
		if m["gorn_request_duration_seconds_count"] >= 21 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for k, want := range map[string]float64{
		`gorn_requests_total{method="GET",status_class="2xx"}`:  11,
		`gorn_requests_total{method="GET",status_class="4xx"}`:  5,
		`gorn_requests_total{method="GET",status_class="5xx"}`:  3,
		`gorn_requests_total{method="POST",status_class="2xx"}`: 2,
		`gorn_requests_total{method="POST",status_class="5xx"}`: 0,
		`gorn_request_duration_seconds_count`:                   21,
		`gorn_request_duration_seconds_bucket{le="0.25"}`:       20,
		`gorn_request_duration_seconds_bucket{le="0.5"}`:        21,
		`gorn_requests_in_flight`:                               0,
		`gorn_ready`:                                            1,
	} {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	if sum := m["gorn_request_duration_seconds_sum"]; sum < 0.3 || sum > 5 {
		t.Errorf("duration sum %v, want about 0.3 s plus the fast requests", sum)
	}
	listener := fmt.Sprintf(`gorn_listen_backlog{listener="%s"}`, g.addr)
	if m[listener] != 2048 {
		t.Errorf("%s = %v, want 2048", listener, m[listener])
	}
	if m[`gorn_workers{state="ready"}`]+m[`gorn_workers{state="busy"}`] != 2 {
		t.Errorf("workers by state: %v", m)
	}

	// Saturation: both workers busy, three more connections wait in the listen queue.
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); status(g.url("/slow?ms=1500")) }()
	}
	time.Sleep(300 * time.Millisecond)
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(100 * time.Millisecond)
	m = scrape(t, maddr)
	queue := fmt.Sprintf(`gorn_listen_queue_length{listener="%s"}`, g.addr)
	if m[queue] < 3 || m["gorn_requests_in_flight"] != 2 || m[`gorn_workers{state="busy"}`] != 2 {
		t.Errorf("saturated: %s=%v in_flight=%v busy=%v", queue, m[queue], m["gorn_requests_in_flight"], m[`gorn_workers{state="busy"}`])
	}
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
}

func TestReadyzFlipsOnTerm(t *testing.T) {
	g := startGorn(t, gornOpts{}, "-w", "1", "--metrics-bind", "127.0.0.1:0", "--shutdown-delay", "2", "app:app")
	maddr := g.metricsAddr()
	if s := status("http://" + maddr + "/readyz"); s != 200 {
		t.Fatalf("readyz before TERM: %d", s)
	}
	g.signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	if s := status("http://" + maddr + "/readyz"); s != 503 {
		t.Errorf("readyz after TERM: %d, want 503", s)
	}
	if s := status("http://" + maddr + "/healthz"); s != 200 {
		t.Errorf("healthz after TERM: %d, want 200 until exit", s)
	}
	// During the shutdown delay the app still serves (endpoints are being removed).
	if code, _ := get(t, g.url("/")); code != 200 {
		t.Errorf("request during the shutdown delay: %d", code)
	}
	if code := g.wait(20 * time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
	if s := status("http://" + maddr + "/healthz"); s != 0 {
		t.Errorf("healthz still answers after exit: %d", s)
	}
}

// TestMetricsMemory: each real worker's RSS, PSS and USS, the master's (and the mold's with
// --preload), and the tree's total, which is the sum of the processes' PSS (each shared page
// counted once: the pages the workers share with the mold are split among them all).
func TestMetricsMemory(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		roles []string
	}{
		{"each worker imports the app", nil, []string{"master"}},
		{"preload", []string{"--preload"}, []string{"master", "mold"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := startGorn(t, gornOpts{}, append(tc.args, "-w", "2", "--metrics-bind", "127.0.0.1:0", "app:app")...)
			maddr := g.metricsAddr()
			for i := 0; i < 20; i++ {
				get(t, g.url("/"))
			}
			m := scrape(t, maddr)
			var sum, uss, pss float64
			for slot := 0; slot < 2; slot++ {
				l := fmt.Sprintf(`{slot="%d"}`, slot)
				r, p, u := m["gorn_worker_rss_bytes"+l], m["gorn_worker_pss_bytes"+l], m["gorn_worker_uss_bytes"+l]
				// A worker shares the interpreter's and the libraries' file pages with its peer.
				if !(u > 1<<20 && u < p && p < r) {
					t.Errorf("slot %d: rss %.0f pss %.0f uss %.0f: want 1 MiB < USS < PSS < RSS", slot, r, p, u)
				}
				sum += p
				uss += u
				pss += p
			}
			for _, role := range tc.roles {
				p, u := m[`gorn_process_pss_bytes{process="`+role+`"}`], m[`gorn_process_uss_bytes{process="`+role+`"}`]
				if p <= 0 || u <= 0 {
					t.Errorf("%s: pss %v uss %v, want both reported", role, p, u)
				}
				sum += p
			}
			if total := m["gorn_memory_pss_bytes"]; total != sum {
				t.Errorf("gorn_memory_pss_bytes %.0f, want the sum of the processes' PSS %.0f", total, sum)
			}
			// Forked from the mold, a worker's own pages are a fraction of what it maps.
			if len(tc.roles) > 1 && uss > 0.75*pss {
				t.Errorf("with --preload the workers' USS %.0f is %.0f%% of their PSS, want most of it shared", uss, 100*uss/pss)
			}
			if m[`gorn_scrape_collector_success{collector="memory"}`] != 1 {
				t.Error("the memory part of the scrape failed")
			}
		})
	}
}
