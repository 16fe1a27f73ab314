package replicator

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"profiles/events"
	"profiles/platform/pii"
	"profiles/platform/testenv"
)

// These tests run the sink's SQL against the real PostgreSQL server that
// deploy/test.sh starts (`make test`), each in a schema of its own.

const pgTopic = "profile-snapshots"

// testCodec is a codec without keys: the tests write snapshots in clear.
func testCodec(t *testing.T) *pii.Codec {
	t.Helper()
	kek, err := pii.NewKEK(make([]byte, pii.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return pii.NewCodec(kek, nil)
}

// pgTestSink returns a sink on a fresh schema of the test database, and a
// connection to that schema for the test's own queries.
func pgTestSink(t *testing.T) (*PostgresSink, *pgx.Conn) {
	t.Helper()
	base := testenv.Require(t, "PROFILES_TEST_POSTGRES", "the test PostgreSQL")
	ctx := context.Background()
	schema := fmt.Sprintf("t_%s_%06d", strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "_")), rand.IntN(1e6))
	if len(schema) > 60 {
		schema = schema[len(schema)-60:]
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()

	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to %s: %v", base, err)
	}
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		admin.Close(context.Background())
	})
	sink, err := NewPostgresSink(ctx, u.String(), testCodec(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sink.Close)
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return sink, conn
}

var pgT0 = time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)

// pgSnap is a snapshot record of a live profile at version v.
func pgSnap(uid string, v int64, username, email string) *sarama.ConsumerMessage {
	b, err := json.Marshal(events.Profile{
		UID: uid, Username: username, DisplayName: "D " + username, Email: email, Version: v,
		CreatedAt: pgT0, UpdatedAt: pgT0.Add(time.Duration(v) * time.Second),
	})
	if err != nil {
		panic(err)
	}
	return &sarama.ConsumerMessage{Key: []byte(uid), Value: b, Headers: pgVersionHeader(v)}
}

// pgTomb is the tombstone of uid deleted at version v.
func pgTomb(uid string, v int64) *sarama.ConsumerMessage {
	return &sarama.ConsumerMessage{Key: []byte(uid), Headers: pgVersionHeader(v)}
}

func pgVersionHeader(v int64) []*sarama.RecordHeader {
	return []*sarama.RecordHeader{{Key: []byte(events.HeaderVersion), Value: []byte(strconv.FormatInt(v, 10))}}
}

// pgWrite writes recs as one batch of partition p, numbering their offsets
// from first, and returns the next offset.
func pgWrite(t *testing.T, s *PostgresSink, p int32, first int64, recs ...*sarama.ConsumerMessage) int64 {
	t.Helper()
	if err := s.Write(context.Background(), pgTopic, p, pgOffsets(p, first, recs), first+int64(len(recs))); err != nil {
		t.Fatal(err)
	}
	return first + int64(len(recs))
}

func pgOffsets(p int32, first int64, recs []*sarama.ConsumerMessage) []*sarama.ConsumerMessage {
	for i, r := range recs {
		r.Topic, r.Partition, r.Offset = pgTopic, p, first+int64(i)
	}
	return recs
}

