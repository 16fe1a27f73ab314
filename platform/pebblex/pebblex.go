// Package pebblex opens the services' Pebble stores and keeps, inside each,
// the Kafka positions its data reflects.
//
// Every store of this project is a cache of Kafka: it holds what a service
// folded from some topics, and next to it, in the same atomic batches, the
// next offset of every partition it folded (SetOffset). So a restart
// resumes where the data ends, and deleting a store loses nothing: the
// service rebuilds it from Kafka. Open enforces that a store is only read
// as what it is: one written in another key layout, or built from another
// Kafka cluster or event log, is emptied, and one that Pebble reports
// corrupt is deleted, each with a log line that says so.
package pebblex

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// FormatMajorVersion is pinned so that a Pebble upgrade never changes the
// on-disk format behind our back.
const FormatMajorVersion = pebble.FormatValueSeparation

// The keys this package owns. A store's own keys must not start with
// "f\x00" or "o\x00"; a 0 byte cannot occur in a uid, an email or a topic
// name, so it separates the parts of every key.
var (
	keyFormat    = []byte("f\x00format")
	keyOrigin    = []byte("f\x00origin")
	prefixOffset = []byte("o\x00")
)

// Options say what a store is. Layout and What are required.
type Options struct {
	// What names the store in log lines ("the view", "the state").
	What string
	// Store names the store in metrics (label store, see metrics.go);
	// empty: What.
	Store string
	// Layout names the store's key layout. A store that records another
	// layout (or none, but holds data) is emptied on Open: reading it
	// with the wrong layout would silently miss data.
	Layout string
	// Origin names what the store is built from: the Kafka cluster's id
	// and the event log (see kafkax.ClusterID). A store that records
	// another origin is emptied on Open and rebuilt, never served: its
	// offsets and data belong to other topics. A store that records none
	// takes Origin. An empty Origin checks nothing and records nothing.
	Origin string
	// CacheSize is Pebble's block cache in bytes; 0 means Pebble's
	// default (8 MiB).
	CacheSize int64
	// Log gets the line that says why a store is emptied or deleted; nil
	// means slog.Default().
	Log *slog.Logger
}

// Open opens (or creates) the store in dir; fs is vfs.Default for a real
// directory and vfs.NewMem() in tests. A store that Pebble reports corrupt
// is deleted and created anew; one of another layout or origin is emptied
// (see Options). The caller owns the DB and closes it.
func Open(dir string, fs vfs.FS, o Options) (*pebble.DB, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	db, err := open(dir, fs, o)
	if pebble.IsCorruptionError(err) {
		o.Log.Error(o.What+" is corrupt; deleting it to rebuild it from Kafka", "dir", dir, "err", err)
		if rerr := fs.RemoveAll(dir); rerr != nil {
			return nil, fmt.Errorf("delete the corrupt store in %s: %w (after: %w)", dir, rerr, err)
		}
		db, err = open(dir, fs, o)
	}
	if err == nil {
		stores.add(db, cmp.Or(o.Store, o.What))
	}
	return db, err
}

// BloomBitsPerKey is the size of the Bloom filter that every table of a
// store carries, in bits per key: 10 bits let about 1% of the lookups of a
// key that a table does not hold read its index and data blocks.
//
// The services look up many keys that are not there: a new profile's uid,
// its email's claim, its data key, and every level above the one that
// holds a key. Without filters each such lookup reads an index and a data
// block of every table whose range covers the key (Pebble has none by
// default). Tables written before the filters came get theirs when a
// compaction rewrites them.
const BloomBitsPerKey = 10

func open(dir string, fs vfs.FS, o Options) (*pebble.DB, error) {
	opts := &pebble.Options{
		FS:                 fs,
		FormatMajorVersion: FormatMajorVersion,
		Logger:             quietLogger{},
		CacheSize:          o.CacheSize,
	}
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(BloomBitsPerKey)
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open %s in %s: %w", o.What, dir, err)
	}
	if err := checkMarkers(db, o); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// checkMarkers empties a store of another key layout (unless it is empty
