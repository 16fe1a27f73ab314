package kafkax

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"profiles/events/pii"
)

// Keyring follows the keys topic (Config.KeysTopic) and gives the data key
// of any profile: it implements events.Keys. Every binary that reads or
// writes personal data runs one (Run) and installs it with events.SetKeys.
//
// A profile's key is written in the transaction of its first sealed event
// (its ProfileCreated), and its tombstone in the transaction of its
// ProfileDeleted. So when a reader decodes a committed sealed record, the
// key it needs is committed too. Only a tombstone read (or Forget) means
// "gone" (pii.ErrNoKey); an absence means "not read yet", and DataKey
// waits for it (see DataKey). The keys topic keeps tombstones for as long
// as it lives, so a reader that starts late still reads them.
//
// It holds every sealed key in memory (about 170 bytes per profile), and
// opens (unseals) a key when it is first asked for, keeping at most
// openedMax opened ones: an opened AES-GCM key takes about a kilobyte.
type Keyring struct {
	// MissWait bounds how long DataKey waits for a key it has not read
	// (DefaultKeyMissWait when zero). Set it before Run.
	MissWait time.Duration

	client     sarama.Client // the follower's
	rpc        sarama.Client // end offsets and drained checks
	topic      string
	partitions int32
	kek        *pii.KEK
	log        *slog.Logger

	mu      sync.Mutex
	sealed  map[string][]byte       // the sealed key per uid; nil: gone (tombstoned, forgotten); empty: Put, see opened
	opened  map[string]*pii.DataKey // keys opened, or Put (those stay until their record is read)
	next    map[int32]int64         // next offset the follower reads, per partition
	caught  map[int32]bool          // partitions read up to the end they had at start
	changed chan struct{}           // closed and replaced after every batch
	done    chan struct{}           // closed when Run returns
	runErr  error
}

// DefaultKeyMissWait is how long Keyring.DataKey waits for a key it has
// not read before it reports pii.ErrKeyUnavailable.
const DefaultKeyMissWait = 30 * time.Second

