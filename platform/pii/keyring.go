package pii

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
// It holds every profile's sealed key in memory (see keyStore: about 85
// bytes per profile), and opens (unseals) a key when it is first asked
// for, keeping at most openedMax opened ones: an opened AES-GCM key takes
// about a kilobyte.
type Keyring struct {
	// MissWait bounds how long DataKey waits for a key it has not read
	// (DefaultKeyMissWait when zero). Set it before Run.
	MissWait time.Duration

	client     sarama.Client // the follower's
	rpc        sarama.Client // the direct reads of a miss
	topic      string
	partitions int32
	kek        *KEK
	log        *slog.Logger

	mu      sync.Mutex
	keys    keyStore            // what the follower read (and Put, Forget)
	opened  map[string]*DataKey // keys opened, or Put (those stay until their record is read)
	next    map[int32]int64     // next offset the follower reads, per partition
	caught  map[int32]bool      // partitions read up to the end they had at start
	changed chan struct{}       // closed and replaced after every batch
	done    chan struct{}       // closed when Run returns
	runErr  error
}

var keyMisses = promauto.NewHistogram(prometheus.HistogramOpts{
	Name:    "profiles_keyring_miss_seconds",
	Help:    "Time to answer a data key the keyring had not read yet (a direct read of the keys topic, or a wait for the follower at start).",
	Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
})

// DefaultKeyMissWait is how long Keyring.DataKey waits for a key it has
// not read before it reports ErrKeyUnavailable.
const DefaultKeyMissWait = 30 * time.Second

// NewKeyring returns a Keyring of c's keys topic; Run starts following it,
// and Close closes its clients.
//
// It has Kafka clients of its own: one for the follower, one for the
// direct reads of a miss. Kafka answers the
// requests of one connection in order, so on a shared connection they
// would wait behind other consumers' fetches, which the broker holds up to
// their wait time while their partitions are quiet.
func NewKeyring(c topology.Config, clientID string, kek *KEK, log *slog.Logger) (*Keyring, error) {
	client, err := sarama.NewClient(c.Brokers, c.Sarama(clientID+"-keys"))
	if err != nil {
		return nil, fmt.Errorf("kafka client of the keyring: %w", err)
	}
	rpc, err := sarama.NewClient(c.Brokers, c.Sarama(clientID+"-keys-rpc"))
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("kafka client of the keyring: %w", err)
	}
	return &Keyring{
		client: client, rpc: rpc, topic: c.KeysTopic, partitions: c.Partitions, kek: kek, log: log,
		keys: newKeyStore(), opened: map[string]*DataKey{}, next: map[int32]int64{}, caught: map[int32]bool{}, changed: make(chan struct{}), done: make(chan struct{}),
	}, nil
}

// Close closes the keyring's clients, after Run has returned.
func (k *Keyring) Close() {
	_ = k.client.Close()
	_ = k.rpc.Close()
}

