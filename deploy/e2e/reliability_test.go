package e2e

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// reliabilityRow is one fault scenario's line in docs/reliability.md.
type reliabilityRow struct {
	Scenario       string
	Acked, Lost    int
	FailedWrites   int
	FailedReads    int
	Reads          int
	WriteErrors    string
	ReadErrors     string
	Window         time.Duration // longest time with no write acknowledged
	SlowestFailure time.Duration
	Notes          string
	// Linearizable is the checker's verdict on the scenario's history of
	// Ops operations (lincheck).
	Linearizable string
	Ops          int
}

var reliability struct {
	sync.Mutex
	rows    []reliabilityRow
	hostile []string // one line per hostile-input run (schemathesis)
}

// recordHostileInput adds a line to the report's hostile-input section.
func recordHostileInput(line string) {
	reliability.Lock()
	defer reliability.Unlock()
	reliability.hostile = append(reliability.hostile, line)
}

func recordReliability(r reliabilityRow) {
	reliability.Lock()
	defer reliability.Unlock()
	reliability.rows = append(reliability.rows, r)
}

// replaceReliability replaces the row of r's scenario.
func replaceReliability(r reliabilityRow) {
	reliability.Lock()
	defer reliability.Unlock()
	for i := range reliability.rows {
		if reliability.rows[i].Scenario == r.Scenario {
			reliability.rows[i] = r
		}
	}
}

// writeReliabilityReport writes the rows of this run to the file named by
// PROFILES_RELIABILITY_REPORT (deploy/test.sh: docs/reliability.md), when
// the fault suite ran. The text around the table says how it was made.
func writeReliabilityReport() error {
	path := os.Getenv("PROFILES_RELIABILITY_REPORT")
	reliability.Lock()
	defer reliability.Unlock()
	if path == "" || len(reliability.rows) == 0 {
		return nil // the fault suite did not run (a partial run): keep the last report
	}
	// Scenarios are numbered ("10. ..."): 2 comes before 10. A run of
	// some scenarios only (go test -run) keeps the other scenarios' rows
	// of the last report, and its hostile-input section if this run has
	// none, so that a targeted run never wipes the table.
	number := func(scenario string) int { n, _ := strconv.Atoi(strings.SplitN(scenario, ".", 2)[0]); return n }
	ran := map[int]bool{}
	type line struct {
		n        int
		scenario string
		text     string
	}
	var lines []line
	for _, r := range reliability.rows {
		ran[number(r.Scenario)] = true
		lines = append(lines, line{number(r.Scenario), r.Scenario, fmt.Sprintf("| %s | %d | %d | %s (%d ops) | %d (%s) | %d of %d (%s) | %.1f s | %.1f s | %s |",
			r.Scenario, r.Acked, r.Lost, r.Linearizable, r.Ops, r.FailedWrites, r.WriteErrors, r.FailedReads, r.Reads, r.ReadErrors,
			r.Window.Seconds(), r.SlowestFailure.Seconds(), r.Notes)})
	}
	oldRows, oldHostile := previousReport(path)
	for _, text := range oldRows {
		scenario := strings.TrimPrefix(text, "| ")
		if n := number(scenario); n > 0 && !ran[n] {
			lines = append(lines, line{n, scenario, text})
		}
	}
	hostile := reliability.hostile
	if len(hostile) == 0 {
		hostile = oldHostile
	}
	sort.Slice(lines, func(i, j int) bool {
		if lines[i].n != lines[j].n {
			return lines[i].n < lines[j].n
		}
		return lines[i].scenario < lines[j].scenario
	})
	var b strings.Builder
	fmt.Fprintf(&b, `# Reliability under faults

Written by the fault suite (`+"`make test-faults`"+`, part of `+"`make test`"+`) on %s.
Do not edit by hand: the next run rewrites it.

Each scenario runs the whole system (two command-svc, two query-svc, one
projector, the front door; 6 partitions) on a three-node KRaft cluster on
loopback (replication factor 3, `+"`min.insync.replicas=2`"+`, every service
given all three bootstrap servers). Six writers (create, change, delete
their own profiles) and two readers run through the front door while the
fault is injected. Afterwards every write that was answered 2xx is looked up
in `+"`profile-events`"+` (read committed), and every profile is read through
the front door until it shows its last acknowledged state (or a later write
whose outcome was unknown to the client, because it failed or timed out).
Every call and answer of the writers, the readers and those final reads is
recorded, and checked for linearizability (`+"`deploy/internal/lincheck`"+`,
porcupine): one register per profile must explain every answer in an order
that respects real time, where a write whose outcome the client never
learned may take effect at any later time, or never.

- **acknowledged**: writes answered 2xx. **lost**: acknowledged writes missing
  from the event log, or profiles whose final read is wrong. It must be 0.
- **failed requests**: writes and reads not answered 2xx (404 counts as an
  answer for a read), with their statuses; "timeout" is no answer in 20 s.
- **unavailable**: the longest time in which no write was acknowledged.
- **slowest failure**: the longest a failed write took to fail.
- **linearizable**: the checker's verdict, and the operations it checked.

| scenario | acknowledged | lost | linearizable | failed writes | failed reads | unavailable | slowest failure | notes |
|---|---:|---:|---|---|---|---:|---:|---|
`, time.Now().UTC().Format("2006-01-02 15:04 MST"))
	for _, l := range lines {
		b.WriteString(l.text + "\n")
	}
	if len(hostile) > 0 {
		b.WriteString("\n## Hostile input\n\n")
		for _, h := range hostile {
			b.WriteString("- " + h + "\n")
		}
		b.WriteString(fuzzLine + "\n")
	}
	b.WriteString("\nHow the system behaves, and why, is in [docs/faults.md](faults.md).\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

const fuzzLine = "- Fuzzing (`deploy/fuzz.sh`, 5 s per target in `make test`) and the server's timeouts and body limits are tested outside this package; see docs/faults.md."

// previousReport returns the scenario rows and the hostile-input lines
// (without their "- ") of the report at path, if there is one.
func previousReport(path string) (rows, hostile []string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil
	}
	inHostile := false
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "## Hostile input"):
			inHostile = true
		case strings.HasPrefix(l, "## "):
			inHostile = false
		case inHostile && strings.HasPrefix(l, "- ") && l != fuzzLine:
			hostile = append(hostile, strings.TrimPrefix(l, "- "))
		case strings.HasPrefix(l, "| ") && len(l) > 2 && l[2] >= '0' && l[2] <= '9':
			rows = append(rows, l)
		}
	}
	return rows, hostile
}