// pgDump returns every row of profiles, ordered by uid, as text.
func pgDump(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	rows, err := conn.Query(context.Background(),
		`SELECT uid, username, email, display_name, version, created_at, updated_at FROM profiles ORDER BY uid`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var uid, username, email, display string
		var version int64
		var created, updated *time.Time
		if err := rows.Scan(&uid, &username, &email, &display, &version, &created, &updated); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s %s %q v%d %v %v\n", uid, username, email, display, version, created, updated)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// pgRow returns the username and version of uid's row, or version 0.
func pgRow(t *testing.T, conn *pgx.Conn, uid string) (string, int64) {
	t.Helper()
	var username string
	var version int64
	err := conn.QueryRow(context.Background(), `SELECT username, version FROM profiles WHERE uid = $1`, uid).Scan(&username, &version)
	if err == pgx.ErrNoRows {
		return "", 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return username, version
}

func pgPosition(t *testing.T, s *PostgresSink, p int32) (int64, bool) {
	t.Helper()
	off, ok, err := s.Position(context.Background(), pgTopic, p)
	if err != nil {
		t.Fatal(err)
	}
	return off, ok
}

func TestPostgresSinkNewerVersionWinsOlderIsIgnored(t *testing.T) {
	s, conn := pgTestSink(t)
	next := pgWrite(t, s, 0, 0, pgSnap("a", 2, "a2", "a2@x.example"))
	next = pgWrite(t, s, 0, next, pgSnap("a", 1, "a1", "a1@x.example")) // older: ignored
	if u, v := pgRow(t, conn, "a"); u != "a2" || v != 2 {
		t.Fatalf("after v2 then v1: row %q v%d, want a2 v2", u, v)
	}
	pgWrite(t, s, 0, next, pgSnap("a", 2, "other", "o@x.example"), pgSnap("a", 3, "a3", "a3@x.example"))
	if u, v := pgRow(t, conn, "a"); u != "a3" || v != 3 {
		t.Fatalf("after v2 again and v3: row %q v%d, want a3 v3", u, v)
	}
	var email, display string
	var created, updated time.Time
	if err := conn.QueryRow(context.Background(), `SELECT email, display_name, created_at, updated_at FROM profiles WHERE uid = 'a'`).
		Scan(&email, &display, &created, &updated); err != nil {
		t.Fatal(err)
	}
	if email != "a3@x.example" || display != "D a3" || !created.Equal(pgT0) || !updated.Equal(pgT0.Add(3*time.Second)) {
		t.Fatalf("row: %s %q %v %v", email, display, created, updated)
	}
}

func TestPostgresSinkTombstones(t *testing.T) {
	s, conn := pgTestSink(t)
	next := pgWrite(t, s, 1, 0, pgSnap("a", 3, "a", "a@x.example"), pgSnap("b", 2, "b", "b@x.example"), pgSnap("c", 5, "c", "c@x.example"))

	// A tombstone of a version older than the row's does not delete it.
	next = pgWrite(t, s, 1, next, pgTomb("a", 2))
	if _, v := pgRow(t, conn, "a"); v != 3 {
		t.Fatalf("an older tombstone deleted the row (version now %d)", v)
	}
	// One at the row's version (or newer) does.
	next = pgWrite(t, s, 1, next, pgTomb("a", 3), pgTomb("b", 9))
	if _, v := pgRow(t, conn, "a"); v != 0 {
		t.Fatal("the tombstone at the row's version did not delete it")
	}
	if _, v := pgRow(t, conn, "b"); v != 0 {
		t.Fatal("a newer tombstone did not delete the row")
	}
	// A tombstone without the version header deletes whatever the version.
	pgWrite(t, s, 1, next, &sarama.ConsumerMessage{Key: []byte("c")}, pgTomb("never-seen", 4))
	if _, v := pgRow(t, conn, "c"); v != 0 {
		t.Fatal("a tombstone without a version header did not delete the row")
	}
	if d := pgDump(t, conn); d != "" {
		t.Fatalf("rows left:\n%s", d)
	}
}

func TestPostgresSinkRedeliveryIsANoOp(t *testing.T) {
	s, conn := pgTestSink(t)
	pgWrite(t, s, 2, 0, pgSnap("a", 1, "a", "a@x.example"), pgSnap("b", 1, "b", "b@x.example"), pgSnap("c", 1, "c", "c@x.example"))
	batch := func() []*sarama.ConsumerMessage {
		return []*sarama.ConsumerMessage{
			pgSnap("a", 2, "a2", "a2@x.example"), pgTomb("b", 2), pgSnap("d", 1, "d", "d@x.example"),
			pgSnap("a", 3, "a3", "a3@x.example"), pgSnap("d", 2, "d2", "d2@x.example"),
		}
	}
	next := pgWrite(t, s, 2, 3, batch()...)
	want := pgDump(t, conn)
	if !strings.Contains(want, "a a3 ") || strings.Contains(want, "\nb ") || !strings.Contains(want, "d d2 ") {
		t.Fatalf("after the batch:\n%s", want)
	}
	// The same batch again, as after a crash between the commit and the
	// caller hearing of it.
	if again := pgWrite(t, s, 2, 3, batch()...); again != next {
		t.Fatal(again)
	}
	if got := pgDump(t, conn); got != want {
		t.Fatalf("redelivery changed the table:\n%s\nwant:\n%s", got, want)
	}
	if off, ok := pgPosition(t, s, 2); !ok || off != next {
		t.Fatalf("position %d %v, want %d", off, ok, next)
	}
}

// A batch is all or nothing: when a statement fails mid-way, neither its
// rows nor its position are stored, and the batch can be written again.
func TestPostgresSinkBatchIsAtomicWithItsPosition(t *testing.T) {
	s, conn := pgTestSink(t)
	ctx := context.Background()
	if off, ok := pgPosition(t, s, 3); ok {
		t.Fatalf("position %d before any write", off)
	}
	next := pgWrite(t, s, 3, 0, pgSnap("a", 1, "a", "a@x.example"))
	before := pgDump(t, conn)

	// The server rejects the third statement of the next batch.
	if _, err := conn.Exec(ctx, `ALTER TABLE profiles ADD CONSTRAINT no_boom CHECK (uid <> 'boom')`); err != nil {
		t.Fatal(err)
	}
	recs := pgOffsets(3, next, []*sarama.ConsumerMessage{
		pgSnap("a", 2, "a2", "a2@x.example"), pgSnap("b", 1, "b", "b@x.example"), pgSnap("boom", 1, "boom", "boom@x.example"), pgTomb("a", 3),
	})
	err := s.Write(ctx, pgTopic, 3, recs, next+int64(len(recs)))
	if err == nil || !strings.Contains(err.Error(), "no_boom") {
		t.Fatalf("write: %v, want the constraint's error", err)
	}
	if got := pgDump(t, conn); got != before {
		t.Fatalf("a failed batch changed the table:\n%s\nwant:\n%s", got, before)
	}
	if off, ok := pgPosition(t, s, 3); !ok || off != next {
		t.Fatalf("a failed batch moved the position to %d (%v), want %d", off, ok, next)
	}

	// Once the cause is gone, the same batch applies in full.
	if _, err := conn.Exec(ctx, `ALTER TABLE profiles DROP CONSTRAINT no_boom`); err != nil {
		t.Fatal(err)
	}
	next = pgWrite(t, s, 3, next, recs...)
	if _, v := pgRow(t, conn, "a"); v != 0 {
		t.Fatal("a not deleted")
	}
	if _, v := pgRow(t, conn, "boom"); v != 1 {
		t.Fatal("boom not written")
	}
	if off, _ := pgPosition(t, s, 3); off != next {
		t.Fatalf("position %d, want %d", off, next)
	}
}

func TestPostgresSinkSkipsUndecodableRecords(t *testing.T) {
	s, conn := pgTestSink(t)
	skipped := testutil.ToFloat64(recordsSkipped.WithLabelValues("postgres", pgTopic))
	bad := []*sarama.ConsumerMessage{
		{Key: []byte("x"), Value: []byte("{not json")},
		{Key: []byte("y"), Value: pgSnap("someone-else", 1, "y", "y@x.example").Value}, // uid ≠ key
		{Key: nil, Value: pgSnap("z", 1, "z", "z@x.example").Value},                    // no key
	}
	next := pgWrite(t, s, 4, 0, append(bad, pgSnap("a", 1, "a", "a@x.example"))...)
	if got := pgDump(t, conn); !strings.HasPrefix(got, "a a ") || strings.Count(got, "\n") != 1 {
		t.Fatalf("table:\n%s", got)
	}
	if off, _ := pgPosition(t, s, 4); off != next {
		t.Fatalf("position %d, want %d (past the skipped records)", off, next)
	}
	if n := testutil.ToFloat64(recordsSkipped.WithLabelValues("postgres", pgTopic)) - skipped; n != 3 {
		t.Fatalf("skipped metric grew by %v, want 3", n)
	}
}

// Replaying a partition from offset 0 after Reset ends with the same
// table, even over a log that still holds the records before a tombstone
// (not compacted yet): the deleted row comes back for a moment and goes
// again at the tombstone.
func TestPostgresSinkReplayFromZeroChangesNothing(t *testing.T) {
	s, conn := pgTestSink(t)
	history := func() []*sarama.ConsumerMessage {
		return []*sarama.ConsumerMessage{
			pgSnap("a", 1, "a1", "a1@x.example"), pgSnap("b", 1, "b1", "b1@x.example"),
			pgSnap("a", 2, "a2", "a2@x.example"), pgTomb("a", 3),
			pgSnap("b", 2, "b2", "b2@x.example"), pgSnap("c", 1, "c1", "c1@x.example"),
		}
	}
	// Delivered in batches of two, on two partitions.
	for p := range int32(2) {
		recs := history()
		for i := 0; i < len(recs); i += 2 {
			pgWrite(t, s, p, int64(i), recs[i:i+2]...)
		}
	}
	want := pgDump(t, conn)
	if strings.Contains(want, "a ") || !strings.Contains(want, "b b2 ") {
		t.Fatalf("table:\n%s", want)
	}

	n, err := s.Reset(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("reset: %d positions, %v", n, err)
	}
	if off, ok := pgPosition(t, s, 0); ok {
		t.Fatalf("position %d after reset", off)
	}
	// The replay, one record per batch, watching the deleted row.
	recs := history()
	resurrected := false
	for i, r := range recs {
		pgWrite(t, s, 0, int64(i), r)
		if _, v := pgRow(t, conn, "a"); v > 0 {
			resurrected = true
		}
	}
	if !resurrected {
		t.Error("expected the deleted row to come back during the replay (the documented subtlety); did the sink change?")
	}
	if got := pgDump(t, conn); got != want {
		t.Fatalf("replay from 0 changed the table:\n%s\nwant:\n%s", got, want)
	}
	if off, _ := pgPosition(t, s, 0); off != int64(len(recs)) {
		t.Fatalf("position %d after the replay", off)
	}
}

// Partitions are written concurrently, on connections of the pool; and a
// second sink on the same database (a restart) finds the schema and the
// positions there.
func TestPostgresSinkConcurrentPartitionsAndRestart(t *testing.T) {
	s, conn := pgTestSink(t)
	var wg sync.WaitGroup
	const parts, perPart = 6, 200
	for p := range int32(parts) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var next int64
			for i := range perPart / 20 {
				var recs []*sarama.ConsumerMessage
				for j := range 20 {
					uid := fmt.Sprintf("p%d-u%d", p, j)
					recs = append(recs, pgSnap(uid, int64(i+1), fmt.Sprintf("%s-%d", uid, i), uid+"@x.example"))
				}
				if err := s.Write(context.Background(), pgTopic, p, pgOffsets(p, next, recs), next+20); err != nil {
					t.Error(err)
					return
				}
				next += 20
			}
		}()
	}
	wg.Wait()
	var rows, maxVersion int64
	if err := conn.QueryRow(context.Background(), `SELECT count(*), max(version) FROM profiles`).Scan(&rows, &maxVersion); err != nil {
		t.Fatal(err)
	}
	if rows != parts*20 || maxVersion != perPart/20 {
		t.Fatalf("%d rows, max version %d", rows, maxVersion)
	}

	again, err := NewPostgresSink(context.Background(), conn.Config().ConnString(), testCodec(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	for p := range int32(parts) {
		if off, ok := pgPosition(t, again, p); !ok || off != perPart {
			t.Fatalf("partition %d: position %d %v after a restart", p, off, ok)
		}
	}
}