// Run follows the keys topic from its beginning until ctx ends (a
// service.Task).
func (k *Keyring) Run(ctx context.Context) error {
	err := kafkax.Read(ctx, k.client, kafkax.ReadOptions{Topic: k.topic, Handle: k.handle, CaughtUp: func(p int32) {
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

// openedMax bounds the opened keys a Keyring keeps.
const openedMax = 1 << 16

func (k *Keyring) handle(_ context.Context, p int32, records []*sarama.ConsumerMessage) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, r := range records {
		k.apply(p, string(r.Key), r.Value, r.Offset)
	}
	k.next[p] = max(k.next[p], records[len(records)-1].Offset+1)
	close(k.changed)
	k.changed = make(chan struct{})
	return nil
}

// apply records one record of the keys topic, under k.mu.
func (k *Keyring) apply(p int32, uid string, value []byte, offset int64) {
	delete(k.opened, uid)
	if value == nil {
		k.keys.setRef(uid, refGone)
		return
	}
	sealed, err := k.kek.Unwrap(uid, value)
	if err != nil {
		// Not this KEK's, or corrupt: the profile's data cannot be
		// read. Loud, because it is a misconfiguration.
		k.log.Error("cannot open a sealed data key; the profile's personal data reads as erased", "uid", uid, "partition", p, "offset", offset, "err", err)
		k.keys.setRef(uid, refGone)
		return
	}
	k.keys.add(uid, sealed)
}

// Put records a key this process has just written (command-svc, after the
// commit of a ProfileCreated).
func (k *Keyring) Put(uid string, dk *DataKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if ref, ok := k.keys.get(uid); !ok || ref == refGone {
		k.keys.setRef(uid, refPut)
	}
	k.opened[uid] = dk
}

// Forget drops uid's key: its profile was deleted, and the delete's
// transaction tombstoned the key.
func (k *Keyring) Forget(uid string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys.setRef(uid, refGone)
	delete(k.opened, uid)
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
	backoff := 50 * time.Millisecond
	for round := 0; ; round++ {
		if round > 0 {
			_ = k.rpc.RefreshMetadata(k.topic)
		}
		k.mu.Lock()
		from := k.next[p]
		k.mu.Unlock()
		value, offset, found, err := kafkax.LastRecordOf(k.rpc, k.topic, p, from, uid)
		if err != nil {
			k.log.Warn("cannot read the keys topic; retrying", "partition", p, "err", err)
		}
		if found {
			return k.found(p, uid, value, offset)
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
	if ref, ok := k.keys.get(uid); ok && ref == refGone {
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
// profile's data cannot be read, which is a misconfiguration.
func (k *Keyring) Known(uid string) (dk *DataKey, ok bool) {
	k.mu.Lock()
	if dk := k.opened[uid]; dk != nil {
		k.mu.Unlock()
		return dk, true
	}
	ref, ok := k.keys.get(uid)
	if !ok || ref == refGone || ref == refPut {
		// refPut without an opened key cannot happen (see evict).
		k.mu.Unlock()
		return nil, ok && ref == refGone
	}
	sealed := k.keys.sealed(ref)
	k.mu.Unlock()
	dk, err := k.kek.OpenSealed(uid, sealed)
	k.mu.Lock()
	defer k.mu.Unlock()
	if cur, _ := k.keys.get(uid); cur != ref {
		// Replaced while it was opened (a tombstone, most likely).
		if cur == refGone {
			return nil, true
		}
		return k.opened[uid], k.opened[uid] != nil
	}
	if err != nil {
		k.log.Error("cannot open a sealed data key; the profile's personal data reads as erased", "uid", uid, "err", err)
		k.keys.setRef(uid, refGone)
		return nil, true
	}
	k.evict()
	k.opened[uid] = dk
	return dk, true
}

// evict drops about half of the opened keys when there are openedMax, but
// never a Put key whose record is not read yet (its only copy), under k.mu.
func (k *Keyring) evict() {
	if len(k.opened) < openedMax {
		return
	}
	n := 0
	for u := range k.opened {
		if ref, _ := k.keys.get(u); ref != refPut {
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

// keyRef says where a keyStore holds a profile's key: refGone (tombstoned
// or forgotten), refPut (Put, and not read yet: only opened holds it), or
// refFirst+i for the i-th sealed key stored.
type keyRef uint32

const (
	refGone keyRef = iota
	refPut
	refFirst
)

// keyStore holds the sealed key (SealedSize bytes) of every profile,
// in chunks, indexed by uid. A uid in the canonical UUID form (every uid
// this service makes) is a 16-byte map key, so a profile takes about 85
// bytes in all; any other uid is a string key. A key that is tombstoned
// leaves its 60 bytes unused until the process ends. Not safe for
// concurrent use (Keyring.mu guards it).
type keyStore struct {
	ids    map[[16]byte]keyRef
	names  map[string]keyRef
	chunks [][]byte
	n      int
}

// chunkKeys is the number of sealed keys in one chunk of a keyStore.
const chunkKeys = 1024

func newKeyStore() keyStore {
	return keyStore{ids: map[[16]byte]keyRef{}, names: map[string]keyRef{}}
}

func (s *keyStore) get(uid string) (keyRef, bool) {
	if id, ok := parseUUID(uid); ok {
		ref, ok := s.ids[id]
		return ref, ok
	}
	ref, ok := s.names[uid]
	return ref, ok
}

func (s *keyStore) setRef(uid string, ref keyRef) {
	if id, ok := parseUUID(uid); ok {
		s.ids[id] = ref
		return
	}
	s.names[uid] = ref
}

// add stores sealed (SealedSize bytes) as uid's key.
func (s *keyStore) add(uid string, sealed []byte) {
	if s.n%chunkKeys == 0 {
		s.chunks = append(s.chunks, make([]byte, 0, chunkKeys*SealedSize))
	}
	c := &s.chunks[len(s.chunks)-1]
	*c = append(*c, sealed[:SealedSize]...)
	s.setRef(uid, refFirst+keyRef(s.n))
	s.n++
}

// sealed returns the sealed key that ref (refFirst or more) names.
func (s *keyStore) sealed(ref keyRef) []byte {
	i := int(ref - refFirst)
	at := (i % chunkKeys) * SealedSize
	return s.chunks[i/chunkKeys][at : at+SealedSize : at+SealedSize]
}

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
