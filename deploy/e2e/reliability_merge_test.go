package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A run of some scenarios only keeps the rows of the others, and the
// hostile-input section, of the last report.
func TestReliabilityReportKeepsTheRowsOfScenariosNotRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reliability.md")
	old := "# x\n\n| scenario | a |\n|---|---:|\n" +
		"| 1. one | old1 |\n| 2. two | old2 |\n| 10. ten | old10 |\n\n## Hostile input\n\n- schemathesis: 5 cases\n" + fuzzLine + "\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PROFILES_RELIABILITY_REPORT", path)
	reliability.Lock()
	saved, savedHostile := reliability.rows, reliability.hostile
	reliability.rows, reliability.hostile = nil, nil
	reliability.Unlock()
	t.Cleanup(func() {
		reliability.Lock()
		reliability.rows, reliability.hostile = saved, savedHostile
		reliability.Unlock()
	})
	recordReliability(reliabilityRow{Scenario: "2. two, again", Acked: 7, Linearizable: "yes", Window: time.Second})
	recordReliability(reliabilityRow{Scenario: "12. twelve", Acked: 9, Linearizable: "yes"})
	if err := writeReliabilityReport(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	got := string(b)
	var order []string
	for _, l := range strings.Split(got, "\n") {
		if strings.HasPrefix(l, "| ") && l[2] >= '0' && l[2] <= '9' {
			order = append(order, strings.SplitN(l[2:], " |", 2)[0])
		}
	}
	want := []string{"1. one", "2. two, again", "10. ten", "12. twelve"}
	if strings.Join(order, ";") != strings.Join(want, ";") {
		t.Errorf("rows %q, want %q\n%s", order, want, got)
	}
	if strings.Contains(got, "old2") || !strings.Contains(got, "old10") {
		t.Errorf("the row of scenario 2 must be replaced and that of 10 kept:\n%s", got)
	}
	if strings.Count(got, "- schemathesis: 5 cases") != 1 || strings.Count(got, fuzzLine) != 1 {
		t.Errorf("the hostile-input section was not kept once:\n%s", got)
	}
}
