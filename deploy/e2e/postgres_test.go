package e2e

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"profiles/platform/testenv"
)

// pgBase is the test database of the PostgreSQL server deploy/test.sh
// starts (`make test`).
var pgBase = os.Getenv("PROFILES_TEST_POSTGRES")

// needPostgres skips (loudly) or fails the test when there is no server.
func needPostgres(t *testing.T) {
	t.Helper()
	if pgBase == "" {
		testenv.Missing(t, "PROFILES_TEST_POSTGRES is not set (the test PostgreSQL); run `make test`")
	}
}

// psqlPath returns the psql of the server's installation, or the one on PATH.
func psqlPath(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command(filepath.Join(repoRoot, "deploy", "postgres.sh"), "bindir").Output(); err == nil {
		if p := filepath.Join(strings.TrimSpace(string(out)), "psql"); fileExists(p) {
			return p
		}
	}
	p, err := exec.LookPath("psql")
	if err != nil {
		t.Fatal("psql not found")
	}
	return p
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// psql runs sql on the database at dbURL and returns its unaligned,
// tuples-only output.
func psql(t *testing.T, dbURL, sql string) string {
	t.Helper()
	cmd := exec.Command(psqlPath(t), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", dbURL, "-c", sql)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("psql %q: %v\n%s", sql, err, stderr.String())
	}
	return string(out)
}

// createDatabase creates a database of the test's own, dropped when the
// test ends (after its system stopped), and returns its URL.
func createDatabase(t *testing.T) string {
	t.Helper()
	needPostgres(t)
	name := fmt.Sprintf("e2e_%06d", rand.IntN(1e6))
	psql(t, pgBase, "CREATE DATABASE "+name)
	t.Cleanup(func() { psql(t, pgBase, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") })
	u, err := url.Parse(pgBase)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// pgTableDump returns the whole profiles table, ordered by uid, in COPY's
// text format: one line per row, fields separated by tabs.
func pgTableDump(t *testing.T, dbURL string) string {
	t.Helper()
	return psql(t, dbURL, `COPY (SELECT uid, username, email, display_name, version, created_at, updated_at,
		(extract(epoch FROM created_at) * 1000000)::bigint, (extract(epoch FROM updated_at) * 1000000)::bigint
		FROM profiles ORDER BY uid) TO STDOUT`)
}

// pgSameAsSnapshots compares the table with the snapshot topic's latest
// state: a row for each live profile with its fields and version, and none
// for a deleted one. It returns "" when they are equal.
func pgSameAsSnapshots(t *testing.T, dump string, want map[string][]byte) string {
	t.Helper()
	rows := map[string][]string{}
	for line := range strings.Lines(dump) {
		f := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
		if len(f) != 9 {
			t.Fatalf("dump line %q", line)
		}
		rows[f[0]] = f
	}
	for uid, value := range want {
		p, err := codecOfTests.DecodeSnapshot(uid, value, "") // sealed: opened with the system's keys
		if err != nil {
			t.Fatalf("snapshot of %s: %v", uid, err)
		}
		row, ok := rows[uid]
		if !ok {
			return fmt.Sprintf("live profile %s (v%d) has no row", uid, p.Version)
		}
		exp := []string{uid, p.Username, p.Email, p.DisplayName, strconv.FormatInt(p.Version, 10)}
		if got := row[:5]; strings.Join(got, "\t") != strings.Join(exp, "\t") {
			return fmt.Sprintf("row %q, want %q", got, exp)
		}
		if row[7] != strconv.FormatInt(p.CreatedAt.UnixMicro(), 10) || row[8] != strconv.FormatInt(p.UpdatedAt.UnixMicro(), 10) {
			return fmt.Sprintf("row %s: timestamps %s %s, want %v %v", uid, row[5], row[6], p.CreatedAt, p.UpdatedAt)
		}
	}
	for uid := range rows {
		if _, ok := want[uid]; !ok {
			return fmt.Sprintf("row %s of a deleted or unknown profile", uid)
		}
	}
	return ""
}

// pgWaitCaughtUp waits until the replicator has stored everything of the
// snapshot topic (its positions at the topic's end, the topic no longer
// growing) and the table equals the topic's state, and returns the table.
func pgWaitCaughtUp(t *testing.T, s *System, dbURL string) string {
	t.Helper()
	topic := s.env["SNAPSHOTS_TOPIC"]
	kc := KafkaReadCommitted(t)
	deadline := time.Now().Add(90 * time.Second)
	var lastEnd int64 = -1
	for {
		end := EndOffsets(t, kc, topic)
		positions := map[int32]int64{}
		var pos int64
		for _, line := range strings.Fields(psql(t, dbURL,
			"SELECT partition || ':' || next_offset FROM replicator_positions WHERE topic = '"+topic+"'")) {
			var p int32
			var next int64
			if _, err := fmt.Sscanf(line, "%d:%d", &p, &next); err == nil {
				positions[p], pos = next, pos+next
			}
		}
		// The end counts the projector's commit markers, which the
		// replicator never receives: it has read everything when only
		// markers lie between its positions and the end.
		atEnd := true
		for _, p := range PartitionsOf(t, kc, topic) {
			atEnd = atEnd && ReadToEnd(t, kc, topic, p, positions[p])
		}
		why := fmt.Sprintf("positions at %d of %d offsets (the rest markers: %t)", pos, end, atEnd)
		if atEnd && end == lastEnd {
			dump := pgTableDump(t, dbURL)
			if why = pgSameAsSnapshots(t, dump, compactedState(t, kc, topic)); why == "" {
				return dump
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the table did not catch up with %s: %s", topic, why)
		}
		lastEnd = end
		time.Sleep(500 * time.Millisecond)
	}
}

// pgWaitLagZero waits until the replicator's lag metric, sampled every
// few seconds, says 0.
func pgWaitLagZero(t *testing.T, s *System, rep string) {
	t.Helper()
	metric := `profiles_replicator_lag_records{sink="postgres",topic="` + s.env["SNAPSHOTS_TOPIC"] + `"}`
	deadline := time.Now().Add(30 * time.Second)
	for {
		lag := s.MetricOr(rep, metric, -1)
		if lag == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still %v", metric, lag)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// Feeds to other systems, after the same random workload of 5,000
// operations, with both replicators killed (SIGKILL) mid-way and started
// again:
//   - the mirror cluster's compacted snapshot state equals ours key for
//     key, and its event log equals ours record for record;
//   - the PostgreSQL profiles table equals the snapshot topic's state, and
//     a replay from offset 0 (positions reset) changes nothing, byte for
//     byte.
func TestFeedsEndEqualAfterAWorkloadWithReplicatorsKilled(t *testing.T) {
	needKafka(t)
	t0 := time.Now()
	dbURL := createDatabase(t)
	target := startTargetCluster(t)
	s := StartSystem(t, Options{Query: 2, Command: 2, Partitions: 6})
	rep := s.startReplicator(map[string]string{"SINK": "postgres", "POSTGRES_URL": dbURL})
	mirror := s.startReplicator(map[string]string{
		"SINK": "kafka", "TARGET_BROKERS": target, "MIRROR_EVENTS": "true",
		"TRANSACTIONAL_ID": s.name + ".mirror", "CHECKPOINT_TOPIC": s.name + ".mirror-checkpoints",
	})
	t.Logf("system and replicator ready in %s", time.Since(t0).Round(time.Millisecond))
	topic := s.env["SNAPSHOTS_TOPIC"]
	recordsMetric := `profiles_replicator_records_total{sink="postgres",topic="` + topic + `"}`

	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		randomWorkload(t, s, 5_000)
	}()
	// Kill the replicator while the workload runs, once it has stored a
	// few hundred records, and start it again.
	var before float64
	for deadline := time.Now().Add(60 * time.Second); before < 300 && time.Now().Before(deadline); {
		time.Sleep(time.Second)
		before = s.MetricOr(rep, recordsMetric, 0)
	}
	s.Kill(rep)
	s.Kill(mirror)
	time.Sleep(2 * time.Second)
	s.Start(rep)
	s.Start(mirror)
	<-done
	workload := time.Since(start)
	if before == 0 {
		t.Fatal("the replicator had stored nothing in a minute of the workload")
	}

	checkMirror(t, s, target)

	t1 := time.Now()
	dump := pgWaitCaughtUp(t, s, dbURL)
	t.Logf("table equal to the snapshot topic %s after the workload", time.Since(t1).Round(time.Millisecond))
	rows := strings.Count(dump, "\n")
	total := CountRecords(t, KafkaReadCommitted(t), topic)
	resumed := s.Metric(rep, recordsMetric)
	t.Logf("workload of 5,000 operations: %s; table equals the snapshot topic: %d live profiles, %d snapshot records; "+
		"the replicator stored %v records before the kill and %v after its restart", workload.Round(time.Millisecond), rows, total, before, resumed)
	if rows == 0 {
		t.Fatal("no live profile at the end of the workload")
	}
	if int(resumed) >= total {
		t.Fatalf("the restarted replicator read %v of %d records: it did not resume at its stored positions", resumed, total)
	}

	// Replay from offset 0: reset the positions and catch up again.
	t2 := time.Now()
	s.Stop(rep)
	s.SetEnv(rep, "RESET_POSITIONS", "true")
	s.Start(rep)
	s.WaitReady(rep)
	s.SetEnv(rep, "RESET_POSITIONS", "false")
	again := pgWaitCaughtUp(t, s, dbURL)
	if replayed := s.Metric(rep, recordsMetric); int(replayed) != total {
		t.Fatalf("after the reset the replicator read %v records, want all %d", replayed, total)
	}
	if again != dump {
		t.Fatalf("the replay from offset 0 changed the table (%d rows before, %d after)", rows, strings.Count(again, "\n"))
	}
	t.Logf("replay from offset 0 (%d records) in %s: table unchanged, byte for byte", total, time.Since(t2).Round(time.Millisecond))
	pgWaitLagZero(t, s, rep)
}