// anyway) or of another origin, and records the layout and origin, in one
// synced batch. A store that holds both markers as they should be is left
// alone.
func checkMarkers(db *pebble.DB, o Options) error {
	layout, err := marker(db, keyFormat)
	if err != nil {
		return err
	}
	have, err := marker(db, keyOrigin)
	if err != nil {
		return err
	}
	wipe := false
	switch {
	case layout != o.Layout:
		it, err := db.NewIter(nil)
		if err != nil {
			return err
		}
		wipe = it.First()
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return err
		}
		if wipe {
			o.Log.Warn(o.What+" was written in another key layout; emptying it to rebuild it from Kafka", "layout", o.Layout, "store_layout", layout)
		}
	case o.Origin == "" || have == o.Origin:
		return nil
	case have != "":
		o.Log.Error(o.What+" was built from another Kafka cluster or event log; emptying it to rebuild it from Kafka",
			"store_origin", have, "origin", o.Origin)
		wipe = true
	}
	b := db.NewBatch()
	defer b.Close()
	if wipe {
		if err := b.DeleteRange([]byte{0}, []byte{0xff}, nil); err != nil {
			return err
		}
	}
	if err := b.Set(keyFormat, []byte(o.Layout), nil); err != nil {
		return err
	}
	if o.Origin != "" {
		if err := b.Set(keyOrigin, []byte(o.Origin), nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}

// marker returns the value of a marker key, "" when it is absent.
func marker(db *pebble.DB, key []byte) (string, error) {
	v, err := Get(db, key)
	return string(v), err
}

// Reader is what reads a store: a *pebble.DB, or an indexed *pebble.Batch
// (which sees its own writes).
type Reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

// Writer is what writes a store: a *pebble.Batch.
type Writer interface {
	Set(key, value []byte, o *pebble.WriteOptions) error
	Delete(key []byte, o *pebble.WriteOptions) error
}

// Get returns a copy of key's value, nil (and no error) when it is absent.
func Get(r Reader, key []byte) ([]byte, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return bytes.Clone(v), nil
}

// TopicOffsetsPrefix is the prefix of the keys of topic's offsets.
func TopicOffsetsPrefix(topic string) []byte {
	return append(append(bytes.Clone(prefixOffset), topic...), 0)
}

// OffsetKey is the key of partition p of topic's next offset.
func OffsetKey(topic string, p int32) []byte {
	return binary.BigEndian.AppendUint32(TopicOffsetsPrefix(topic), uint32(p))
}

// Offset returns the next offset to read from partition p of topic, and
// false if the store holds nothing of that partition.
func Offset(r Reader, topic string, p int32) (int64, bool, error) {
	v, err := Get(r, OffsetKey(topic, p))
	if err != nil || v == nil {
		return 0, false, err
	}
	if len(v) != 8 {
		return 0, false, fmt.Errorf("corrupt offset for %s/%d", topic, p)
	}
	return int64(binary.BigEndian.Uint64(v)), true, nil
}

// SetOffset writes next as partition p of topic's next offset. Write it in
// the batch of the data it follows, so that both are durable or neither.
func SetOffset(w Writer, topic string, p int32, next int64) error {
	return w.Set(OffsetKey(topic, p), binary.BigEndian.AppendUint64(nil, uint64(next)), nil)
}

// Offsets returns the next offset of every partition of topic of which the
// store has one.
func Offsets(r Reader, topic string) (map[int32]int64, error) {
	prefix := TopicOffsetsPrefix(topic)
	out := map[int32]int64{}
	err := Scan(r, prefix, func(k, v []byte) error {
		if len(k) != len(prefix)+4 || len(v) != 8 {
			return fmt.Errorf("corrupt offset key %q", k)
		}
		out[int32(binary.BigEndian.Uint32(k[len(prefix):]))] = int64(binary.BigEndian.Uint64(v))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Held returns, per topic, the partitions of which the store has an
// offset.
func Held(r Reader) (map[string][]int32, error) {
	out := map[string][]int32{}
	err := Scan(r, prefixOffset, func(k, _ []byte) error {
		topic, part, ok := bytes.Cut(k[len(prefixOffset):], []byte{0})
		if ok && len(part) == 4 {
			out[string(topic)] = append(out[string(topic)], int32(binary.BigEndian.Uint32(part)))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Scan calls f, in key order, with the key and value of every key that
// starts with prefix, and stops at f's first error, which it returns. The
// key and value are valid only during the call.
func Scan(r Reader, prefix []byte, f func(k, v []byte) error) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: PrefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		if err := f(it.Key(), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// PrefixEnd returns the smallest key greater than every key with prefix
// (nil when there is none).
func PrefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// PartitionPrefix is prefix followed by partition p, the start of the keys
// of a store that partitions its data like its topics.
func PartitionPrefix(prefix []byte, p int32) []byte {
	return binary.BigEndian.AppendUint32(bytes.Clone(prefix), uint32(p))
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
