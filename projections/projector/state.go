package projector

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/IBM/sarama"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
)

// State is the projector's memory of the latest snapshot it wrote for each
// profile, which is what the next event folds onto. It is safe for
// concurrent use.
type State struct {
	mu       sync.Mutex
	profiles map[string]events.Profile
}

// NewState returns an empty State.
func NewState() *State { return &State{profiles: map[string]events.Profile{}} }

// Get returns the profile's state; the zero Profile if none is known.
func (s *State) Get(uid string) events.Profile {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.profiles[uid]
}

// Put records p unless the state already holds a later version.
func (s *State) Put(p events.Profile) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.profiles[p.UID]; !ok || p.Version >= cur.Version {
		s.profiles[p.UID] = p
	}
}

// Len returns the number of profiles known (deleted ones included).
func (s *State) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.profiles)
}

// Restore reads the given partitions of the snapshot topic (all of them if
// parts is nil) up to their current end into s. It returns how many records
// it read, opened with codec. Undecodable records are skipped: they cannot
// hold a state that the projector wrote.
func (s *State) Restore(ctx context.Context, codec *pii.Codec, client sarama.Client, topic string, parts []int32) (int64, error) {
	var (
		mu   sync.Mutex
		read int64
	)
	err := kafkax.Read(ctx, client, kafkax.ReadOptions{
		Topic:      topic,
		Partitions: parts,
		StopAtEnd:  true,
		Handle: func(_ context.Context, _ int32, records []*sarama.ConsumerMessage) error {
			for _, r := range records {
				p, err := codec.DecodeSnapshot(string(r.Key), r.Value, kafkax.HeaderValue(r, events.HeaderVersion))
				if errors.Is(err, pii.ErrKeyUnavailable) {
					return err // the restore fails and is retried; nothing is skipped
				}
				if err == nil {
					s.Put(p)
				}
			}
			mu.Lock()
			read += int64(len(records))
			mu.Unlock()
			return nil
		},
	})
	if err != nil {
		return read, fmt.Errorf("restore from %s: %w", topic, err)
	}
	return read, nil
}
