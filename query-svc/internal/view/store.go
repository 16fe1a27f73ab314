// Package view is query-svc's materialized view, kept in Pebble: uid →
// profile from the snapshot topic, (normalized email, uid) → profile from
// the email index topic, (uid, version) → history entry from the event log,
// and for every consumed partition of each topic the next offset to read.
// A batch of records and its partition's offset are written in one atomic
// batch, so after a crash or restart the view resumes exactly where its
// data ends, without re-reading the topic. The view is a cache: deleting
// its directory loses nothing, because it rebuilds from Kafka.
//
// Every key starts with its partition, so an instance that stops owning a
// partition can drop exactly that partition's data.
package view

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pebblex"
	"profiles/query-svc/internal/app"
)

// ErrNotFound is returned by Get for a uid the view has never seen.
var ErrNotFound = errors.New("profile not in view")

// Key prefixes. Each key space is separated by a 0 byte, which cannot occur
// in a uid, an email or a topic name; pebblex owns "f\x00" and "o\x00".
var (
	prefixProfile = []byte("p\x00")
	prefixEmail   = []byte("e\x00")
	prefixHistory = []byte("h\x00")
)

// Store is the Pebble-backed view. Reads are safe for concurrent use. Apply
// must not be called concurrently for the same partition (one writer per
// partition); calls for different partitions may overlap, since their keys
// differ except for the email index, whose entries are per uid.
type Store struct {
	db *pebble.DB
	n  int32 // partition count of the topics
	// keyer turns an email into its index key (pii.Codec.EmailKey: an
	// HMAC of the normalized email, as the projector writes it).
	keyer events.EmailKeyer

	// reserve is the free space the view leaves on its disk: a batch is
	// refused (pebblex.ErrDiskFull) rather than committed below it.
	reserve pebblex.Reserve

	// watchers wakes the readers that wait for a key (see WatchProfile).
	watchers watchers
}

// DefaultCacheSize is Options.CacheSize's zero value: Pebble's block cache
// of one view, larger than Pebble's own default (8 MB) so that the GETs of a
// view of some 200,000 profiles are served from memory.
const DefaultCacheSize = 64 << 20

// Options tune a Store. The zero value is valid.
type Options struct {
	// CacheSize is the block cache in bytes; 0 means DefaultCacheSize.
	CacheSize int64
	// Origin names what the view is built from (see pebblex.Options): a
	// view of another origin is emptied on Open and rebuilt, never served.
	Origin string
	// Log gets the line that says why a view is emptied or deleted; nil
	// means slog.Default().
	Log *slog.Logger
	// Reserve is the free space, in bytes, the view leaves on its disk:
	// a batch that would be committed below it is refused with
	// pebblex.ErrDiskFull, and nothing of it (data or offset) is written.
	// 0 checks nothing.
	Reserve uint64
}

// Format is the layout of the keys. A view written in another layout (or by
// a build from before the layout was recorded) is emptied on Open and
// rebuilt from Kafka.
const Format = "2:partitioned"

// Open opens (or creates) the view in dir, for topics of the given
// partition count. fs is vfs.Default for a real directory and vfs.NewMem()
// in tests. keyer (never nil) keys the email index, as the projector does.
// A corrupt view is deleted, and one of another layout or origin emptied
// (see pebblex.Open), to be rebuilt from Kafka.
func Open(dir string, fs vfs.FS, partitions int32, keyer events.EmailKeyer, o Options) (*Store, error) {
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultCacheSize
	}
	db, err := pebblex.Open(dir, fs, pebblex.Options{What: "the view", Store: "view", Layout: Format, Origin: o.Origin, CacheSize: o.CacheSize, Log: o.Log})
	if err != nil {
		return nil, err
	}
	st := &Store{db: db, n: partitions, keyer: keyer}
	if o.Reserve > 0 && fs == vfs.Default {
		st.reserve = pebblex.Reserve{Dir: dir, Min: o.Reserve}
	}
	return st, nil
}

// Close flushes and closes the view. The Store must not be used afterwards.
func (s *Store) Close() error { return s.db.Close() }

// stored is the value of a profile key. A deleted profile keeps a marker with
// its last version, so waiters for a delete can see that it happened.
type stored struct {
	events.Profile
	Deleted bool `json:"deleted,omitempty"`
}

// Offset returns the next offset to read from partition p of topic, and
// false if the view holds nothing of that partition.
func (s *Store) Offset(topic string, p int32) (int64, bool, error) {
	return pebblex.Offset(s.db, topic, p)
}

