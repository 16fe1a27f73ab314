package pii

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/platform/kafkax"
	"profiles/platform/topology"
)

// Keyring follows the keys topic (topology.Config.KeysTopic) and gives the
// data key of any profile: it implements Keys. Every binary that reads or
// writes personal data runs one (Run) and builds its Codec with it.
//
// A profile's key is written in the transaction of its first sealed event
// (its ProfileCreated), and its tombstone in the transaction of its
// ProfileDeleted. So when a reader decodes a committed sealed record, the
// key it needs is committed too. Only a tombstone read (or Forget) means
// "gone" (ErrNoKey); an absence means "not read yet", and DataKey
// waits for it (see DataKey). The keys topic keeps tombstones for as long
// as it lives, so a reader that starts late still reads them.
//
// It keeps every profile's sealed key (the 60 bytes under the KEK, never
// an opened key) in a keyStore: in memory by default (about 85 bytes per
// profile, and the whole topic read at every start), or in a Pebble store
// with OpenStore, so that its memory does not grow with the profiles and
// a restart reads only the tail of the topic. It opens (unseals) a key
// when it is first asked for, keeping at most openedMax opened ones: an
// opened AES-GCM key takes about a kilobyte.
type Keyring struct {
	// MissWait bounds how long DataKey waits for a key it has not read
	// (DefaultKeyMissWait when zero). Set it before Run.
	MissWait time.Duration
	// MissGrace is how long a miss waits for the follower before it reads
	// the keys partition itself (DefaultKeyMissGrace when zero; negative:
	// no wait). A key is committed with the record that needs it, so the
	// follower, woken by the same commit, has it a moment later: the wait
	// spares the broker a Fetch per miss. Set it before Run.
	MissGrace time.Duration
	// Lazy makes the follower fetch at most about once a second (a fetch
	// waits for 1 MiB or a second), and a miss skip MissGrace: for a
	// process that writes the keys it reads (command-svc Puts them), for
	// which waking at every transaction of the keys topic is wasted work
	// for the broker. A miss then reads the partition itself. Set it
	// before Run.
	Lazy bool

	client     sarama.Client // the follower's
	rpc        sarama.Client // the direct reads of a miss
	topic      string
	partitions int32
	kek        *KEK
	log        *slog.Logger

	mu      sync.Mutex
	keys    keyStore            // what the follower read (and Forget); its writes happen under mu
	writes  uint64              // counts the writes to keys, so a reader outside mu sees that one happened
	opened  map[string]*DataKey // keys opened, or Put
	put     map[string]bool     // keys Put whose record is not read yet: opened holds their only copy
	next    map[int32]int64     // next offset the follower reads, per partition
	caught  map[int32]bool      // partitions read up to the end they had at start
	changed chan struct{}       // closed and replaced after every batch
	done    chan struct{}       // closed when Run returns
	runErr  error
	// ahead holds, per partition, what the direct reads of misses found
	// past the follower's position (see readAhead); rpcMu serializes the
	// direct reads of one partition, so that concurrent misses there cost
	// one Fetch.
	ahead map[int32]*readAhead
	rpcMu map[int32]*sync.Mutex
}

// readAhead is the last record of every key in [from, upTo) of one
// partition of the keys topic, read by the misses' direct reads. from is
// at most the follower's position then, so together with the store it
// answers for every key below upTo.
type readAhead struct {
	from, upTo int64
	recs       map[string]aheadRecord
}

type aheadRecord struct {
	value  []byte // nil for a tombstone
	offset int64
}

// aheadMax bounds the records a partition's read-ahead keeps; past it the
// read-ahead starts over at the follower's position.
const aheadMax = 1 << 14

var keyRecordsRead = promauto.NewCounter(prometheus.CounterOpts{
	Name: "profiles_keyring_records_read_total",
	Help: "Records of the keys topic the keyring's follower read. With a store on disk (DATA_DIR) a restart reads only the records after the stored offsets.",
})

var keyDirectReads = promauto.NewCounter(prometheus.CounterOpts{
	Name: "profiles_keyring_direct_reads_total",
	Help: "Direct reads of the keys topic by misses (each one Fetch or more). Concurrent misses of one partition share one, and keep what it found for the next.",
})

