package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/gornhq/gorn/internal/testenv"
)

// promtool runs Debian's promtool (apt-get install prometheus) in deploy/prometheus.
func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Missing(t, "promtool is not installed (apt-get install prometheus): %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = "prometheus"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestAlertingRulesCheck(t *testing.T) {
	out := promtool(t, "check", "rules", "gorn-rules.yaml")
	if !strings.Contains(out, "SUCCESS: 5 rules found") {
		t.Errorf("promtool check rules:\n%s", out)
	}
}

// TestAlertingRulesUnitTests runs gorn-rules.test.yaml, which must test every alert.
func TestAlertingRulesUnitTests(t *testing.T) {
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
			} `json:"rules"`
		} `json:"groups"`
	}
	b, err := os.ReadFile(filepath.Join("prometheus", "gorn-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join("prometheus", "gorn-rules.test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if !strings.Contains(string(tests), "alertname: "+r.Alert+"\n") {
				t.Errorf("alert %s has no test in gorn-rules.test.yaml", r.Alert)
			}
		}
	}
	promtool(t, "test", "rules", "gorn-rules.test.yaml")
}

// TestDashboardShape: the dashboard is valid JSON whose panels have unique ids, use the
// datasource variable, and filter every query by the namespace and pod variables. That its
// queries return series from a live gorn is test/prometheus_test.go's job.
func TestDashboardShape(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("grafana", "gorn-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" {
		t.Error("no uid: every import would make a new dashboard")
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if p.ID == 0 || ids[p.ID] {
			t.Errorf("panel %q: id %d missing or repeated", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, sel := range []string{`namespace=~"$namespace"`, `pod=~"$pod"`} {
				if strings.Count(tg.Expr, "gorn_") != strings.Count(tg.Expr, sel) {
					t.Errorf("panel %q: not every series of %s is filtered by %s", p.Title, tg.Expr, sel)
				}
			}
		}
	}
}