// Offsets returns the next offset of every partition of topic that the view
// holds, owned or kept warm.
func (s *Store) Offsets(topic string) (map[int32]int64, error) { return pebblex.Offsets(s.db, topic) }

// ApplySnapshots writes the profiles of one batch of snapshot records from
// partition p of topic (a tombstone is a profile with Deleted set), and next
// (the offset after the batch) as that partition's position, in a single
// atomic batch. A record older than the view's version of the same profile
// is ignored, so re-reading a partition never moves a profile back in time.
// It returns how many records changed the view.
func (s *Store) ApplySnapshots(topic string, p int32, profiles []events.Profile, next int64) (int, error) {
	return s.apply(topic, p, next, func(b *pebble.Batch, touch func([]byte)) (int, error) {
		applied := 0
		for _, prof := range profiles {
			key := profileKey(p, prof.UID)
			ok, err := putNewer(b, key, prof)
			if err != nil {
				return 0, err
			}
			if ok {
				applied++
				touch(key)
			}
		}
		return applied, nil
	})
}

// IndexEntry is one record of the email index: the profile that holds
// Email now, or a deleted marker (Profile.Deleted) when it no longer does.
type IndexEntry struct {
	Email   string
	Profile events.Profile
}

// ApplyIndex is ApplySnapshots for the email index topic.
func (s *Store) ApplyIndex(topic string, p int32, entries []IndexEntry, next int64) (int, error) {
	return s.apply(topic, p, next, func(b *pebble.Batch, touch func([]byte)) (int, error) {
		applied := 0
		for _, e := range entries {
			key := emailKey(p, e.Email, e.Profile.UID)
			ok, err := putNewer(b, key, e.Profile)
			if err != nil {
				return 0, err
			}
			if ok {
				applied++
				touch(key)
			}
		}
		return applied, nil
	})
}

// apply commits, in one batch, what write puts in it and next as the
// offset of partition p of topic, and then wakes the readers of every key
// that write passed to touch (the keys it changed; see watchers).
func (s *Store) apply(topic string, p int32, next int64, write func(b *pebble.Batch, touch func(key []byte)) (int, error)) (int, error) {
	b := s.db.NewIndexedBatch()
	defer b.Close()
	var touched [][]byte
	applied, err := write(b, func(key []byte) { touched = append(touched, key) })
	if err != nil {
		return 0, err
	}
	if err := pebblex.SetOffset(b, topic, p, next); err != nil {
		return 0, err
	}
	// A full disk would end the process inside Commit (see
	// pebblex.Reserve): refuse the batch first, so that the caller keeps
	// its records and retries.
	if err := s.reserve.Check(); err != nil {
		return 0, err
	}
	// NoSync: the write-ahead log keeps a batch atomic, and a machine crash
	// can only lose a suffix of batches, data and offset together, which the
	// view then re-reads from Kafka.
	if err := b.Commit(pebble.NoSync); err != nil {
		return 0, fmt.Errorf("commit view batch: %w", err)
	}
	s.watchers.wake(touched)
	return applied, nil
}

// Writable returns nil while the view's disk has its reserve free (see
// Options.Reserve), and an error wrapping pebblex.ErrDiskFull otherwise:
// then every batch is refused, so the instance cannot hold partitions.
// It is safe for concurrent use.
func (s *Store) Writable() error { return s.reserve.Check() }

// putNewer stores prof under key unless the key holds a later version.
func putNewer(b *pebble.Batch, key []byte, prof events.Profile) (bool, error) {
	old, found, err := getStored(b, key)
	if err != nil {
		return false, err
	}
	if found && prof.Version != 0 && old.Version > prof.Version {
		return false, nil // an older record than the one we hold
	}
	val, err := json.Marshal(stored{Profile: prof, Deleted: prof.Deleted})
	if err != nil {
		return false, err
	}
	return true, b.Set(key, val, nil)
}

