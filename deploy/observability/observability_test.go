// Package observability holds the Prometheus alert rules and the Grafana
// dashboard of profiles (alerts.yml, dashboard.json); its tests check them
// with promtool. deploy/e2e/metrics_test.go checks that every metric they
// name is one the services export.
package observability

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// promtool returns promtool's path. Without it the test fails under
// CI=true (.ci/run installs Debian's prometheus package) and is skipped,
// loudly, elsewhere.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed (apt-get install prometheus); CI must check the alert rules")
		}
		t.Skip("SKIPPED: promtool is not installed (apt-get install prometheus): the alert rules are NOT checked")
	}
	return p
}

func TestAlertRulesCheck(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "rules", "alerts.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

func TestAlertRulesUnitTests(t *testing.T) {
	out, err := exec.Command(promtool(t), "test", "rules", "alerts_test.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// The dashboard is valid JSON, and every panel queries something.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard without uid or panels: %+v", d)
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if !strings.Contains(q.Expr, "profiles_") {
				t.Errorf("panel %q queries no profiles metric: %q", p.Title, q.Expr)
			}
		}
	}
}
