package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gornhq/gorn/master"
)

func newTestServer(t *testing.T, opts Options) *httptest.Server {
	t.Helper()
	h, err := NewHandler(prometheus.NewRegistry(), opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestHealthEndpoints(t *testing.T) {
	readySnap := func(ready bool, readyCount, desired int) master.Snapshot {
		return master.Snapshot{Ready: ready, ReadyCount: readyCount, Desired: desired}
	}
	tests := []struct {
		name       string
		src        *fakeSource
		minReady   int
		healthz    int
		readyz     int
		readyzBody string
		maxWait    time.Duration // the hung master must not hold a probe longer
	}{
		{name: "ready", src: &fakeSource{snap: readySnap(true, 3, 3)},
			healthz: 200, readyz: 200, readyzBody: "ok\n"},
		{name: "min_ready_met", src: &fakeSource{snap: readySnap(true, 2, 3)}, minReady: 2,
			healthz: 200, readyz: 200, readyzBody: "ok\n"},
		{name: "below_min_ready", src: &fakeSource{snap: readySnap(true, 1, 3)}, minReady: 2,
			healthz: 200, readyz: 503, readyzBody: "not ready: 1 of 3 workers ready, need 2\n"},
		{name: "booting", src: &fakeSource{snap: readySnap(false, 0, 4)},
			healthz: 200, readyz: 503, readyzBody: "not ready: 0 of 4 workers ready, need 1\n"},
		// SIGTERM: the master clears Ready at once while its workers still serve.
		{name: "shutting_down", src: &fakeSource{snap: readySnap(false, 3, 3)},
			healthz: 200, readyz: 503, readyzBody: "not ready: shutting down\n"},
		{name: "master_not_answering", src: &fakeSource{hang: true},
			healthz: 503, readyz: 503, readyzBody: "not ready: the master loop did not answer within 50ms\n",
			maxWait: 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, Options{Source: tt.src, MinReady: tt.minReady, Timeout: 50 * time.Millisecond})
			start := time.Now()
			code, body := httpGet(t, srv.URL+"/healthz")
			if code != tt.healthz {
				t.Errorf("/healthz: %d %q, want %d", code, body, tt.healthz)
			}
			if code == 200 && body != "ok\n" {
				t.Errorf("/healthz body %q, want \"ok\\n\"", body)
			}
			code, body = httpGet(t, srv.URL+"/readyz")
			if code != tt.readyz || body != tt.readyzBody {
				t.Errorf("/readyz: %d %q, want %d %q", code, body, tt.readyz, tt.readyzBody)
			}
			if tt.maxWait > 0 && time.Since(start) > tt.maxWait {
				t.Errorf("probes took %s against a hung master", time.Since(start))
			}
		})
	}
}

func TestMetricsEndpoint(t *testing.T) {
	src := &fakeSource{snap: healthySnapshot()}
	srv := newTestServer(t, Options{Source: src, Version: "1.2.3", ProcRoot: "testdata/proc"})
	code, body := httpGet(t, srv.URL+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	for _, want := range []string{
		`gorn_build_info{goversion="go`,
		`gorn_workers{state="busy"} 1`,
		`gorn_requests_total{method="GET",status_class="2xx"} 1107`,
		"go_goroutines ",
		"process_start_time_seconds ",
		"promhttp_metric_handler_requests_total",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("one scrape made %d snapshot queries, want 1", n)
	}

	resp, err := http.Post(srv.URL+"/healthz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz: %d, want 405", resp.StatusCode)
	}
	if code, _ := httpGet(t, srv.URL+"/nope"); code != 404 {
		t.Errorf("/nope: %d, want 404", code)
	}
}

// TestNewHandlerOwnRegistry: the handler registers on the registry it is given, not the
// global one, and refuses to register twice.
func TestNewHandlerOwnRegistry(t *testing.T) {
	before, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	opts := Options{Source: &fakeSource{}}
	if _, err := NewHandler(reg, opts); err != nil {
		t.Fatal(err)
	}
	after, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("the global registry went from %d to %d metric families", len(before), len(after))
	}
	if _, err := NewHandler(reg, opts); err == nil {
		t.Error("registering twice on one registry succeeded")
	}
	if _, err := NewHandler(prometheus.NewRegistry(), Options{}); err == nil {
		t.Error("NewHandler without a Source succeeded")
	}
}