// DropPartition deletes everything the view holds of partition p: its
// profiles, its email index entries, its history entries and its offsets
// in every topic. An
// instance calls it for a partition that moved to another instance, so
// that its store holds only what it serves.
func (s *Store) DropPartition(p int32) error {
	b := s.db.NewBatch()
	defer b.Close()
	for _, prefix := range [][]byte{pebblex.PartitionPrefix(prefixProfile, p), pebblex.PartitionPrefix(prefixEmail, p), pebblex.PartitionPrefix(prefixHistory, p)} {
		if err := b.DeleteRange(prefix, pebblex.PrefixEnd(prefix), nil); err != nil {
			return err
		}
	}
	held, err := s.Held()
	if err != nil {
		return err
	}
	for topic, parts := range held {
		for _, q := range parts {
			if q == p {
				if err := b.Delete(pebblex.OffsetKey(topic, p), nil); err != nil {
					return err
				}
			}
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	s.watchers.wakeAll()
	return nil
}

// Held returns, per topic, the partitions of which the view holds data (it
// has an offset for them).
func (s *Store) Held() (map[string][]int32, error) { return pebblex.Held(s.db) }

// Count returns how many live profiles partition p holds.
func (s *Store) Count(p int32) (int, error) {
	n := 0
	err := s.scan(pebblex.PartitionPrefix(prefixProfile, p), func(_, v []byte) error {
		var st stored
		if err := json.Unmarshal(v, &st); err == nil && !st.Deleted {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// scan is pebblex.Scan of the view.
func (s *Store) scan(prefix []byte, f func(k, v []byte) error) error {
	return pebblex.Scan(s.db, prefix, f)
}

// getStored decodes the profile under key straight from Pebble's buffer
// (pebblex.Get would copy it first: this is the GET path).
func getStored(r pebblex.Reader, key []byte) (stored, bool, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return stored{}, false, nil
	}
	if err != nil {
		return stored{}, false, err
	}
	defer closer.Close()
	var st stored
	if err := json.Unmarshal(v, &st); err != nil {
		return stored{}, false, fmt.Errorf("corrupt view entry %q: %w", key, err)
	}
	st.Profile.Deleted = st.Deleted
	return st, true, nil
}

// Get returns the view's profile for uid. A deleted profile is returned with
// Deleted set, so that callers can tell "deleted at version N" from "never
// seen" (ErrNotFound).
func (s *Store) Get(uid string) (events.Profile, error) {
	st, found, err := getStored(s.db, profileKey(s.Partition(uid), uid))
	if err != nil {
		return events.Profile{}, err
	}
	if !found {
		return events.Profile{}, ErrNotFound
	}
	return st.Profile, nil
}

// GetJSON is Get with the profile as the API answers it (see
// app.ProfileView): its JSON, appended to dst. The view stores a profile
// as that JSON (with "deleted" added to a deleted one's), so the answer is
// copied out of Pebble, not decoded and encoded again.
func (s *Store) GetJSON(uid string, dst []byte) (app.ProfileJSON, error) {
	key := profileKey(s.Partition(uid), uid)
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return app.ProfileJSON{}, ErrNotFound
	}
	if err != nil {
		return app.ProfileJSON{}, err
	}
	defer closer.Close()
	if version, deleted, ok := scanStored(v); ok {
		if deleted {
			return app.ProfileJSON{Version: version, Deleted: true}, nil
		}
		return app.ProfileJSON{JSON: append(dst, v...), Version: version}, nil
	}
	// Not the form putNewer writes: decode it, and encode the answer.
	var st stored
	if err := json.Unmarshal(v, &st); err != nil {
		return app.ProfileJSON{}, fmt.Errorf("corrupt view entry %q: %w", key, err)
	}
	if st.Deleted {
		return app.ProfileJSON{Version: st.Version, Deleted: true}, nil
	}
	b, err := json.Marshal(st.Profile)
	if err != nil {
		return app.ProfileJSON{}, err
	}
	return app.ProfileJSON{JSON: append(dst, b...), Version: st.Version}, nil
}

// scanStored reads the version of a stored profile, and whether it is
// deleted, from its JSON as putNewer writes it: json.Marshal of stored,
// {"uid":"…",…,"version":N,"createdAt":"…","updatedAt":"…"}, with
// ,"deleted":true before the closing brace of a deleted one. Without
// "deleted", the value is events.Profile's JSON, the API's answer. The
// scan relies on that layout: a string in JSON holds no unescaped quote,
// so ,"version": occurs once, outside every string, and after it come
// only the two times and "deleted". ok is false for a value of any other
// form, which the caller decodes.
func scanStored(v []byte) (version int64, deleted, ok bool) {
	const head, deletedTail, liveTail, next = `{"uid":"`, `","deleted":true}`, `"}`, `,"createdAt":"`
	if !bytes.HasPrefix(v, []byte(head)) {
		return 0, false, false
	}
	switch {
	case bytes.HasSuffix(v, []byte(deletedTail)):
		deleted = true
	case !bytes.HasSuffix(v, []byte(liveTail)):
		return 0, false, false
	}
	i := bytes.LastIndex(v, []byte(`,"version":`))
	if i < 0 {
		return 0, false, false
	}
	rest := v[i+len(`,"version":`):]
	n := 0
	for n < len(rest) && n < 18 && rest[n] >= '0' && rest[n] <= '9' {
		version = version*10 + int64(rest[n]-'0')
		n++
	}
	if n == 0 || (n > 1 && rest[0] == '0') || !bytes.HasPrefix(rest[n:], []byte(next)) {
		return 0, false, false
	}
	return version, deleted, true
}

// Partition returns the partition of a key (a uid or a normalized email).
func (s *Store) Partition(key string) int32 { return kafkax.Partition(key, s.n) }

// SearchEmail returns the live profiles whose normalized email equals the
// normalized form of email, ordered by uid, from the email index. It
// returns an empty, non-nil slice when there are none.
func (s *Store) SearchEmail(email string) ([]events.Profile, error) {
	email = s.keyer.EmailKey(email)
	out := []events.Profile{}
	err := s.scan(emailKey(s.Partition(email), email, ""), func(k, v []byte) error {
		var st stored
		if err := json.Unmarshal(v, &st); err != nil {
			return fmt.Errorf("corrupt index entry %q: %w", k, err)
		}
		if !st.Deleted {
			out = append(out, st.Profile)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SearchEmailJSON is SearchEmail with the answer as the API sends it: the
// JSON array of the live profiles, ordered by uid, appended to dst ([]
// when there are none). Each profile's JSON is the index entry's value as
// the view stored it (see GetJSON): the index carries the whole profile,
// so nothing else is read, decoded or encoded.
func (s *Store) SearchEmailJSON(email string, dst []byte) ([]byte, error) {
	email = s.keyer.EmailKey(email)
	dst = append(dst, '[')
	n := 0
	err := s.scan(emailKey(s.Partition(email), email, ""), func(k, v []byte) error {
		_, deleted, ok := scanStored(v)
		if !ok { // not the form putNewer writes: decode it, and encode the answer
			var st stored
			if err := json.Unmarshal(v, &st); err != nil {
				return fmt.Errorf("corrupt index entry %q: %w", k, err)
			}
			if deleted = st.Deleted; !deleted {
				b, err := json.Marshal(st.Profile)
				if err != nil {
					return err
				}
				v = b
			}
		}
		if deleted {
			return nil
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, v...)
		n++
		return nil
	})
	if err != nil {
		return nil, err
	}
	return append(dst, ']'), nil
}

// IndexEntry returns the email index entry of (email, uid): the profile, a
// deleted marker (Deleted set) once the uid no longer holds the email, or
// ErrNotFound.
func (s *Store) IndexEntry(email, uid string) (events.Profile, error) {
	email = s.keyer.EmailKey(email)
	st, found, err := getStored(s.db, emailKey(s.Partition(email), email, uid))
	if err != nil {
		return events.Profile{}, err
	}
	if !found {
		return events.Profile{}, ErrNotFound
	}
	return st.Profile, nil
}

// WatchProfile returns a channel that is closed once a batch that changes
// the profile uid commits (or DropPartition), and the func that ends the
// watch. A reader takes it before it reads the profile, waits on it if
// the profile is not yet what it needs, and ends the watch once it no
// longer waits on the channel: a watch of a uid that is never written is
// kept until then.
func (s *Store) WatchProfile(uid string) (<-chan struct{}, func()) {
	return s.watchers.add(profileKey(s.Partition(uid), uid))
}

// WatchIndexEntry is WatchProfile for the email index entry of (email,
// uid), as IndexEntry reads it.
func (s *Store) WatchIndexEntry(email, uid string) (<-chan struct{}, func()) {
	email = s.keyer.EmailKey(email)
	return s.watchers.add(emailKey(s.Partition(email), email, uid))
}

// WatchHistory is WatchProfile for the history of uid: any entry of it
// written or erased.
func (s *Store) WatchHistory(uid string) (<-chan struct{}, func()) {
	return s.watchers.add(historyPrefix(s.Partition(uid), uid))
}

func profileKey(p int32, uid string) []byte {
	return append(pebblex.PartitionPrefix(prefixProfile, p), uid...)
}

// emailKey is the key of (email, uid) in partition p; email is normalized.
// With an empty uid it is the prefix of every entry of the email.
func emailKey(p int32, email, uid string) []byte {
	k := append(pebblex.PartitionPrefix(prefixEmail, p), email...)
	k = append(k, 0)
	return append(k, uid...)
}

// Sync makes every batch applied so far durable. Batches are committed
// without a sync (see apply); a bulk load calls Sync once at its end.
func (s *Store) Sync() error { return s.db.LogData(nil, pebble.Sync) }
