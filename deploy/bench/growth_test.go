package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The growth table has a column per run, fewest profiles first, with the
// largest instance of each service, and the chart is a PNG.
func TestGrowthTableAndChart(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, r Report) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, mustJSON(&r), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	at := time.Date(2026, 12, 6, 14, 36, 0, 0, time.UTC)
	large := write("large.json", Report{Started: at, Setup: Setup{Size: "large", Profiles: 2_000_000},
		LoadSeconds: 500, StandbySeconds: 300, ConsumeCeiling: ConsumePerf{FetchThroughput: 500_000},
		RSS:      []RSSResult{{Proc: "query-svc-0", AfterLoadMB: 220, AtEndMB: 231}, {Proc: "query-svc-1", AfterLoadMB: 225, AtEndMB: 229}, {Proc: "projector-0", AfterLoadMB: 160}},
		Restarts: []RestartResult{{Proc: "query-svc-1", ReadySeconds: 1.5}, {Proc: "command-svc-1", ReadySeconds: 0.9}},
	})
	full := write("full.json", Report{Started: at.Add(-time.Hour), Setup: Setup{Size: "full", Profiles: 1_000_000},
		LoadSeconds: 200, RSS: []RSSResult{{Proc: "query-svc-0", AfterLoadMB: 217}},
		Restarts: []RestartResult{{Proc: "query-svc-1", ReadySeconds: 1.68}},
	})
	points, err := ReadGrowth([]string{large, full})
	if err != nil {
		t.Fatal(err)
	}
	md := GrowthMarkdown(points)
	for _, want := range []string{
		"| figure | 1,000,000 profiles | 2,000,000 profiles |",
		"| RSS after the load, query-svc (MiB, the largest instance) | 217 | 225 |",
		"| RSS after the load, command-svc (MiB, the largest instance) | – | – |",
		"| restart-to-ready, query-svc-1 (s) | 1.68 | 1.50 |",
		"| restart-to-ready, command-svc-1 (s) | – | 0.90 |",
		"| cold start (profiles/s) | 5000 | 4000 |",
		"| cold start / ConsumerPerformance | – | 0.008 |",
		"| standby views loaded after that (s) | – | 300 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("no line %q in\n%s", want, md)
		}
	}
	png := filepath.Join(dir, "growth.png")
	if err := GrowthChart(points, png); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(png)
	if err != nil || !bytes.HasPrefix(raw, []byte("\x89PNG")) {
		t.Fatalf("not a PNG: %d bytes, %v", len(raw), err)
	}
}
