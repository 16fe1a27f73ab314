// Package state is command-svc's current state of the profiles of the
// partitions this instance owns: the fold of those partitions of the event
// log, read from where the store left off whenever a partition is assigned
// (so a partition that comes back after another instance wrote to it is
// caught up first), and kept current by following the log. Commands check
// against it before they append.
package state

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/IBM/sarama"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
)

// Store holds the folded state and per-profile command locks. It is safe
// for concurrent use.
type Store struct {
	log         *slog.Logger
	codec       *pii.Codec
	claimsTopic string

	mu       sync.Mutex
	profiles map[string]events.Profile
	created  map[string]events.ProfileCreated // of idempotently created profiles
	claims   map[string]events.Claim          // by normalized email, of owned email partitions
	offsets  map[string]map[int32]int64       // next offset to fold, per topic and partition
	locks    map[string]*lockEntry
}

type lockEntry struct {
	mu   sync.Mutex
	refs int
}

// NewStore returns an empty Store; records of claimsTopic are email claims,
// all others events, which codec opens.
func NewStore(log *slog.Logger, codec *pii.Codec, claimsTopic string) *Store {
	return &Store{
		log: log, codec: codec, claimsTopic: claimsTopic,
		profiles: map[string]events.Profile{}, created: map[string]events.ProfileCreated{},
		claims: map[string]events.Claim{}, offsets: map[string]map[int32]int64{}, locks: map[string]*lockEntry{},
	}
}

// Claim returns the claim on a normalized email, if there is a live one.
func (s *Store) Claim(email string) (events.Claim, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.claims[email]
	return c, ok && !c.Released
}

// ClaimSeq returns the sequence number of the last claim record of email.
func (s *Store) ClaimSeq(email string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claims[email].Seq
}

// PutClaim records a claim (or its release) unless a later one is known.
func (s *Store) PutClaim(email string, c events.Claim) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.claims[email]; !ok || c.Seq >= cur.Seq {
		s.claims[email] = c
	}
}

// Get returns the current state of uid: the zero Profile if it never existed.
func (s *Store) Get(uid string) events.Profile {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.profiles[uid]
}

// Apply folds e into the state. An event the state already holds (by
// version) is a no-op, so the same event may arrive both from the command
// that appended it and from the log. It returns Apply's error for an event
// that does not fit.
func (s *Store) Apply(e events.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.profiles[e.UID]
	if events.IsDuplicate(cur, e) {
		return nil
	}
	next, err := events.Apply(cur, e)
	if err != nil {
		return err
	}
	s.profiles[e.UID] = next
	if c, ok := e.Data.(events.ProfileCreated); ok && IdempotentUID(e.UID) {
		s.created[e.UID] = c
	}
	return nil
}

// CreatedWith returns the payload an idempotently created profile was
// created with.
func (s *Store) CreatedWith(uid string) (events.ProfileCreated, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.created[uid]
	return c, ok
}

// IdempotentUID reports whether uid was derived from an Idempotency-Key: a
// name-based (version 5) UUID, where every other uid is random (version 4).
func IdempotentUID(uid string) bool { return len(uid) == 36 && uid[14] == '5' }

// Lock serializes commands on one profile: it blocks until the caller holds
// uid's lock and returns the function that releases it. Locks of different
// profiles are independent, and an idle lock takes no memory.
func (s *Store) Lock(uid string) (unlock func()) {
	s.mu.Lock()
	l := s.locks[uid]
	if l == nil {
		l = &lockEntry{}
		s.locks[uid] = l
	}
	l.refs++
	s.mu.Unlock()

	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.locks, uid)
		}
		s.mu.Unlock()
	}
}

// Start returns where to resume partition p of the event log: after the
// last record this store has folded, or at the beginning.
func (s *Store) Start(topic string, p int32) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off, ok := s.offsets[topic][p]; ok {
		return off, nil
	}
	return sarama.OffsetOldest, nil
}

// Handle folds a batch of event log records of partition p into the store
// and remembers where the batch ends. Undecodable or inapplicable records
// are logged and skipped.
func (s *Store) Handle(_ context.Context, topic string, p int32, records []*sarama.ConsumerMessage) error {
	for _, r := range records {
		var err error
		if topic == s.claimsTopic {
			var c events.Claim
			if c, err = events.DecodeClaim(r.Value, kafkax.HeaderValue(r, events.HeaderSeq)); err == nil {
				s.PutClaim(string(r.Key), c)
			}
		} else {
			var e events.Event
			if e, err = s.codec.DecodeEvent(r.Value); errors.Is(err, pii.ErrKeyUnavailable) {
				return err // the partition is caught up again after the rejoin; nothing is skipped
			} else if err == nil {
				err = s.Apply(e)
			}
		}
		if err != nil {
			s.log.Error("skipping record that does not fold", "topic", topic, "partition", p, "offset", r.Offset, "err", err)
		}
	}
	s.mu.Lock()
	if s.offsets[topic] == nil {
		s.offsets[topic] = map[int32]int64{}
	}
	s.offsets[topic][p] = records[len(records)-1].Offset + 1
	s.mu.Unlock()
	return nil
}
