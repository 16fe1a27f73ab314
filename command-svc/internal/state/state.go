// Package state is command-svc's current state of every profile: the fold of
// the event log, restored at start by reading the log and kept current by
// following it. Commands check against it before they append.
package state

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/IBM/sarama"

	"profiles/events"
	"profiles/platform/kafkax"
)

// ErrNotReady is returned by Ready until the event log has been read up to
// the end it had at start.
var ErrNotReady = errors.New("state not yet restored from the event log")

// Store holds the folded state and per-profile command locks. It is safe
// for concurrent use.
type Store struct {
	mu       sync.Mutex
	profiles map[string]events.Profile
	locks    map[string]*lockEntry

	behind atomic.Int64 // partitions not yet caught up; -1 before Follow
}

type lockEntry struct {
	mu   sync.Mutex
	refs int
}

// NewStore returns an empty, not yet ready Store.
func NewStore() *Store {
	s := &Store{profiles: map[string]events.Profile{}, locks: map[string]*lockEntry{}}
	s.behind.Store(-1)
	return s
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
	return nil
}

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

// Ready reports nil once the log has been read up to where it ended when
// Follow started.
func (s *Store) Ready() error {
	if n := s.behind.Load(); n != 0 {
		return fmt.Errorf("%w (%d partitions behind)", ErrNotReady, n)
	}
	return nil
}

// Follow reads every partition of the event log from the beginning into the
// store, and then follows it until ctx ends. Undecodable or inapplicable
// records are logged and skipped.
func (s *Store) Follow(ctx context.Context, client sarama.Client, topic string, log *slog.Logger) error {
	parts, err := client.Partitions(topic)
	if err != nil {
		return fmt.Errorf("partitions of %s: %w", topic, err)
	}
	s.behind.Store(int64(len(parts)))
	var read atomic.Int64
	return kafkax.Read(ctx, client, kafkax.ReadOptions{
		Topic:      topic,
		Partitions: parts,
		Handle: func(_ context.Context, p int32, records []*sarama.ConsumerMessage) error {
			for _, r := range records {
				e, err := events.Decode(r.Value)
				if err == nil {
					err = s.Apply(e)
				}
				if err != nil {
					log.Error("skipping event that does not fold", "topic", topic, "partition", p, "offset", r.Offset, "err", err)
				}
			}
			read.Add(int64(len(records)))
			return nil
		},
		CaughtUp: func(int32) {
			if s.behind.Add(-1) == 0 {
				log.Info("state restored from the event log", "events", read.Load(), "profiles", s.len())
			}
		},
	})
}

func (s *Store) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.profiles)
}

// MarkReadyForTest makes an unfollowed store ready, for tests of the use
// cases that need no event log.
func (s *Store) MarkReadyForTest() { s.behind.Store(0) }