// NewKeyring returns a Keyring of c's keys topic; Run starts following it,
// and Close closes its clients.
//
// It has Kafka clients of its own: one for the follower, one for the
// questions a miss asks (end offsets, drained checks). Kafka answers the
// requests of one connection in order, so on a shared connection they
// would wait behind other consumers' fetches, which the broker holds up to
// their wait time while their partitions are quiet.
func NewKeyring(c Config, clientID string, kek *pii.KEK, log *slog.Logger) (*Keyring, error) {
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
		sealed: map[string][]byte{}, opened: map[string]*pii.DataKey{}, next: map[int32]int64{}, caught: map[int32]bool{}, changed: make(chan struct{}), done: make(chan struct{}),
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
	err := Read(ctx, k.client, ReadOptions{Topic: k.topic, Handle: k.handle, CaughtUp: func(p int32) {
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

// put is the value of sealed for a key Put by this process and not read
// from the topic yet: its only copy is in opened.
var put = []byte{}

func (k *Keyring) handle(_ context.Context, p int32, records []*sarama.ConsumerMessage) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, r := range records {
		uid := string(r.Key)
		delete(k.opened, uid)
		if r.Value == nil {
			k.sealed[uid] = nil
			continue
		}
		// A copy: the record's value shares the fetch's buffer.
		k.sealed[uid] = bytes.Clone(r.Value)
	}
	k.next[p] = records[len(records)-1].Offset + 1
	close(k.changed)
	k.changed = make(chan struct{})
	return nil
}

// Put records a key this process has just written (command-svc, after the
// commit of a ProfileCreated).
func (k *Keyring) Put(uid string, dk *pii.DataKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if v, ok := k.sealed[uid]; !ok || v == nil {
		k.sealed[uid] = put
	}
	k.opened[uid] = dk
}

// Forget drops uid's key: its profile was deleted, and the delete's
// transaction tombstoned the key.
func (k *Keyring) Forget(uid string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sealed[uid] = nil
	delete(k.opened, uid)
}

// DataKey returns uid's data key, or pii.ErrNoKey when the keyring has read
// its tombstone: its delete crypto-shredded it. It never concludes "gone"
// from an absence. A key is committed in the transaction of the first
// sealed event of its profile, so a reader holding a sealed record knows
// its key exists or was tombstoned, and tombstones are kept for as long
// as the keys topic lives (see Config.Specs). An absence is therefore a
// key not read yet, and a miss waits for the follower: first for its
// first read of uid's partition, then, in rounds, until it has read up to
// the partition's current end. Each round after the first refreshes the
// topic's metadata and asks for the end again, so an end offset answered
// by a stale leader (a broker thawed after a pause, which still believes
// it leads) cannot stand alone.
//
// When the key is still missing after MissWait, DataKey returns an error
// wrapping pii.ErrKeyUnavailable, which readers treat as "retry later", never
// as "erased". It fails the same way when the keyring stopped.
func (k *Keyring) DataKey(uid string) (*pii.DataKey, error) {
	if dk, ok, err := k.cached(uid); ok || err != nil {
		return dk, err
	}
	p := Partition(uid, k.partitions)
	wait := k.MissWait
	if wait <= 0 {
		wait = DefaultKeyMissWait
	}
	deadline := time.Now().Add(wait)
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	// At start, wait for the first read of the partition: most misses are
	// then answered from memory, without asking the broker.
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
			return nil, fmt.Errorf("data key of %s: %w: %w", uid, pii.ErrKeyUnavailable, k.stopped())
		}
		if dk, ok, err := k.cached(uid); ok || err != nil {
			return dk, err
		}
	}
	backoff := 100 * time.Millisecond
	for round := 0; ; round++ {
		if round > 0 {
			_ = k.rpc.RefreshMetadata(k.topic)
		}
		end, err := k.rpc.GetOffset(k.topic, p, sarama.OffsetNewest)
		if err != nil {
			k.log.Warn("cannot read the end of the keys topic; retrying", "partition", p, "err", err)
		}
		for err == nil {
			dk, ok, cerr := k.cached(uid)
			if ok || cerr != nil {
				return dk, cerr
			}
			k.mu.Lock()
			next, changed := k.next[p], k.changed
			k.mu.Unlock()
			read := next >= end
			if !read {
				// Only transaction markers (or aborted records) left below the end?
				read, _ = drained(k.rpc, k.topic, p, next, end)
			}
			if read {
				break // read up to this end, and still missing: ask again
			}
			select {
			case <-changed:
			case <-time.After(100 * time.Millisecond):
			case <-timeout.C:
				return nil, k.missing(uid, p, "the keys partition is not read up to its end yet")
			case <-k.done:
				return nil, fmt.Errorf("data key of %s: %w: %w", uid, pii.ErrKeyUnavailable, k.stopped())
			}
		}
		if time.Now().After(deadline) {
			return nil, k.missing(uid, p, "the keys partition was read to its end and holds neither a key nor a tombstone")
		}
		select {
		case <-time.After(backoff):
		case <-timeout.C:
			return nil, k.missing(uid, p, "the keys partition was read to its end and holds neither a key nor a tombstone")
		case <-k.done:
			return nil, fmt.Errorf("data key of %s: %w: %w", uid, pii.ErrKeyUnavailable, k.stopped())
		}
		backoff = min(2*backoff, time.Second)
	}
}

// Known returns uid's key and whether the keyring has read it (or been
// told it with Put), without waiting: dk is nil for a tombstoned key. A
// sealed key that this KEK cannot open counts as gone, loudly: the
// profile's data cannot be read, which is a misconfiguration.
func (k *Keyring) Known(uid string) (dk *pii.DataKey, ok bool) {
	k.mu.Lock()
	if dk := k.opened[uid]; dk != nil {
		k.mu.Unlock()
		return dk, true
	}
	v, ok := k.sealed[uid]
	k.mu.Unlock()
	if !ok || v == nil {
		return nil, ok
	}
	if len(v) == 0 {
		return nil, false // Put, and dropped from opened: cannot happen (see handle)
	}
	dk, err := k.kek.Open(uid, v)
	k.mu.Lock()
	defer k.mu.Unlock()
	if cur := k.sealed[uid]; !bytes.Equal(cur, v) {
		// Replaced while it was opened (a tombstone, most likely).
		if cur == nil {
			return nil, true
		}
		return k.opened[uid], k.opened[uid] != nil
	}
	if err != nil {
		k.log.Error("cannot open a sealed data key; the profile's personal data reads as erased", "uid", uid, "err", err)
		k.sealed[uid] = nil
		return nil, true
	}
	if len(k.opened) >= openedMax {
		// Drop about half, never a Put key whose record is not read yet.
		n := 0
		for u := range k.opened {
			if len(k.sealed[u]) > 0 {
				delete(k.opened, u)
				if n++; n >= openedMax/2 {
					break
				}
			}
		}
	}
	k.opened[uid] = dk
	return dk, true
}

// missing logs and returns the error of a miss that outlived MissWait.
func (k *Keyring) missing(uid string, p int32, why string) error {
	k.log.Error("no data key for a sealed record; readers retry, nothing is taken for erased", "uid", uid, "partition", p, "reason", why)
	return fmt.Errorf("data key of %s: %w: %s", uid, pii.ErrKeyUnavailable, why)
}

// cached returns uid's key if the keyring knows it (ok), pii.ErrNoKey if
// it knows it is gone, or the keyring's failure.
func (k *Keyring) cached(uid string) (*pii.DataKey, bool, error) {
	dk, ok := k.Known(uid)
	switch {
	case ok && dk == nil:
		return nil, true, pii.ErrNoKey
	case ok:
		return dk, true, nil
	}
	select {
	case <-k.done:
		return nil, false, fmt.Errorf("data key of %s: %w: %w", uid, pii.ErrKeyUnavailable, k.stopped())
	default:
	}
	return nil, false, nil
}

func (k *Keyring) stopped() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.runErr
}
