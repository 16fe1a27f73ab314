package kafkax

import (
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
// A profile's key is written in the transaction of its ProfileCreated
// event, and its tombstone in the transaction of its ProfileDeleted. So
// when a reader decodes a committed event, the key it needs is committed
// too, at an offset below the keys partition's current end. DataKey
// therefore never guesses: on a miss it waits until the follower has read
// every committed record below that end, and only then answers "gone"
// (pii.ErrNoKey).
//
// It holds every key in memory (about a hundred bytes per profile).
type Keyring struct {
	client     sarama.Client // the follower's
	rpc        sarama.Client // end offsets and drained checks
	topic      string
	partitions int32
	kek        *pii.KEK
	log        *slog.Logger

	mu      sync.Mutex
	keys    map[string]*pii.DataKey // nil: gone (tombstoned, forgotten)
	next    map[int32]int64         // next offset the follower reads, per partition
	caught  map[int32]bool          // partitions read up to the end they had at start
	changed chan struct{}           // closed and replaced after every batch
	done    chan struct{}           // closed when Run returns
	runErr  error
}

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
		keys: map[string]*pii.DataKey{}, next: map[int32]int64{}, caught: map[int32]bool{}, changed: make(chan struct{}), done: make(chan struct{}),
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

func (k *Keyring) handle(_ context.Context, p int32, records []*sarama.ConsumerMessage) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, r := range records {
		uid := string(r.Key)
		if r.Value == nil {
			k.keys[uid] = nil
			continue
		}
		dk, err := k.kek.Open(uid, r.Value)
		if err != nil {
			// Not this KEK's, or corrupt: the profile's data cannot be
			// read. Loud, because it is a misconfiguration.
			k.log.Error("cannot open a sealed data key; the profile's personal data reads as erased", "uid", uid, "partition", p, "offset", r.Offset, "err", err)
			k.keys[uid] = nil
			continue
		}
		k.keys[uid] = dk
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
	k.keys[uid] = dk
}

// Forget drops uid's key: its profile was deleted, and the delete's
// transaction tombstoned the key.
func (k *Keyring) Forget(uid string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys[uid] = nil
}

// DataKey returns uid's data key, or pii.ErrNoKey when it has none: its
// delete tombstoned it, or it never had one (a profile from before
// encryption). On a miss it waits until the follower has read the keys
// partition of uid up to the end it has now (see Keyring). It retries
// while Kafka is unavailable, and fails only when the keyring stopped.
func (k *Keyring) DataKey(uid string) (*pii.DataKey, error) {
	if dk, ok, err := k.cached(uid); ok || err != nil {
		return dk, err
	}
	p := Partition(uid, k.partitions)
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
		case <-k.done:
			return nil, fmt.Errorf("data key of %s: %w", uid, k.stopped())
		}
		if dk, ok, err := k.cached(uid); ok || err != nil {
			return dk, err
		}
	}
	var end int64
	backoff := 100 * time.Millisecond
	for {
		var err error
		if end, err = k.rpc.GetOffset(k.topic, p, sarama.OffsetNewest); err == nil {
			break
		}
		if dk, ok, err := k.cached(uid); ok || err != nil {
			return dk, err
		}
		k.log.Warn("cannot read the end of the keys topic; retrying", "partition", p, "err", err)
		time.Sleep(backoff)
		backoff = min(2*backoff, 2*time.Second)
	}
	for {
		k.mu.Lock()
		dk, ok := k.keys[uid]
		next, changed := k.next[p], k.changed
		k.mu.Unlock()
		if ok {
			if dk == nil {
				return nil, pii.ErrNoKey
			}
			return dk, nil
		}
		gone := next >= end
		if !gone {
			// Only transaction markers (or aborted records) left below the end?
			gone, _ = drained(k.rpc, k.topic, p, next, end)
		}
		if gone {
			// Everything committed below end has been read, and uid has no
			// key: the record the caller decodes has none either. The
			// absence is not cached: a profile from before encryption gets
			// a key with its next event.
			if dk, ok, err := k.cached(uid); ok || err != nil {
				return dk, err
			}
			return nil, pii.ErrNoKey
		}
		select {
		case <-changed:
		case <-time.After(100 * time.Millisecond):
		case <-k.done:
			return nil, fmt.Errorf("data key of %s: %w", uid, k.stopped())
		}
	}
}

// cached returns uid's key if the keyring knows it (ok), pii.ErrNoKey if
// it knows it is gone, or the keyring's failure.
func (k *Keyring) cached(uid string) (*pii.DataKey, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	dk, ok := k.keys[uid]
	switch {
	case ok && dk == nil:
		return nil, true, pii.ErrNoKey
	case ok:
		return dk, true, nil
	}
	select {
	case <-k.done:
		return nil, false, fmt.Errorf("data key of %s: %w", uid, k.runErr)
	default:
	}
	return nil, false, nil
}

func (k *Keyring) stopped() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.runErr
}