var keyMisses = promauto.NewHistogram(prometheus.HistogramOpts{
	Name:    "profiles_keyring_miss_seconds",
	Help:    "Time to answer a data key the keyring had not read yet (a direct read of the keys topic, or a wait for the follower at start).",
	Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
})

// DefaultKeyMissWait is how long Keyring.DataKey waits for a key it has
// not read before it reports ErrKeyUnavailable.
const DefaultKeyMissWait = 30 * time.Second

// DefaultKeyMissGrace is Keyring.MissGrace's zero value.
const DefaultKeyMissGrace = 50 * time.Millisecond

// NewKeyring returns a Keyring of c's keys topic; Run starts following it,
// and Close closes its clients.
//
// It has Kafka clients of its own: one for the follower, one for the
// direct reads of a miss. Kafka answers the
// requests of one connection in order, so on a shared connection they
// would wait behind other consumers' fetches, which the broker holds up to
// their wait time while their partitions are quiet.
func NewKeyring(c topology.Config, clientID string, kek *KEK, log *slog.Logger) (*Keyring, error) {
	client, err := kafkax.NewClient(c.Brokers, c.Sarama(clientID+"-keys"))
	if err != nil {
		return nil, fmt.Errorf("kafka client of the keyring: %w", err)
	}
	rpc, err := kafkax.NewClient(c.Brokers, c.Sarama(clientID+"-keys-rpc"))
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("kafka client of the keyring: %w", err)
	}
	rpcMu := make(map[int32]*sync.Mutex, c.Partitions)
	for p := range c.Partitions {
		rpcMu[p] = new(sync.Mutex)
	}
	return &Keyring{
		client: client, rpc: rpc, topic: c.KeysTopic, partitions: c.Partitions, kek: kek, log: log,
		keys: newMemKeys(), opened: map[string]*DataKey{}, put: map[string]bool{}, next: map[int32]int64{}, caught: map[int32]bool{}, changed: make(chan struct{}), done: make(chan struct{}),
		ahead: map[int32]*readAhead{}, rpcMu: rpcMu,
	}, nil
}

