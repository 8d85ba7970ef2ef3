package test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/gornhq/gorn/internal/cgroup/cgrouptest"
	"github.com/gornhq/gorn/internal/loadgen"
	"github.com/gornhq/gorn/internal/testenv"
)

// The labels the test's scrape config gives gorn's series, as a PodMonitor would.
const (
	promNamespace = "shop"
	promPod       = "web-0"
)

// TestDashboardQueriesReturnSeries starts a real Prometheus (Debian's package) that scrapes a
// live gorn, inside a CPU quota and under load, every second, loaded with the alerting
// rules. Then every expression of the Grafana dashboard, its template variables and the
// prometheus-adapter rules behind the HPA run through Prometheus's HTTP API: each must
// return a series. The rules must evaluate without error.
func TestDashboardQueriesReturnSeries(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		testenv.Missing(t, "prometheus is not installed (apt-get install prometheus): %v", err)
	}
	// A pod's limits: a CPU quota tight enough that the load is throttled (the throttling
	// series have periods), and a memory limit.
	cpu := cgrouptest.NewV1(t, "cpu", fmt.Sprintf("gorn-test-prom-%d", os.Getpid()))
	cpu.SetCPUQuota(50000, 100000)
	mem := cgrouptest.NewV1(t, "memory", fmt.Sprintf("gorn-test-prom-%d", os.Getpid()))
	mem.SetMemoryLimit(1 << 30)
	g := startGorn(t, gornOpts{wrap: inGroups(cpu.Dir(), mem.Dir()), workers: 2}, "--metrics-bind", "127.0.0.1:0", "app:app")
	maddr := g.metricsAddr()
	load := loadgen.Start(g.addr, 8, "/", "/json", "/work?cpu_ms=2&io_ms=2")
	var finish sync.Once
	var fails []string
	finishLoad := func() { finish.Do(func() { fails = load.Finish() }) }
	t.Cleanup(finishLoad)

	dir := t.TempDir()
	promAddr := freeAddr(t)
	config := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
- job_name: gorn
  static_configs:
  - targets: [%q]
    labels: {namespace: %s, pod: %s}
