package pii

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/platform/pebblex"
)

// keyStore is where a Keyring keeps what its follower read of the keys
// topic: for every profile, its sealed key (SealedSize bytes, as
// KEK.Unwrap returns it) or the fact that it is gone, and per partition
// the next offset to read. It does not hold opened keys.
//
// Implementations are safe for concurrent use; Keyring.mu orders the
// writes with the reads that must see them.
type keyStore interface {
	// lookup returns uid's sealed key (gone false), or gone true when its
	// tombstone was read or it was forgotten; known is false when the
	// store has read nothing of uid. sealed must not be modified.
	lookup(uid string) (sealed []byte, gone, known bool, err error)
	// write records the records of partition p read up to next: for
	// each, a sealed key, or nil for gone. They are applied in order.
	write(p int32, recs []keyRecord, next int64) error
	// forget records uid as gone, outside of any partition's order: its
	// delete's transaction tombstoned the key.
	forget(uid string) error
	// offsets returns the next offset to read of every partition the
	// store has read some of.
	offsets() (map[int32]int64, error)
	close() error
}

// keyRecord is one record of the keys topic as a keyStore stores it:
// sealed is nil for a tombstone (or a key this KEK cannot open).
type keyRecord struct {
	uid    string
	sealed []byte
}

// memKeys is the keyStore of a process without a data directory (replay,
// the replicator): it reads the keys topic from its beginning at every
// start. A uid in the canonical UUID form (every uid this service makes)
// is a 16-byte map key, so a profile takes about 85 bytes in all; any
// other uid is a string key. A key that is tombstoned leaves its 60 bytes
// unused until the process ends.
type memKeys struct {
	mu     sync.RWMutex
	ids    map[[16]byte]keyRef
	names  map[string]keyRef
	chunks [][]byte
	n      int
	next   map[int32]int64
}

// keyRef says where a memKeys holds a profile's key: refGone, or
// refFirst+i for the i-th sealed key stored.
type keyRef uint32

const (
	refGone keyRef = iota
	refFirst
)

// chunkKeys is the number of sealed keys in one chunk of a memKeys.
const chunkKeys = 1024

func newMemKeys() *memKeys {
	return &memKeys{ids: map[[16]byte]keyRef{}, names: map[string]keyRef{}, next: map[int32]int64{}}
}

func (s *memKeys) lookup(uid string) ([]byte, bool, bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ref, ok := s.get(uid)
	switch {
	case !ok:
		return nil, false, false, nil
	case ref == refGone:
		return nil, true, true, nil
	}
	i := int(ref - refFirst)
	at := (i % chunkKeys) * SealedSize
	return s.chunks[i/chunkKeys][at : at+SealedSize : at+SealedSize], false, true, nil
}

func (s *memKeys) write(p int32, recs []keyRecord, next int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		if r.sealed == nil {
			s.setRef(r.uid, refGone)
			continue
		}
		if s.n%chunkKeys == 0 {
			s.chunks = append(s.chunks, make([]byte, 0, chunkKeys*SealedSize))
		}
		c := &s.chunks[len(s.chunks)-1]
		*c = append(*c, r.sealed[:SealedSize]...)
		s.setRef(r.uid, refFirst+keyRef(s.n))
		s.n++
	}
	s.next[p] = max(s.next[p], next)
	return nil
}

func (s *memKeys) forget(uid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setRef(uid, refGone)
	return nil
}

func (s *memKeys) offsets() (map[int32]int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[int32]int64, len(s.next))
	for p, n := range s.next {
		out[p] = n
	}
	return out, nil
}

func (s *memKeys) close() error { return nil }

func (s *memKeys) get(uid string) (keyRef, bool) {
	if id, ok := parseUUID(uid); ok {
		ref, ok := s.ids[id]
		return ref, ok
	}
	ref, ok := s.names[uid]
	return ref, ok
}

func (s *memKeys) setRef(uid string, ref keyRef) {
	if id, ok := parseUUID(uid); ok {
		s.ids[id] = ref
		return
	}
	s.names[uid] = ref
}

// KeysLayout is the key layout of a keyring's Pebble store (see
// pebblex.Options.Layout):
//
//	k\0id    → the sealed key (SealedSize bytes), or empty: gone; id is
//	           the 16 bytes of a uid in the canonical UUID form
//	n\0uid   → the same, for any other uid
//	o\0...   → the next offset of each partition of the keys topic
//
// Binary ids keep the store (and so its index) at about 90 bytes per
// profile: the lookups of a cold start are random, and the fewer blocks
// the store has, the more of them the block cache holds.
const KeysLayout = "keys-2"

