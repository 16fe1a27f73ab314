package view

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"profiles/events"
	"profiles/platform/pebblex"
	"profiles/query-svc/internal/app"
)

// HistoryRecord is the history entry of one event of profile UID.
type HistoryRecord struct {
	UID   string
	Entry app.HistoryEntry
}

// ApplyEvents writes the history entries of one batch of events from
// partition p of the event log (topic), and next (the offset after the
// batch) as that partition's position, in a single atomic batch. An entry's
// key is (p, uid, version), so reading an event again rewrites the same
// entry. It returns how many entries it wrote.
//
// A ProfileDeleted erases the entries of its profile (app.HistoryEntry.Erase):
// the delete crypto-shredded their personal data, and the view must not
// keep a copy.
func (s *Store) ApplyEvents(topic string, p int32, records []HistoryRecord, next int64) (int, error) {
	deleted := map[string]bool{}
	for _, r := range records {
		if r.Entry.Type == events.TypeProfileDeleted {
			deleted[r.UID] = true
		}
	}
	return s.apply(topic, p, next, func(b *pebble.Batch, touch func([]byte)) (int, error) {
		for uid := range deleted {
			if err := s.eraseHistory(b, p, uid); err != nil {
				return 0, err
			}
		}
		for _, r := range records {
			touch(historyPrefix(p, r.UID))
			if deleted[r.UID] {
				r.Entry = r.Entry.Erase()
			}
			val, err := json.Marshal(r.Entry)
			if err != nil {
				return 0, err
			}
			if err := b.Set(historyKey(p, r.UID, r.Entry.Version), val, nil); err != nil {
				return 0, err
			}
		}
		return len(records), nil
	})
}

// eraseHistory rewrites, in b, the stored entries of uid as erased.
func (s *Store) eraseHistory(b *pebble.Batch, p int32, uid string) error {
	return s.eachHistory(p, uid, func(k []byte, e app.HistoryEntry) error {
		val, err := json.Marshal(e.Erase())
		if err != nil {
			return err
		}
		return b.Set(bytes.Clone(k), val, nil)
	})
}

// History returns the history entries of uid ordered by version, and an
// empty, non-nil slice when the view holds no event of it.
func (s *Store) History(uid string) ([]app.HistoryEntry, error) {
	out := []app.HistoryEntry{}
	err := s.eachHistory(s.Partition(uid), uid, func(_ []byte, e app.HistoryEntry) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// eachHistory calls f, in version order, with the key and the entry of every
// stored history entry of uid (on partition p), and stops at f's first
// error, which it returns. The key is valid only during the call.
func (s *Store) eachHistory(p int32, uid string, f func(k []byte, e app.HistoryEntry) error) error {
	prefix := historyPrefix(p, uid)
	return s.scan(prefix, func(k, v []byte) error {
		var e app.HistoryEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("corrupt history entry %q: %w", k, err)
		}
		return f(k, e)
	})
}

// historyKey is h\0<partition be32><uid>\0<version be64>: the entries of a
// uid are contiguous and sort by version.
func historyKey(p int32, uid string, version int64) []byte {
	return binary.BigEndian.AppendUint64(historyPrefix(p, uid), uint64(version))
}

// historyPrefix is the prefix of the history keys of uid on partition p.
func historyPrefix(p int32, uid string) []byte {
	k := append(pebblex.PartitionPrefix(prefixHistory, p), uid...)
	return append(k, 0)
}