// OpenStore makes the keyring keep its sealed keys in the Pebble store of
// o instead of memory, and resume the keys topic at the offsets stored
// there. Call it before Run; Close closes the store.
func (k *Keyring) OpenStore(o KeyStoreOptions) error {
	store, err := openDiskKeys(k.topic, o, k.log)
	if err != nil {
		return err
	}
	next, err := store.offsets()
	if err != nil {
		_ = store.close()
		return fmt.Errorf("read the offsets of the keyring's store: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	_ = k.keys.close()
	k.keys, k.next = store, next
	return nil
}

// Close closes the keyring's clients and its store, after Run has
// returned.
func (k *Keyring) Close() {
	_ = k.client.Close()
	_ = k.rpc.Close()
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.keys.close(); err != nil {
		k.log.Error("closing the keyring's store", "err", err)
	}
}

// Run follows the keys topic until ctx ends (a service.Task): from the
// offsets of its store, or from the beginning.
func (k *Keyring) Run(ctx context.Context) error {
	k.mu.Lock()
	start := maps.Clone(k.next)
	k.mu.Unlock()
	if len(start) > 0 {
		k.log.Info("the keyring resumes the keys topic at its stored offsets", "topic", k.topic, "partitions", len(start))
	}
	if k.Lazy {
		// Read by the follower's consumer only, which Read creates below.
		cc := k.client.Config()
		cc.Consumer.Fetch.Min = 1 << 20
		cc.Consumer.MaxWaitTime = time.Second
	}
	err := kafkax.Read(ctx, k.client, kafkax.ReadOptions{Topic: k.topic, Handle: k.handle, Start: func(p int32) (int64, error) {
		if next, ok := start[p]; ok {
			return next, nil
		}
		return sarama.OffsetOldest, nil
	}, CaughtUp: func(p int32) {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.caught[p] = true
		close(k.changed)
		k.changed = make(chan struct{})
	}})
	k.mu.Lock()
	k.runErr = err
	if k.runErr == nil {
		k.runErr = errors.New("the keyring stopped")
	}
	k.mu.Unlock()
	close(k.done)
	return err
}

// openedMax bounds the opened keys a Keyring keeps: about 8 MiB, for the
// profiles being read and written now. Opening a sealed key again costs a
// few microseconds.
const openedMax = 1 << 13

func (k *Keyring) handle(_ context.Context, p int32, records []*sarama.ConsumerMessage) error {
	recs := make([]keyRecord, len(records))
	for i, r := range records {
		recs[i] = keyRecord{uid: string(r.Key)}
		if r.Value == nil {
			continue
		}
		sealed, err := k.kek.Unwrap(recs[i].uid, r.Value)
		if err != nil {
			// Not this KEK's, or corrupt: the profile's data cannot be
			// read. Loud, because it is a misconfiguration.
			k.log.Error("cannot open a sealed data key; the profile's personal data reads as erased", "uid", recs[i].uid, "partition", p, "offset", r.Offset, "err", err)
			continue
		}
		recs[i].sealed = sealed
	}
	next := records[len(records)-1].Offset + 1
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.keys.write(p, recs, next); err != nil {
		return err
	}
	k.writes++
	for _, r := range recs {
		delete(k.opened, r.uid)
		delete(k.put, r.uid)
	}
	keyRecordsRead.Add(float64(len(records)))
	k.next[p] = max(k.next[p], next)
	if a := k.ahead[p]; a != nil && a.upTo <= k.next[p] {
		delete(k.ahead, p) // the store has all of it now
	}
	close(k.changed)
	k.changed = make(chan struct{})
	return nil
}

// Put records a key this process has just written (command-svc, after the
// commit of a ProfileCreated).
func (k *Keyring) Put(uid string, dk *DataKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, gone, known, err := k.keys.lookup(uid); err != nil || !known || gone {
		k.put[uid] = true
	}
	k.opened[uid] = dk
}

// Forget drops uid's key: its profile was deleted, and the delete's
// transaction tombstoned the key.
func (k *Keyring) Forget(uid string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.keys.forget(uid); err != nil {
		// The follower still reads the key's tombstone, which the
		// delete's transaction wrote.
		k.log.Error("cannot record a forgotten data key; it is gone once its tombstone is read", "uid", uid, "err", err)
	}
	k.writes++
	delete(k.opened, uid)
	delete(k.put, uid)
}

// DataKey returns uid's data key, or ErrNoKey when the keyring has read
// its tombstone: its delete crypto-shredded it. It never concludes "gone"
// from an absence. A key is committed in the transaction of the first
// sealed event of its profile, so a reader holding a sealed record knows
// its key exists or was tombstoned, and tombstones are kept for as long
// as the keys topic lives (see topology.Config.Specs). An absence is therefore a
// key not read yet.
//
// A miss first waits for the follower's first read of uid's partition
// (at start, most misses are then answered from memory). After that it
// does not wait for the follower, which may sit in a fetch long poll: it
// reads the partition itself, from the follower's position to the last
// stable offset, straight from the leader (one Fetch, read_committed), and
// takes uid's last record there. When that finds nothing, it tries again,
// with the topic's metadata refreshed, so that one answer of a stale leader
// (a broker thawed after a pause, which still believes it leads) cannot
// decide.
//
// When the key is still missing after MissWait, DataKey returns an error
// wrapping ErrKeyUnavailable, which readers treat as "retry later", never
// as "erased". It fails the same way when the keyring stopped.
func (k *Keyring) DataKey(uid string) (*DataKey, error) {
	if dk, ok, err := k.cached(uid); ok || err != nil {
		return dk, err
	}
	start := time.Now()
	defer func() { keyMisses.Observe(time.Since(start).Seconds()) }()
	p := kafkax.Partition(uid, k.partitions)
	wait := k.MissWait
	if wait <= 0 {
		wait = DefaultKeyMissWait
	}
	deadline := time.Now().Add(wait)
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for {
		k.mu.Lock()
		caught, changed := k.caught[p], k.changed
		k.mu.Unlock()
		if caught {
			break
		}
		select {
		case <-changed:
		case <-timeout.C:
			return nil, k.missing(uid, p, "the keys partition is not read yet")
		case <-k.done:
			return nil, fmt.Errorf("data key of %s: %w: %w", uid, ErrKeyUnavailable, k.stopped())
		}
		if dk, ok, err := k.cached(uid); ok || err != nil {
			return dk, err
		}
	}
	grace := k.MissGrace
	if grace == 0 {
		grace = DefaultKeyMissGrace
	}
	if grace > 0 && !k.Lazy {
		if dk, ok, err := k.awaitFollower(uid, grace); ok || err != nil {
			return dk, err
		}
	}
	backoff := 50 * time.Millisecond
	for round := 0; ; round++ {
		if round > 0 {
			_ = k.rpc.RefreshMetadata(k.topic)
		}
		// A later round reads again from the follower's position: the
		// answer of a stale leader must not decide.
		dk, found, err := k.readDirect(uid, p, round > 0)
		if found || err != nil {
			return dk, err
		}
		if dk, ok, err := k.cached(uid); ok || err != nil {
			return dk, err // the follower read it meanwhile
		}
		if time.Now().After(deadline) {
			return nil, k.missing(uid, p, "the keys partition was read to its last stable offset and holds neither a key nor a tombstone")
		}
		select {
		case <-time.After(backoff):
		case <-timeout.C:
			return nil, k.missing(uid, p, "the keys partition was read to its last stable offset and holds neither a key nor a tombstone")
		case <-k.done:
			return nil, fmt.Errorf("data key of %s: %w: %w", uid, ErrKeyUnavailable, k.stopped())
		}
		backoff = min(2*backoff, time.Second)
	}
}

// awaitFollower waits up to grace for the follower to read uid's key. ok
// reports an answer (the key, or ErrNoKey); a failed keyring is an error.
func (k *Keyring) awaitFollower(uid string, grace time.Duration) (dk *DataKey, ok bool, err error) {
	t := time.NewTimer(grace)
	defer t.Stop()
	for {
		k.mu.Lock()
		changed := k.changed
		k.mu.Unlock()
		if dk, ok, err := k.cached(uid); ok || err != nil {
			return dk, ok, err
		}
		select {
		case <-changed:
		case <-t.C:
			return nil, false, nil
		case <-k.done:
			return nil, false, fmt.Errorf("data key of %s: %w: %w", uid, ErrKeyUnavailable, k.stopped())
		}
	}
}

// readDirect answers a miss of uid in partition p from the read-ahead, or
// else reads the partition itself, from where the follower and the
// read-ahead end to the last stable offset (from the follower's position
// when fresh is set), straight from the leader, and keeps every key found
// there in the read-ahead: the other keys of a batch that missed are
// usually among them. found is false when neither holds uid's record.
func (k *Keyring) readDirect(uid string, p int32, fresh bool) (dk *DataKey, found bool, err error) {
	mu := k.rpcMu[p]
	if mu == nil {
		return nil, false, fmt.Errorf("data key of %s: %w: partition %d of %d", uid, ErrKeyUnavailable, p, k.partitions)
	}
	mu.Lock()
	defer mu.Unlock()
	// Another miss of this partition may have read uid's record meanwhile.
	if dk, ok, err := k.cached(uid); ok || err != nil {
		return dk, true, err
	}
	k.mu.Lock()
	next := k.next[p]
	a := k.ahead[p]
	if a != nil && !fresh {
		if r, ok := a.recs[uid]; ok {
			k.mu.Unlock()
			dk, err := k.found(p, uid, r.value, r.offset)
			return dk, true, err
		}
	}
	from := next
	if a != nil && !fresh && next <= a.upTo {
		from = a.upTo // [next, a.upTo) holds no record of uid: the store and a cover it
	} else {
		a = nil
	}
	k.mu.Unlock()

	recs := map[string]aheadRecord{}
	readTo, rerr := kafkax.CommittedRecords(k.rpc, k.topic, p, from, func(off int64, key, value []byte) {
		recs[string(key)] = aheadRecord{value: bytes.Clone(value), offset: off} // not the whole response
	})
	if rerr != nil {
		k.log.Warn("cannot read the keys topic; retrying", "partition", p, "err", rerr)
	}
	keyDirectReads.Inc()
	k.mu.Lock()
	switch cur := k.ahead[p]; {
	case rerr != nil && len(recs) == 0:
	case a != nil && cur == a && len(a.recs)+len(recs) <= aheadMax:
		for key, r := range recs {
			a.recs[key] = r
		}
		a.upTo = max(a.upTo, readTo)
	case len(recs) <= aheadMax:
		k.ahead[p] = &readAhead{from: from, upTo: readTo, recs: recs}
	default:
		delete(k.ahead, p)
	}
	k.mu.Unlock()
	if r, ok := recs[uid]; ok {
		dk, err := k.found(p, uid, r.value, r.offset)
		return dk, true, err
	}
	return nil, false, nil
}

// found answers a miss with the record a direct read found at offset. It
// keeps the opened key only while the follower has not read that record
// (it will read it, and anything after it, such as a tombstone, which
// drops it); past it, the follower's state is the newer one.
func (k *Keyring) found(p int32, uid string, value []byte, offset int64) (*DataKey, error) {
	if value == nil {
		return nil, ErrNoKey
	}
	dk, err := k.kek.Open(uid, value)
	if err != nil {
		k.log.Error("cannot open a sealed data key; the profile's personal data reads as erased", "uid", uid, "partition", p, "offset", offset, "err", err)
		return nil, ErrNoKey
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, gone, _, err := k.keys.lookup(uid); err != nil || gone {
		return nil, ErrNoKey // forgotten, or tombstoned after offset
	}
	if k.next[p] <= offset {
		k.evict()
		k.opened[uid] = dk
	}
	return dk, nil
}

// Known returns uid's key and whether the keyring has read it (or been
// told it with Put), without waiting: dk is nil for a tombstoned key. A
// sealed key that this KEK cannot open counts as gone, loudly: the
// profile's data cannot be read, which is a misconfiguration. A store
// that cannot be read counts as "not read yet", loudly too: DataKey then
// reads the keys topic itself.
func (k *Keyring) Known(uid string) (dk *DataKey, ok bool) {
	for {
		k.mu.Lock()
		if dk := k.opened[uid]; dk != nil {
			k.mu.Unlock()
			return dk, true
		}
		writes := k.writes
		k.mu.Unlock()
		// The store is read and the key opened outside mu; a write
		// meanwhile (writes moved) makes the answer be checked again.
		sealed, gone, known, err := k.keys.lookup(uid)
		if err != nil {
			k.log.Error("cannot read the keyring's store", "uid", uid, "err", err)
			return nil, false
		}
		if !known || gone {
			// A Put key without an opened one cannot happen (see evict).
			return nil, known
		}
		dk, err := k.kek.OpenSealed(uid, sealed)
		k.mu.Lock()
		if k.writes != writes {
			cur, curGone, _, lerr := k.keys.lookup(uid)
			if lerr != nil || curGone || !bytes.Equal(cur, sealed) {
				k.mu.Unlock()
				continue // replaced while it was opened: answer again
			}
		}
		if err != nil {
			k.mu.Unlock()
			k.log.Error("cannot open a sealed data key; the profile's personal data reads as erased", "uid", uid, "err", err)
			return nil, true
		}
		k.evict()
		k.opened[uid] = dk
		k.mu.Unlock()
		return dk, true
	}
}

// evict drops about half of the opened keys when there are openedMax, but
// never a Put key whose record is not read yet (its only copy), under k.mu.
func (k *Keyring) evict() {
	if len(k.opened) < openedMax {
		return
	}
	n := 0
	for u := range k.opened {
		if !k.put[u] {
			delete(k.opened, u)
			if n++; n >= openedMax/2 {
				return
			}
		}
	}
}

// cached returns uid's key if the keyring knows it (ok), ErrNoKey if
// it knows it is gone, or the keyring's failure.
func (k *Keyring) cached(uid string) (*DataKey, bool, error) {
	dk, ok := k.Known(uid)
	switch {
	case ok && dk == nil:
		return nil, true, ErrNoKey
	case ok:
		return dk, true, nil
	}
	select {
	case <-k.done:
		return nil, false, fmt.Errorf("data key of %s: %w: %w", uid, ErrKeyUnavailable, k.stopped())
	default:
	}
	return nil, false, nil
}

// missing logs and returns the error of a miss that outlived MissWait.
func (k *Keyring) missing(uid string, p int32, why string) error {
	k.log.Error("no data key for a sealed record; readers retry, nothing is taken for erased", "uid", uid, "partition", p, "reason", why)
	return fmt.Errorf("data key of %s: %w: %s", uid, ErrKeyUnavailable, why)
}

func (k *Keyring) stopped() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.runErr
}