`, filepath.Join(repoRoot, "deploy", "prometheus", "gorn-rules.yaml"), maddr, promNamespace, promPod)
	writeFile(t, filepath.Join(dir, "prometheus.yml"), config)
	prom := exec.Command(promBin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr,
		"--storage.tsdb.retention.time=1h", "--log.level=warn")
	prom.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	startProcess(t, prom, "prometheus", syscall.SIGTERM)
	api := "http://" + promAddr

	// Rates over the dashboard's window need a few scrapes of the loaded server.
	const window = "15s"
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := promQuery(api, `count_over_time(gorn_requests_total{status_class="2xx", method="GET"}[`+window+`]) >= 8`)
		if err == nil && len(res) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus has not scraped gorn 8 times in 60 s (last: %v, %v)", res, err)
		}
		time.Sleep(500 * time.Millisecond)
	}

	vars := strings.NewReplacer("$__rate_interval", window, "${namespace}", ".*", "$namespace", ".*", "${pod}", ".*", "$pod", ".*")
	for _, q := range dashboardQueries(t) {
		expr := vars.Replace(q.expr)
		res, err := promQuery(api, expr)
		switch {
		case err != nil:
			t.Errorf("panel %q: %s: %v", q.panel, expr, err)
		case len(res) == 0:
			t.Errorf("panel %q: %s returned no series", q.panel, expr)
		}
	}
	for _, v := range dashboardVariables(t) {
		values, err := promLabelValues(api, v.label, vars.Replace(v.match))
		want := map[string]string{"namespace": promNamespace, "pod": promPod}[v.label]
		if err != nil || !strings.Contains(strings.Join(values, " "), want) {
			t.Errorf("variable %s: label_values(%s, %s) = %q, %v; want %s", v.name, v.match, v.label, values, err, want)
		}
	}
	for _, r := range adapterQueries(t) {
		res, err := promQuery(api, r.query)
		if err != nil || len(res) != 1 {
			t.Errorf("prometheus-adapter rule %s: %s: %v, %v; want one series for pod %s", r.name, r.query, res, err, promPod)
		}
	}
	rules := waitRulesEvaluated(t, api)
	if len(rules) < 5 {
		t.Errorf("prometheus loaded %d rules from gorn-rules.yaml, want 5: %v", len(rules), rules)
	}
	for name, health := range rules {
		if health != "ok" {
			t.Errorf("rule %s: health %s", name, health)
		}
	}
	if finishLoad(); len(fails) > 0 {
		t.Errorf("%d requests failed under load, e.g. %s", len(fails), fails[0])
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type dashboardQuery struct{ panel, expr string }

type dashboardVariable struct{ name, label, match string }

// grafanaDashboard is the part of Grafana's dashboard model the test reads.
type grafanaDashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

func loadDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "grafana", "gorn-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("gorn-dashboard.json: %v", err)
	}
	return d
}

func dashboardQueries(t *testing.T) []dashboardQuery {
	var qs []dashboardQuery
	for _, p := range loadDashboard(t).Panels {
		for _, tg := range p.Targets {
			qs = append(qs, dashboardQuery{p.Title, tg.Expr})
		}
	}
	if len(qs) < 15 {
		t.Fatalf("the dashboard has %d queries: not the dashboard this test was written for", len(qs))
	}
	return qs
}

var labelValuesQuery = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

func dashboardVariables(t *testing.T) []dashboardVariable {
	var vs []dashboardVariable
	for _, v := range loadDashboard(t).Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)
		s, _ := q["query"].(string)
		m := labelValuesQuery.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("variable %s: query %q is not label_values(MATCH, LABEL)", v.Name, s)
		}
		vs = append(vs, dashboardVariable{v.Name, m[2], m[1]})
	}
	if len(vs) == 0 {
		t.Fatal("the dashboard has no query variables")
	}
	return vs
}

type adapterQuery struct{ name, query string }

// adapterQueries renders the metricsQuery of each prometheus-adapter rule as the adapter
// does for one pod of the HPA's namespace.
func adapterQueries(t *testing.T) []adapterQuery {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "kubernetes", "prometheus-adapter.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	var cfg struct {
		Rules []struct {
			SeriesQuery  string              `json:"seriesQuery"`
			Name         struct{ As string } `json:"name"`
			MetricsQuery string              `json:"metricsQuery"`
		} `json:"rules"`
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatal(err)
	}
	var qs []adapterQuery
	for _, r := range cfg.Rules {
		series, _, _ := strings.Cut(r.SeriesQuery, "{")
		tmpl, err := template.New(r.Name.As).Delims("<<", ">>").Parse(r.MetricsQuery)
		if err != nil {
			t.Fatalf("adapter rule %s: %v", r.Name.As, err)
		}
		var sb strings.Builder
		err = tmpl.Execute(&sb, map[string]string{
			"Series":        series,
			"LabelMatchers": fmt.Sprintf(`namespace="%s",pod=~"%s"`, promNamespace, promPod),
			"GroupBy":       "pod",
		})
		if err != nil {
			t.Fatalf("adapter rule %s: %v", r.Name.As, err)
		}
		qs = append(qs, adapterQuery{r.Name.As, sb.String()})
	}
	if len(qs) == 0 {
		t.Fatal("no prometheus-adapter rules")
	}
	return qs
}

// promQuery runs an instant query and returns its vector result.
func promQuery(api, expr string) ([]json.RawMessage, error) {
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string            `json:"resultType"`
			Result     []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := promGet(api+"/api/v1/query?query="+url.QueryEscape(expr), &out); err != nil {
		return nil, err
	}
	if out.Status != "success" {
		return nil, fmt.Errorf("query failed: %s", out.Error)
	}
	if out.Data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want vector", out.Data.ResultType)
	}
	return out.Data.Result, nil
}

func promLabelValues(api, label, match string) ([]string, error) {
	var out struct {
		Status string   `json:"status"`
		Data   []string `json:"data"`
	}
	err := promGet(api+"/api/v1/label/"+label+"/values?match[]="+url.QueryEscape(match), &out)
	return out.Data, err
}

// waitRulesEvaluated returns each rule's health once every rule has been evaluated.
func waitRulesEvaluated(t *testing.T, api string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var out struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name           string `json:"name"`
						Health         string `json:"health"`
						LastError      string `json:"lastError"`
						LastEvaluation string `json:"lastEvaluation"`
					} `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		if err := promGet(api+"/api/v1/rules", &out); err != nil {
			t.Fatal(err)
		}
		health := map[string]string{}
		pending := false
		for _, g := range out.Data.Groups {
			for _, r := range g.Rules {
				health[r.Name] = r.Health + r.LastError
				pending = pending || r.Health == "unknown"
			}
		}
		if !pending && len(health) > 0 || time.Now().After(deadline) {
			return health
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func promGet(u string, v any) error {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: status %d: %w", u, resp.StatusCode, err)
	}
	return nil
}
