// Package state is command-svc's current state of the profiles of the
// partitions this instance owns: the fold of those partitions of the event
// log and of the email claims topic, kept in Pebble with, in the same
// atomic batches, the next offset of every partition it folded. Whenever a
// partition is assigned it is read from where the store left off, also
// after a restart, so a restart reads only the tail of the log, and a
// partition that comes back after another instance wrote to it is caught
// up first. Commands check against it before they append.
//
// The store is a cache of Kafka: deleting its directory loses nothing, the
// next assignment refolds the partitions from the beginning (see
// pebblex.Open for a store that is corrupt or from another cluster).
package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pebblex"
	"profiles/platform/pii"
)

// Layout is the key layout of the store (see pebblex.Options.Layout):
//
//	p\0uid   → the profile's state (events.MarshalStored)
//	c\0uid   → the ProfileCreated of a live profile created under an
//	           Idempotency-Key (JSON; deleted with the profile)
//	m\0email → the last claim record of a normalized email, or its
//	           release (storedClaim, JSON)
//	q\0uid   → the latest writes of the profile that carried a request id
//	           (see RequestID): their ids, last versions and times
//	           (appliedWrites, JSON); nothing personal
//	o\0topic\0partition → next offset (pebblex.SetOffset)
const Layout = "1"

var (
	prefixProfile = []byte("p\x00")
	prefixCreated = []byte("c\x00")
	prefixClaim   = []byte("m\x00")
	prefixApplied = []byte("q\x00")
)

// keepApplied is how many request ids a profile's ledger keeps. A write is
// sent again (routing.HeaderRequestID) within seconds of its first
// attempt, while its partition changes hands, and the partition takes no
// write in between; a few is plenty.
const keepApplied = 16

// appliedWrite is one entry of a profile's ledger of writes: the request
// id of a write, and the version and time of its last event.
type appliedWrite struct {
	ID      string    `json:"id"`
	Version int64     `json:"v"`
	At      time.Time `json:"at"`
}

// RequestID reports whether an event id is a write's request id (a
// UUIDv7, as routing.HeaderRequestID gives a forwarded write), which the
// write's last event carries. Every other event id is a random UUIDv4.
func RequestID(id string) bool { return len(id) == 36 && id[14] == '7' }

var recordsRead = promauto.NewCounter(prometheus.CounterOpts{
	Name: "profiles_command_state_records_read_total",
	Help: "Records of the event log and the claims topic folded into the state store (after a restart, only those past the store's offsets).",
})

// DefaultCacheSize is Options.CacheSize's zero value: the block cache that
// keeps the state of the profiles being written to in memory.
const DefaultCacheSize = 32 << 20

// Options say where the store is and what it is built from.
type Options struct {
	// Dir is the store's directory, in FS (vfs.Default for a real
	// directory, vfs.NewMem() in tests; nil means vfs.Default).
	Dir string
	FS  vfs.FS
	// Origin names the Kafka cluster and event log the state is folded
	// from (see pebblex.Options.Origin).
	Origin string
	// CacheSize is Pebble's block cache in bytes; 0 means
	// DefaultCacheSize.
	CacheSize int64
}

// Store holds the folded state and per-profile command locks. It is safe
// for concurrent use. Writes (Apply, PutClaim, Handle) read and write a
// profile or claim under one mutex, so an event that arrives both from the
// command that appended it and from the log is folded once.
type Store struct {
	log         *slog.Logger
	codec       *pii.Codec
	claimsTopic string
	db          *pebble.DB
	closed      sync.Once

	mu    sync.Mutex // serializes the writes
	lmu   sync.Mutex
	locks map[string]*lockEntry
}

type lockEntry struct {
	mu   sync.Mutex
	refs int
}

// storedClaim is the value of a claim key.
type storedClaim struct {
	events.Claim
	Released bool `json:"released,omitempty"`
}

// Open opens (or creates) the store; records of claimsTopic are email
// claims, all others events, which codec opens. Close it after the
// consumer group has stopped.
func Open(log *slog.Logger, codec *pii.Codec, claimsTopic string, o Options) (*Store, error) {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultCacheSize
	}
	db, err := pebblex.Open(o.Dir, o.FS, pebblex.Options{What: "command-svc's state", Store: "command_state", Layout: Layout, Origin: o.Origin, CacheSize: o.CacheSize, Log: log})
	if err != nil {
		return nil, err
	}
	return &Store{log: log, codec: codec, claimsTopic: claimsTopic, db: db, locks: map[string]*lockEntry{}}, nil
}

