package view

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"profiles/events"
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
	return s.apply(topic, p, next, func(b *pebble.Batch) (int, error) {
		for uid := range deleted {
			if err := s.eraseHistory(b, p, uid); err != nil {
				return 0, err
			}
		}
		for _, r := range records {
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
	prefix := historyKey(p, uid, 0)
	prefix = prefix[:len(prefix)-8]
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		var e app.HistoryEntry
		if err := json.Unmarshal(it.Value(), &e); err != nil {
			return fmt.Errorf("corrupt history entry %q: %w", it.Key(), err)
		}
		val, err := json.Marshal(e.Erase())
		if err != nil {
			return err
		}
		if err := b.Set(bytes.Clone(it.Key()), val, nil); err != nil {
			return err
		}
	}
	return it.Error()
}

// History returns the history entries of uid ordered by version, and an
// empty, non-nil slice when the view holds no event of it.
func (s *Store) History(uid string) ([]app.HistoryEntry, error) {
	prefix := historyKey(s.Partition(uid), uid, 0)
	prefix = prefix[:len(prefix)-8]
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := []app.HistoryEntry{}
	for it.First(); it.Valid(); it.Next() {
		var e app.HistoryEntry
		if err := json.Unmarshal(it.Value(), &e); err != nil {
			return nil, fmt.Errorf("corrupt history entry %q: %w", it.Key(), err)
		}
		out = append(out, e)
	}
	return out, it.Error()
}

// historyKey is h\0<partition be32><uid>\0<version be64>: the entries of a
// uid are contiguous and sort by version.
func historyKey(p int32, uid string, version int64) []byte {
	k := append(partitionPrefix(prefixHistory, p), uid...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, uint64(version))
}
