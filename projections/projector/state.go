package projector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/IBM/sarama"
	"github.com/cockroachdb/pebble/v2"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pebblex"
	"profiles/platform/pii"
)

// StateLayout is the key layout of the projector's store (see
// pebblex.Options.Layout):
//
//	p\0snapshot topic\0uid → the latest snapshot of the profile that the
//	                         projector knows (events.MarshalStored)
//	o\0snapshot topic\0partition → the next offset of the snapshot topic
//	                         that the profiles above do not reflect yet
const StateLayout = "1"

var prefixProfile = []byte("p\x00")

// State is the projector's memory of the latest snapshot of each profile
// of one snapshot topic, which is what the next event folds onto, kept in
// a Pebble store with, per partition of the topic, the offset after the
// last snapshot it holds. A restart restores only the snapshots written
// after that offset (by this instance before it stopped, or by another
// while it owned the partition), not the whole topic. It is safe for
// concurrent use.
type State struct {
	db    *pebble.DB
	topic string
	mu    sync.Mutex // serializes the writes
}

// OpenState returns the state of the snapshot topic kept in db, which the
// caller owns (opened with StateLayout). What db holds of other snapshot
// topics (earlier snapshot generations) is deleted.
func OpenState(db *pebble.DB, topic string) (*State, error) {
	s := &State{db: db, topic: topic}
	b := db.NewBatch()
	defer b.Close()
	// Every key of the store starts with a prefix of two bytes, then the
	// topic and a 0 byte: keep exactly those of this topic.
	for _, mine := range [][]byte{s.prefix(), pebblex.TopicOffsetsPrefix(topic)} {
		all := mine[:2]
		if err := b.DeleteRange(all, mine, nil); err != nil {
			return nil, err
		}
		if err := b.DeleteRange(pebblex.PrefixEnd(mine), pebblex.PrefixEnd(all), nil); err != nil {
			return nil, err
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, fmt.Errorf("drop the state of other snapshot topics: %w", err)
	}
	return s, nil
}

// prefix is the start of the keys of this topic's profiles.
func (s *State) prefix() []byte {
	return append(append(slices.Clone(prefixProfile), s.topic...), 0)
}

func (s *State) key(uid string) []byte { return append(s.prefix(), uid...) }

// Get returns the profile's state; the zero Profile if none is known.
func (s *State) Get(uid string) (events.Profile, error) { return s.get(s.db, uid) }

func (s *State) get(r pebblex.Reader, uid string) (events.Profile, error) {
	raw, err := pebblex.Get(r, s.key(uid))
	if err != nil || raw == nil {
		return events.Profile{}, err
	}
	p, err := events.UnmarshalStored(raw)
	if err != nil {
		return events.Profile{}, fmt.Errorf("corrupt projector state of %s: %w", uid, err)
	}
	return p, nil
}

// Put records the profiles, unless the state already holds a later
// version of one, and for each partition in offsets the next offset of the
// snapshot topic that they do not reflect, in one atomic batch.
func (s *State) Put(profiles []events.Profile, offsets map[int32]int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.db.NewIndexedBatch()
	defer b.Close()
	for _, p := range profiles {
		cur, err := s.get(b, p.UID)
		if err != nil {
			return err
		}
		if cur.Version > p.Version {
			continue
		}
		raw, err := events.MarshalStored(p)
		if err != nil {
			return err
		}
		if err := b.Set(s.key(p.UID), raw, nil); err != nil {
			return err
		}
	}
	for part, next := range offsets {
		old, ok, err := pebblex.Offset(b, s.topic, part)
		if err != nil {
			return err
		}
		if !ok || next > old {
			if err := pebblex.SetOffset(b, s.topic, part, next); err != nil {
				return err
			}
		}
	}
	// NoSync: a machine crash can only lose a suffix of batches, profiles
	// and offsets together, and Restore reads those snapshots again.
	return b.Commit(pebble.NoSync)
}

// Len returns the number of profiles known (deleted ones included). It
// reads the whole store: for logs, not for a hot path.
func (s *State) Len() (int, error) {
	n := 0
	err := pebblex.Scan(s.db, s.prefix(), func(_, _ []byte) error { n++; return nil })
	return n, err
}

// Restore reads every partition of the snapshot topic from the offset the
// state holds for it (the beginning for one it holds nothing of) up to its
// current end into s. It returns how many records it read, opened with
// codec. Undecodable records are skipped: they cannot hold a state that
// the projector wrote.
//
// The offset is the one after the last snapshot this state took in, and
// another instance may have written snapshots before it while it owned
// the partition, which Restore does not read; the first event that does
// not follow the state's version then reads the partition again from its
// beginning (RestorePartition).
func (s *State) Restore(ctx context.Context, codec *pii.Codec, client sarama.Client) (int64, error) {
	start := func(p int32) (int64, error) {
		off, ok, err := pebblex.Offset(s.db, s.topic, p)
		if err != nil || !ok {
			return sarama.OffsetOldest, err
		}
		return off, nil
	}
	return s.restore(ctx, codec, client, nil, start)
}

// RestorePartition reads partition p of the snapshot topic from its
// beginning up to its current end into s.
func (s *State) RestorePartition(ctx context.Context, codec *pii.Codec, client sarama.Client, p int32) (int64, error) {
	return s.restore(ctx, codec, client, []int32{p}, nil)
}

func (s *State) restore(ctx context.Context, codec *pii.Codec, client sarama.Client, parts []int32, start func(int32) (int64, error)) (int64, error) {
	var (
		mu   sync.Mutex
		read int64
	)
	err := kafkax.Read(ctx, client, kafkax.ReadOptions{
		Topic:      s.topic,
		Partitions: parts,
		StopAtEnd:  true,
		Start:      start,
		Handle: func(_ context.Context, part int32, records []*sarama.ConsumerMessage) error {
			profiles := make([]events.Profile, 0, len(records))
			for _, r := range records {
				p, err := codec.DecodeSnapshot(string(r.Key), r.Value, kafkax.HeaderValue(r, events.HeaderVersion))
				if errors.Is(err, pii.ErrKeyUnavailable) {
					return err // the restore fails and is retried; nothing is skipped
				}
				if err == nil {
					profiles = append(profiles, p)
				}
			}
			if err := s.Put(profiles, map[int32]int64{part: records[len(records)-1].Offset + 1}); err != nil {
				return err
			}
			mu.Lock()
			read += int64(len(records))
			mu.Unlock()
			return nil
		},
	})
	if err != nil {
		return read, fmt.Errorf("restore from %s: %w", s.topic, err)
	}
	return read, nil
}
