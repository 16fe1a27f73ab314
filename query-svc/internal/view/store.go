// Package view is query-svc's materialized view of the snapshot topic, kept
// in Pebble: uid → profile, normalized email → uids, and for every consumed
// partition the next offset to read. The three are written in one atomic
// batch, so after a crash or restart the view resumes exactly where its data
// ends, without re-reading the topic. The view is a cache: deleting its
// directory loses nothing, because it rebuilds from Kafka.
package view

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/events"
)

// ErrNotFound is returned by Get for a uid the view has never seen.
var ErrNotFound = errors.New("profile not in view")

// FormatMajorVersion is pinned so that a Pebble upgrade never changes the
// on-disk format behind our back.
const FormatMajorVersion = pebble.FormatValueSeparation

// Key prefixes. Each key space is separated by a 0 byte, which cannot occur
// in a uid, an email or a topic name.
var (
	prefixProfile = []byte("p\x00")
	prefixEmail   = []byte("e\x00")
	prefixOffset  = []byte("o\x00")
)

// Store is the Pebble-backed view. Reads are safe for concurrent use. Apply
// must not be called concurrently for the same partition (one writer per
// partition); calls for different partitions may overlap, since their keys
// differ except for the email index, whose entries are per uid.
type Store struct {
	db *pebble.DB

	mu      sync.Mutex
	changed chan struct{}
}

// Open opens (or creates) the view in dir. fs is vfs.Default for a real
// directory and vfs.NewMem() in tests.
func Open(dir string, fs vfs.FS) (*Store, error) {
	db, err := pebble.Open(dir, &pebble.Options{
		FS:                 fs,
		FormatMajorVersion: FormatMajorVersion,
		Logger:             quietLogger{},
	})
	if err != nil {
		return nil, fmt.Errorf("open view in %s: %w", dir, err)
	}
	return &Store{db: db, changed: make(chan struct{})}, nil
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
	v, closer, err := s.db.Get(offsetKey(topic, p))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, false, fmt.Errorf("corrupt offset for %s/%d", topic, p)
	}
	return int64(binary.BigEndian.Uint64(v)), true, nil
}

// Apply writes the profiles of one batch of snapshot records from partition p
// of topic (a tombstone is a profile with Deleted set), and next
// (the offset after the batch) as that partition's position, in a single
// atomic batch. A record older than the view's version of the same profile
// is ignored, so re-reading a partition never moves a profile back in time.
// It returns how many records changed the view.
func (s *Store) Apply(topic string, p int32, profiles []events.Profile, next int64) (int, error) {
	b := s.db.NewIndexedBatch()
	defer b.Close()
	applied := 0
	for _, prof := range profiles {
		ok, err := applyRecord(b, prof)
		if err != nil {
			return 0, err
		}
		if ok {
			applied++
		}
	}
	var off [8]byte
	binary.BigEndian.PutUint64(off[:], uint64(next))
	if err := b.Set(offsetKey(topic, p), off[:], nil); err != nil {
		return 0, err
	}
	// NoSync: the write-ahead log keeps a batch atomic, and a machine crash
	// can only lose a suffix of batches, data and offset together, which the
	// view then re-reads from Kafka.
	if err := b.Commit(pebble.NoSync); err != nil {
		return 0, fmt.Errorf("commit view batch: %w", err)
	}
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	return applied, nil
}

func applyRecord(b *pebble.Batch, p events.Profile) (bool, error) {
	old, found, err := getStored(b, p.UID)
	if err != nil {
		return false, err
	}
	if found && p.Version != 0 && old.Version > p.Version {
		return false, nil // an older record than the one we hold
	}
	if found && !old.Deleted {
		if err := b.Delete(emailKey(old.Email, old.UID), nil); err != nil {
			return false, err
		}
	}
	val, err := json.Marshal(stored{Profile: p, Deleted: p.Deleted})
	if err != nil {
		return false, err
	}
	if err := b.Set(profileKey(p.UID), val, nil); err != nil {
		return false, err
	}
	if !p.Deleted {
		if err := b.Set(emailKey(p.Email, p.UID), nil, nil); err != nil {
			return false, err
		}
	}
	return true, nil
}

// reader is what *pebble.DB and *pebble.Batch have in common for a Get.
type reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

func getStored(r reader, uid string) (stored, bool, error) {
	v, closer, err := r.Get(profileKey(uid))
	if errors.Is(err, pebble.ErrNotFound) {
		return stored{}, false, nil
	}
	if err != nil {
		return stored{}, false, err
	}
	defer closer.Close()
	var st stored
	if err := json.Unmarshal(v, &st); err != nil {
		return stored{}, false, fmt.Errorf("corrupt view entry for %s: %w", uid, err)
	}
	st.Profile.Deleted = st.Deleted
	return st, true, nil
}

// Get returns the view's profile for uid. A deleted profile is returned with
// Deleted set, so that callers can tell "deleted at version N" from "never
// seen" (ErrNotFound).
func (s *Store) Get(uid string) (events.Profile, error) {
	st, found, err := getStored(s.db, uid)
	if err != nil {
		return events.Profile{}, err
	}
	if !found {
		return events.Profile{}, ErrNotFound
	}
	return st.Profile, nil
}

// SearchEmail returns the live profiles whose normalized email equals the
// normalized form of email, ordered by uid. It returns an empty, non-nil
// slice when there are none.
func (s *Store) SearchEmail(email string) ([]events.Profile, error) {
	prefix := emailKey(email, "")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := []events.Profile{}
	for it.First(); it.Valid(); it.Next() {
		uid := string(it.Key()[len(prefix):])
		p, err := s.Get(uid)
		if err != nil {
			return nil, err
		}
		if p.Exists() {
			out = append(out, p)
		}
	}
	return out, it.Error()
}

// Changed returns a channel that is closed at the next successful Apply.
// Waiters read the view, and if it is not yet what they need, wait on the
// channel they took before reading.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func profileKey(uid string) []byte { return append(bytes.Clone(prefixProfile), uid...) }

func emailKey(email, uid string) []byte {
	k := append(bytes.Clone(prefixEmail), events.NormalizeEmail(email)...)
	k = append(k, 0)
	return append(k, uid...)
}

func offsetKey(topic string, p int32) []byte {
	k := append(bytes.Clone(prefixOffset), topic...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint32(k, uint32(p))
}

// prefixEnd returns the smallest key greater than every key with prefix.
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// quietLogger sends Pebble's informational chatter nowhere and its errors to
// slog. Fatalf panics, as Pebble's own default logger exits.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	slog.Error("pebble", "msg", fmt.Sprintf(format, args...))
}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}
