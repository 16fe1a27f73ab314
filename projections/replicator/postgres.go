package replicator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
)

var recordsSkipped = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "profiles_replicator_skipped_total",
	Help: "Source records the sink could not decode and skipped, by sink and source topic.",
}, []string{"sink", "topic"})

// PostgresSchema is the DDL the PostgresSink runs at start. It is
// idempotent, and runs under an advisory lock so that two sinks starting
// at once do not race on CREATE TABLE.
const PostgresSchema = `
CREATE TABLE IF NOT EXISTS profiles (
	uid          text PRIMARY KEY,
	username     text NOT NULL,
	email        text NOT NULL,
	display_name text NOT NULL,
	version      bigint NOT NULL,
	created_at   timestamptz,
	updated_at   timestamptz
);
CREATE TABLE IF NOT EXISTS replicator_positions (
	topic       text NOT NULL,
	partition   int NOT NULL,
	next_offset bigint NOT NULL,
	PRIMARY KEY (topic, partition)
);`

// schemaLock is the key of the advisory lock held while the schema is
// created (any constant; "prof" in ASCII).
const schemaLock = 0x70726f66

const (
	sqlUpsert = `INSERT INTO profiles (uid, username, email, display_name, version, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (uid) DO UPDATE SET
	username = EXCLUDED.username, email = EXCLUDED.email, display_name = EXCLUDED.display_name,
	version = EXCLUDED.version, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at
WHERE profiles.version < EXCLUDED.version`
	sqlDeleteUpTo  = `DELETE FROM profiles WHERE uid = $1 AND version <= $2`
	sqlDeleteAny   = `DELETE FROM profiles WHERE uid = $1`
	sqlSetPosition = `INSERT INTO replicator_positions (topic, partition, next_offset) VALUES ($1, $2, $3)
ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset`
	sqlPosition = `SELECT next_offset FROM replicator_positions WHERE topic = $1 AND partition = $2`
)

// PostgresSink keeps a PostgreSQL table, profiles, equal to the current
// state of the snapshot topic: one row per live profile, none for a
// deleted or unknown one.
//
//   - A live snapshot is an upsert by uid that applies only if its version
//     is newer than the row's (INSERT … ON CONFLICT … WHERE profiles.version
//     < EXCLUDED.version).
//   - A tombstone deletes the row if the row's version is not newer than
//     the tombstone's (its profile-version header); a tombstone without the
//     header deletes the row whatever its version.
//   - A record that does not decode as a snapshot is skipped, with a log
//     line and profiles_replicator_skipped_total.
//
// Each batch is one SQL transaction (its statements sent as one pgx.Batch)
// that also stores the batch's position in replicator_positions, so a
// sink killed at any point resumes right after the last committed batch.
// Redelivering a batch, or replaying a topic from offset 0 (Reset), is
// harmless: every statement is conditional on the version.
//
// The table does not remember deletes. So while a replay from offset 0
// runs over a topic that is not compacted yet (the older records of a
// deleted profile are still there, before its tombstone), an older upsert
// re-inserts the deleted row for a moment, until the tombstone, later in
// the same partition, deletes it again. The final state is the same; only
// a reader during the replay sees the old row. Likewise, a sink that lags
// behind the snapshot topic by more than its delete.retention.ms may
// never see a tombstone that compaction already removed, and keeps the
// row: keep the replicator running.
//
// Use NewPostgresSink; Close it. Write calls for different partitions run
// concurrently, each on a connection of the pool.
type PostgresSink struct {
	pool  *pgxpool.Pool
	codec *pii.Codec
	log   *slog.Logger
}

// NewPostgresSink connects to url (a libpq URL or key=value string; pgx
// sends unknown parameters, such as search_path, as run-time parameters)
// and creates the schema if needed. codec opens the snapshots written.
func NewPostgresSink(ctx context.Context, url string, codec *pii.Codec, log *slog.Logger) (*PostgresSink, error) {
	if log == nil {
		log = slog.Default()
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &PostgresSink{pool: pool, codec: codec, log: log}
	if err := s.createSchema(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

func (s *PostgresSink) createSchema(ctx context.Context) error {
	// Retry for a while: the database may still be starting.
	var err error
	for wait := 200 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(schemaLock)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, PostgresSchema)
			return err
		})
		if err == nil {
			return nil
		}
		s.log.Warn("postgres: cannot create the schema; retrying", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres: create schema: %w", err)
		case <-time.After(wait):
		}
	}
}

// Name implements Sink.
func (s *PostgresSink) Name() string { return "postgres" }

// Close closes the connection pool.
func (s *PostgresSink) Close() { s.pool.Close() }

// Pool returns the sink's connection pool (tests read the table with it).
func (s *PostgresSink) Pool() *pgxpool.Pool { return s.pool }

// Position implements Sink.
func (s *PostgresSink) Position(ctx context.Context, topic string, p int32) (int64, bool, error) {
	var off int64
	err := s.pool.QueryRow(ctx, sqlPosition, topic, p).Scan(&off)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("postgres: position of %s/%d: %w", topic, p, err)
	}
	return off, true, nil
}

// Reset deletes every stored position, so that the next run reads every
// source topic from offset 0 again. The table is kept: the replay is
// applied over it, and changes nothing that is already current.
func (s *PostgresSink) Reset(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM replicator_positions`)
	if err != nil {
		return 0, fmt.Errorf("postgres: reset positions: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Write implements Sink: the records' upserts and deletes and the new
// position, in one transaction.
func (s *PostgresSink) Write(ctx context.Context, topic string, p int32, records []*sarama.ConsumerMessage, next int64) error {
	b := &pgx.Batch{}
	for _, r := range records {
		header := kafkax.HeaderValue(r, events.HeaderVersion)
		prof, err := s.codec.DecodeSnapshot(string(r.Key), r.Value, header)
		if errors.Is(err, pii.ErrKeyUnavailable) {
			return err // retried from the checkpoint; the record is not skipped
		}
		if err != nil {
			s.log.Warn("postgres: skipping a record that is not a snapshot",
				"topic", topic, "partition", p, "offset", r.Offset, "err", err)
			recordsSkipped.WithLabelValues(s.Name(), topic).Inc()
			continue
		}
		if prof.Deleted {
			if _, err := strconv.ParseInt(header, 10, 64); err != nil {
				b.Queue(sqlDeleteAny, prof.UID)
			} else {
				b.Queue(sqlDeleteUpTo, prof.UID, prof.Version)
			}
			continue
		}
		b.Queue(sqlUpsert, prof.UID, prof.Username, prof.Email, prof.DisplayName, prof.Version,
			timestamp(prof.CreatedAt), timestamp(prof.UpdatedAt))
	}
	b.Queue(sqlSetPosition, topic, p, next)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("postgres: write %s/%d up to %d: %w", topic, p, next, err)
	}
	return nil
}

// timestamp maps the zero time (a field the snapshot lacks) to NULL.
func timestamp(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