var (
	prefixKey  = []byte("k\x00")
	prefixName = []byte("n\x00")
)

// diskKeys is the keyStore of a process with a data directory: a Pebble
// store, so the keyring's memory does not grow with the profiles, and a
// restart reads only the tail of the keys topic. Each batch of records is
// one atomic Pebble batch with its partition's next offset (not synced: a
// machine crash loses a suffix of both, which the follower reads again).
type diskKeys struct {
	db    *pebble.DB
	topic string
}

// KeyStoreOptions say where a Keyring keeps its keys (Keyring.OpenStore).
type KeyStoreOptions struct {
	// Dir is the store's directory; FS is vfs.Default when nil.
	Dir string
	FS  vfs.FS
	// Origin names the Kafka cluster, the keys topic and the KEK the store
	// is read from (see pebblex.Options.Origin): a store of another one is
	// emptied and read anew.
	Origin string
	// CacheSize is Pebble's block cache in bytes (0: DefaultKeysCacheSize).
	CacheSize int64
}

// DefaultKeysCacheSize is the block cache of a keyring's store: 16 MiB,
// the index and a sixth of the data blocks of a million profiles.
const DefaultKeysCacheSize = 16 << 20

func openDiskKeys(topic string, o KeyStoreOptions, log *slog.Logger) (*diskKeys, error) {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultKeysCacheSize
	}
	db, err := pebblex.Open(o.Dir, o.FS, pebblex.Options{What: "the keyring's store", Store: "keyring", Layout: KeysLayout, Origin: o.Origin, CacheSize: o.CacheSize, Log: log})
	if err != nil {
		return nil, err
	}
	return &diskKeys{db: db, topic: topic}, nil
}

func keyKey(uid string) []byte {
	if id, ok := parseUUID(uid); ok {
		return append(append(make([]byte, 0, len(prefixKey)+len(id)), prefixKey...), id[:]...)
	}
	return append(append(make([]byte, 0, len(prefixName)+len(uid)), prefixName...), uid...)
}

func (s *diskKeys) lookup(uid string) ([]byte, bool, bool, error) {
	v, closer, err := s.db.Get(keyKey(uid))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, false, nil
	}
	if err != nil {
		return nil, false, false, fmt.Errorf("read the key of %s: %w", uid, err)
	}
	defer closer.Close()
	switch len(v) {
	case 0:
		return nil, true, true, nil
	case SealedSize:
		return append([]byte(nil), v...), false, true, nil
	}
	return nil, false, false, fmt.Errorf("the stored key of %s has %d bytes, not %d", uid, len(v), SealedSize)
}

func (s *diskKeys) write(p int32, recs []keyRecord, next int64) error {
	b := s.db.NewBatch()
	defer b.Close()
	for _, r := range recs {
		if err := b.Set(keyKey(r.uid), r.sealed, nil); err != nil {
			return err
		}
	}
	if err := pebblex.SetOffset(b, s.topic, p, next); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("write the keyring's store: %w", err)
	}
	return nil
}

func (s *diskKeys) forget(uid string) error {
	if err := s.db.Set(keyKey(uid), nil, pebble.NoSync); err != nil {
		return fmt.Errorf("write the keyring's store: %w", err)
	}
	return nil
}

func (s *diskKeys) offsets() (map[int32]int64, error) {
	held, err := pebblex.Held(s.db)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	for _, p := range held[s.topic] {
		next, ok, err := pebblex.Offset(s.db, s.topic, p)
		if err != nil {
			return nil, err
		}
		if ok {
			out[p] = next
		}
	}
	return out, nil
}

func (s *diskKeys) close() error { return s.db.Close() }

// parseUUID parses a uid in the canonical lowercase UUID form
// (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx); ok is false for any other
// string, which the caller keeps as it is.
func parseUUID(s string) (id [16]byte, ok bool) {
	if len(s) != 36 {
		return id, false
	}
	var nibbles [32]byte
	n := 0
	for i := range len(s) {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if s[i] != '-' {
				return id, false
			}
			continue
		}
		v, ok := fromHex(s[i])
		if !ok {
			return id, false
		}
		nibbles[n] = v
		n++
	}
	for i := range id {
		id[i] = nibbles[2*i]<<4 | nibbles[2*i+1]
	}
	return id, true
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