// Close flushes and closes the store, which must not be used afterwards.
// Calls after the first return nil.
func (s *Store) Close() (err error) {
	s.closed.Do(func() { err = s.db.Close() })
	return err
}

func key(prefix []byte, id string) []byte { return append(append([]byte{}, prefix...), id...) }

// ErrStore wraps the errors of the store itself (reading or writing
// Pebble, an entry that does not decode), as opposed to those of a record
// that does not fold: Handle skips such a record, but fails on ErrStore.
var ErrStore = errors.New("command-svc's state store failed")

// getJSON decodes key's value into v and reports whether it was there.
func getJSON(r pebblex.Reader, k []byte, v any) (bool, error) {
	raw, err := pebblex.Get(r, k)
	if err != nil || raw == nil {
		return false, storeErr(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("%w: corrupt entry %q: %w", ErrStore, k, err)
	}
	return true, nil
}

func setJSON(b *pebble.Batch, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err == nil {
		err = b.Set(k, raw, nil)
	}
	return storeErr(err)
}

func getProfile(r pebblex.Reader, uid string) (events.Profile, error) {
	k := key(prefixProfile, uid)
	raw, err := pebblex.Get(r, k)
	if err != nil || raw == nil {
		return events.Profile{}, storeErr(err)
	}
	p, err := events.UnmarshalStored(raw)
	if err != nil {
		return events.Profile{}, fmt.Errorf("%w: corrupt entry %q: %w", ErrStore, k, err)
	}
	return p, nil
}

// storeErr wraps a failure of Pebble in ErrStore (nil stays nil).
func storeErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrStore, err)
}

func getClaim(r pebblex.Reader, email string) (events.Claim, bool, error) {
	var st storedClaim
	found, err := getJSON(r, key(prefixClaim, email), &st)
	st.Claim.Released = st.Released
	return st.Claim, found, err
}

// Claim returns the claim on a normalized email, if there is a live one.
func (s *Store) Claim(email string) (events.Claim, bool, error) {
	c, found, err := getClaim(s.db, email)
	return c, found && !c.Released, err
}

// ClaimSeq returns the sequence number of the last claim record of email
// (0 if it has none).
func (s *Store) ClaimSeq(email string) (int64, error) {
	c, _, err := getClaim(s.db, email)
	return c.Seq, err
}

// PutClaim records a claim (or its release) unless a later one is known.
func (s *Store) PutClaim(email string, c events.Claim) error {
	return s.write(func(b *pebble.Batch) error { return putClaim(b, email, c) })
}

func putClaim(b *pebble.Batch, email string, c events.Claim) error {
	cur, found, err := getClaim(b, email)
	if err != nil || (found && c.Seq < cur.Seq) {
		return err
	}
	return setJSON(b, key(prefixClaim, email), storedClaim{Claim: c, Released: c.Released})
}

// Get returns the current state of uid: the zero Profile if it never
// existed.
func (s *Store) Get(uid string) (events.Profile, error) { return getProfile(s.db, uid) }

// Apply folds e into the state. An event the state already holds (by
// version) is a no-op, so the same event may arrive both from the command
// that appended it and from the log. It returns events.Apply's error for
// an event that does not fit.
func (s *Store) Apply(e events.Event) error {
	return s.write(func(b *pebble.Batch) error { return apply(b, e) })
}

func apply(b *pebble.Batch, e events.Event) error {
	cur, err := getProfile(b, e.UID)
	if err != nil || events.IsDuplicate(cur, e) {
		return err
	}
	next, err := events.Apply(cur, e)
	if err != nil {
		return err
	}
	raw, err := events.MarshalStored(next)
	if err == nil {
		err = b.Set(key(prefixProfile, e.UID), raw, nil)
	}
	if err != nil {
		return storeErr(err)
	}
	if RequestID(e.ID) {
		var ledger []appliedWrite
		if _, err := getJSON(b, key(prefixApplied, e.UID), &ledger); err != nil {
			return err
		}
		ledger = append(ledger, appliedWrite{ID: e.ID, Version: e.Version, At: e.OccurredAt})
		if len(ledger) > keepApplied {
			ledger = ledger[len(ledger)-keepApplied:]
		}
		if err := setJSON(b, key(prefixApplied, e.UID), ledger); err != nil {
			return err
		}
	}
	switch d := e.Data.(type) {
	case events.ProfileCreated:
		if IdempotentUID(e.UID) {
			return setJSON(b, key(prefixCreated, e.UID), d)
		}
	case events.ProfileDeleted:
		// The payload holds the profile's personal data, which a delete
		// erases (crypto-shredding): the store keeps none of it.
		return storeErr(b.Delete(key(prefixCreated, e.UID), nil))
	}
	return nil
}

