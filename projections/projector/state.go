package projector

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

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
//	p\0snapshot topic\0uid → the latest snapshot record of the profile
//	                         that the projector knows, as the topic holds
//	                         it (see storedSnapshot)
//	o\0snapshot topic\0partition → the next offset of the snapshot topic
//	                         that the records above do not reflect yet
const StateLayout = "2"

var prefixProfile = []byte("p\x00")

// Snapshot is one record of the snapshot topic, as written: Value is nil
// for a tombstone, VersionHeader the record's events.HeaderVersion.
type Snapshot struct {
	UID           string
	Version       int64
	Value         []byte
	VersionHeader string
}

// storedSnapshot encodes a Snapshot as the value of its key: the version
// (8 bytes, big-endian), 1 for a tombstone or 0, the length of the version
// header (1 byte), the header, and the record's value. The record stays
// sealed: restoring the state costs no decryption and no JSON, and Get
// opens it when an event folds onto it.
func storedSnapshot(s Snapshot) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 10+len(s.VersionHeader)+len(s.Value)), uint64(s.Version))
	if s.Value == nil {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = append(append(b, byte(len(s.VersionHeader))), s.VersionHeader...)
	return append(b, s.Value...)
}

func parseSnapshot(uid string, b []byte) (Snapshot, error) {
	if len(b) < 10 || len(b) < 10+int(b[9]) {
		return Snapshot{}, fmt.Errorf("corrupt projector state of %s: %d bytes", uid, len(b))
	}
	s := Snapshot{UID: uid, Version: int64(binary.BigEndian.Uint64(b)), VersionHeader: string(b[10 : 10+int(b[9])])}
	if b[8] == 0 {
		s.Value = b[10+int(b[9]):]
	}
	return s, nil
}

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
	codec *pii.Codec
	mu    sync.Mutex // serializes the writes
}

// OpenState returns the state of the snapshot topic kept in db, which the
// caller owns (opened with StateLayout); codec opens its snapshots. What
// db holds of other snapshot topics (earlier snapshot generations) is
// deleted.
func OpenState(db *pebble.DB, topic string, codec *pii.Codec) (*State, error) {
	s := &State{db: db, topic: topic, codec: codec}
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

// Get returns the profile's state; the zero Profile if none is known, or
// if the snapshot it holds does not decode (it cannot be one the
// projector wrote). An error wrapping pii.ErrKeyUnavailable is transient.
func (s *State) Get(uid string) (events.Profile, error) {
	raw, err := pebblex.Get(s.db, s.key(uid))
	if err != nil || raw == nil {
		return events.Profile{}, err
	}
	snap, err := parseSnapshot(uid, raw)
	if err != nil {
		return events.Profile{}, err
	}
	p, err := s.codec.DecodeSnapshot(uid, snap.Value, snap.VersionHeader)
	if errors.Is(err, pii.ErrKeyUnavailable) {
		return events.Profile{}, err
	}
	if err != nil {
		return events.Profile{}, nil
	}
	return p, nil
}

// version returns the version of uid's snapshot in r, 0 if there is none.
func (s *State) version(r pebblex.Reader, uid string) (int64, error) {
	raw, err := pebblex.Get(r, s.key(uid))
	if err != nil || raw == nil {
		return 0, err
	}
	snap, err := parseSnapshot(uid, raw)
	return snap.Version, err
}

// Put records the snapshots, unless the state already holds a later
// version of one, and for each partition in offsets the next offset of the
// snapshot topic that they do not reflect, in one atomic batch.
func (s *State) Put(snaps []Snapshot, offsets map[int32]int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.db.NewIndexedBatch()
	defer b.Close()
	for _, snap := range snaps {
		cur, err := s.version(b, snap.UID)
		if err != nil {
			return err
		}
		if cur > snap.Version {
			continue
		}
		if err := b.Set(s.key(snap.UID), storedSnapshot(snap), nil); err != nil {
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
// reads the whole store: for logs and tests, not for a hot path.
func (s *State) Len() (int, error) {
	n := 0
	err := pebblex.Scan(s.db, s.prefix(), func(_, _ []byte) error { n++; return nil })
	return n, err
}

// Restore reads every partition of the snapshot topic from the offset the
// state holds for it (the beginning for one it holds nothing of) up to its
// current end into s, and returns how many records it read. The records
// are kept sealed, as they are (see storedSnapshot); a record that has no
// version cannot hold a state that the projector wrote and is skipped.
//
// The offset is the one after the last snapshot this state took in, and
// another instance may have written snapshots before it while it owned
// the partition, which Restore does not read; the first event that does
// not follow the state's version then reads the partition again from its
// beginning (RestorePartition).
func (s *State) Restore(ctx context.Context, client sarama.Client) (int64, error) {
	start := func(p int32) (int64, error) {
		off, ok, err := pebblex.Offset(s.db, s.topic, p)
		if err != nil || !ok {
			return sarama.OffsetOldest, err
		}
		return off, nil
	}
	return s.restore(ctx, client, nil, start)
}

// RestorePartition reads partition p of the snapshot topic from its
// beginning up to its current end into s.
func (s *State) RestorePartition(ctx context.Context, client sarama.Client, p int32) (int64, error) {
	return s.restore(ctx, client, []int32{p}, nil)
}

func (s *State) restore(ctx context.Context, client sarama.Client, parts []int32, start func(int32) (int64, error)) (int64, error) {
	var read atomic.Int64
	err := kafkax.Read(ctx, client, kafkax.ReadOptions{
		Topic:      s.topic,
		Partitions: parts,
		StopAtEnd:  true,
		Start:      start,
		Handle: func(_ context.Context, part int32, records []*sarama.ConsumerMessage) error {
			snaps := make([]Snapshot, 0, len(records))
			for _, r := range records {
				if snap, ok := recordSnapshot(r); ok {
					snaps = append(snaps, snap)
				}
			}
			if err := s.Put(snaps, map[int32]int64{part: records[len(records)-1].Offset + 1}); err != nil {
				return err
			}
			read.Add(int64(len(records)))
			return nil
		},
	})
	if err != nil {
		return read.Load(), fmt.Errorf("restore from %s: %w", s.topic, err)
	}
	return read.Load(), nil
}

// recordSnapshot returns r as a Snapshot, with its version from the
// version header, or from the JSON when a record has none.
func recordSnapshot(r *sarama.ConsumerMessage) (Snapshot, bool) {
	uid, header := string(r.Key), kafkax.HeaderValue(r, events.HeaderVersion)
	v, err := strconv.ParseInt(header, 10, 64)
	if err != nil {
		p, derr := events.DecodeSnapshot(uid, r.Value, header)
		if derr != nil {
			return Snapshot{}, false
		}
		v = p.Version
	}
	if uid == "" || v < 1 || len(header) > 255 {
		return Snapshot{}, false
	}
	return Snapshot{UID: uid, Version: v, Value: r.Value, VersionHeader: header}, true
}
