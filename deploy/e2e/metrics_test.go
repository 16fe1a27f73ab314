package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// scrapeNames returns the metric names an instance's /metrics exposes, and
// the series lines, by name.
func (s *System) scrapeNames(name string) map[string][]string {
	s.t.Helper()
	resp, err := http.Get(s.URLOf(name) + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		n := line[:strings.IndexAny(line, "{ ")]
		out[n] = append(out[n], line)
	}
	return out
}

var metricName = regexp.MustCompile(`\bprofiles_[a-z0-9_]+`)

// A running system exports the operations metrics (build, consumer
// groups, Pebble, transactions, write-to-visible), and every metric the
// alert rules and the dashboard (deploy/observability) name is exported
// by some service.
func TestMetricsExported(t *testing.T) {
	s := StartSystem(t, Options{Partitions: 4})
	want := writeFixture(t, s, "m", 8)
	checkFixture(t, s, want)

	all := map[string][]string{}
	for _, name := range []string{"command-svc-0", "query-svc-0", "projector-0", "frontdoor"} {
		names := s.scrapeNames(name)
		// Every binary reports its build.
		if b := names["profiles_build_info"]; len(b) != 1 || !strings.Contains(b[0], `goversion="go`) || !strings.HasSuffix(b[0], " 1") {
			t.Errorf("%s: profiles_build_info = %v", name, b)
		}
		for n, lines := range names {
			all[n] = append(all[n], lines...)
		}
	}
	required := map[string]string{
		"profiles_group_consumer_lag_records":      `partition="`,
		"profiles_group_partitions_owned":          `group="`,
		"profiles_group_partitions_unowned":        `group="`,
		"profiles_group_rebalances_total":          `group="`,
		"profiles_group_leaves_total":              "",
		"profiles_pebble_disk_bytes":               `store="view"`,
		"profiles_pebble_block_cache_hits_total":   `store="command_state"`,
		"profiles_pebble_block_cache_misses_total": `store="projector_state"`,
		"profiles_pebble_filter_skips_total":       `store="view"`,
		"profiles_command_txn_appends_bucket":      "",
		"profiles_command_txn_seconds_bucket":      "",
		"profiles_projector_batch_seconds_bucket":  "",
		"profiles_txn_writer_batch_writes_bucket":  "",
		"profiles_command_visible_seconds_bucket":  `result="visible"`,
		"profiles_http_requests_total":             `route="/api/profile/{uid}"`,
	}
	for n, label := range required {
		lines := all[n]
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, label) }) {
			t.Errorf("no %s series with %s exported (%d series)", n, label, len(lines))
		}
	}

	for _, file := range []string{"../observability/alerts.yml", "../observability/dashboard.json"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		names := metricName.FindAllString(string(b), -1)
		if len(names) == 0 {
			t.Fatalf("%s names no metric", file)
		}
		for _, n := range names {
			if len(all[n]) == 0 && len(all[n+"_bucket"]) == 0 && len(all[strings.TrimSuffix(n, "_bucket")+"_bucket"]) == 0 &&
				len(all[strings.TrimSuffix(n, "_count")+"_count"]) == 0 {
				t.Errorf("%s names %s, which no service exports", file, n)
			}
		}
		t.Logf("%s: %d metric references, all exported", file, len(names))
	}
	if t.Failed() {
		var names []string
		for n := range all {
			names = append(names, n)
		}
		slices.Sort(names)
		fmt.Fprintln(os.Stderr, strings.Join(names, "\n"))
	}
}