// write runs f on an indexed batch under s.mu and commits what it wrote.
// NoSync: the write-ahead log keeps a batch atomic, and a machine crash can
// only lose a suffix of batches, state and offsets together, which the
// next assignment reads again from Kafka.
func (s *Store) write(f func(b *pebble.Batch) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.db.NewIndexedBatch()
	defer b.Close()
	if err := f(b); err != nil {
		return err
	}
	if b.Empty() {
		return nil
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("%w: commit: %w", ErrStore, err)
	}
	return nil
}

// Applied returns the version and time of the last event of the write of
// uid whose request id is requestID, if the state holds that event (see
// RequestID).
func (s *Store) Applied(uid, requestID string) (version int64, at time.Time, ok bool, err error) {
	var ledger []appliedWrite
	if _, err := getJSON(s.db, key(prefixApplied, uid), &ledger); err != nil {
		return 0, time.Time{}, false, err
	}
	for _, w := range ledger {
		if w.ID == requestID {
			return w.Version, w.At, true, nil
		}
	}
	return 0, time.Time{}, false, nil
}

// CreatedWith returns the payload an idempotently created profile was
// created with.
func (s *Store) CreatedWith(uid string) (events.ProfileCreated, bool, error) {
	var c events.ProfileCreated
	ok, err := getJSON(s.db, key(prefixCreated, uid), &c)
	return c, ok, err
}

// IdempotentUID reports whether uid was derived from an Idempotency-Key: a
// name-based (version 5) UUID, where every other uid is random (version 4).
func IdempotentUID(uid string) bool { return len(uid) == 36 && uid[14] == '5' }

// Lock serializes commands on one profile: it blocks until the caller holds
// uid's lock and returns the function that releases it. Locks of different
// profiles are independent, and an idle lock takes no memory.
func (s *Store) Lock(uid string) (unlock func()) {
	s.lmu.Lock()
	l := s.locks[uid]
	if l == nil {
		l = &lockEntry{}
		s.locks[uid] = l
	}
	l.refs++
	s.lmu.Unlock()

	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.lmu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.locks, uid)
		}
		s.lmu.Unlock()
	}
}

// Start returns where to resume partition p of topic: after the last
// record this store has folded, or at the beginning.
func (s *Store) Start(topic string, p int32) (int64, error) {
	off, ok, err := pebblex.Offset(s.db, topic, p)
	if err != nil {
		return 0, storeErr(err)
	}
	if !ok {
		return sarama.OffsetOldest, nil
	}
	return off, nil
}

// Offsets returns the next offset of every partition of topic that the
// store has folded, owned now or not.
func (s *Store) Offsets(topic string) (map[int32]int64, error) {
	offs, err := pebblex.Offsets(s.db, topic)
	return offs, storeErr(err)
}

// Handle folds a batch of records of partition p of topic into the store,
// with the offset after the batch, in one atomic batch. Undecodable or
// inapplicable records are logged and skipped.
func (s *Store) Handle(_ context.Context, topic string, p int32, records []*sarama.ConsumerMessage) error {
	recordsRead.Add(float64(len(records)))
	return s.write(func(b *pebble.Batch) error {
		for _, r := range records {
			if err := s.fold(b, topic, r); errors.Is(err, pii.ErrKeyUnavailable) || errors.Is(err, ErrStore) {
				return err // kafkax.Group hands the batch over again; nothing is skipped
			} else if err != nil {
				s.log.Error("skipping record that does not fold", "topic", topic, "partition", p, "offset", r.Offset, "err", err)
			}
		}
		return storeErr(pebblex.SetOffset(b, topic, p, records[len(records)-1].Offset+1))
	})
}

func (s *Store) fold(b *pebble.Batch, topic string, r *sarama.ConsumerMessage) error {
	if topic == s.claimsTopic {
		c, err := events.DecodeClaim(r.Value, kafkax.HeaderValue(r, events.HeaderSeq))
		if err != nil {
			return err
		}
		return putClaim(b, string(r.Key), c)
	}
	e, err := s.codec.DecodeEvent(r.Value)
	if err != nil {
		return err
	}
	return apply(b, e)
}
