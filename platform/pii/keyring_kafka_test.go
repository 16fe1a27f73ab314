package pii

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"profiles/platform/kafkax"
	"profiles/platform/testenv"
	"profiles/platform/topology"
)

// A keyring answers a key it has read, says "gone" only for a key whose
// tombstone it has read, and never for a key it has not read: a miss waits
// for the key (which may be written after the miss began), and reports
// ErrKeyUnavailable, not ErrNoKey, when it does not come. Taking an absent
// key for a shredded one made a live profile read back erased after a
// broker pause.
func TestKeyringWaitsForKeysAndOnlyATombstoneMeansGone(t *testing.T) {
	kcfg := topology.Config{Config: kafkax.Config{Brokers: testenv.KafkaBrokers(t)}}
	const partitions = 3
	topic := fmt.Sprintf("pii-keys-%06d", rand.IntN(1e6))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := topology.CreateTopics(ctx, kcfg, "pii-test", []topology.TopicSpec{{Name: topic, Partitions: partitions,
		Required: map[string]string{"cleanup.policy": "compact"}}}); err != nil {
		t.Fatal(err)
	}
	kek, err := NewKEK(bytes.Repeat([]byte{7}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	cfg := kcfg.ProducerSarama("pii-test")
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	producer, err := sarama.NewSyncProducer(kcfg.Brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	put := func(uid string, value []byte) {
		t.Helper()
		var v sarama.Encoder
		if value != nil {
			v = sarama.ByteEncoder(value)
		}
		if _, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Partition: kafkax.Partition(uid, partitions), Key: sarama.StringEncoder(uid), Value: v}); err != nil {
			t.Fatal(err)
		}
	}
	newKey := func(uid string) (*DataKey, []byte) {
		t.Helper()
		dk, raw, err := kek.NewDataKey(uid)
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := kek.Seal(uid, raw)
		if err != nil {
			t.Fatal(err)
		}
		return dk, sealed
	}
	sameKey := func(want, got *DataKey) bool {
		ct, err := want.Encrypt("email", "bob@mail.example")
		if err != nil {
			t.Fatal(err)
		}
		pt, err := got.Decrypt("email", ct)
		return err == nil && pt == "bob@mail.example"
	}

	liveKey, liveSealed := newKey("live")
	put("live", liveSealed)
	_, goneSealed := newKey("gone")
	put("gone", goneSealed)
	put("gone", nil)

	ring, err := NewKeyring(topology.Config{Config: kafkax.Config{Brokers: kcfg.Brokers}, KeysTopic: topic, Partitions: partitions}, "pii-test", kek, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	const missWait = 3 * time.Second
	ring.MissWait = missWait
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = ring.Run(runCtx); close(done) }()
	defer func() { stop(); <-done; ring.Close() }()

	t.Run("a key it read", func(t *testing.T) {
		dk, err := ring.DataKey("live")
		if err != nil || !sameKey(liveKey, dk) {
			t.Fatalf("DataKey(live) = %v, %v; want the key written", dk, err)
		}
	})
	t.Run("a tombstone it read is gone", func(t *testing.T) {
		if _, err := ring.DataKey("gone"); !errors.Is(err, ErrNoKey) {
			t.Fatalf("DataKey(gone) = %v, want ErrNoKey", err)
		}
		if dk, ok := ring.Known("gone"); !ok || dk != nil {
			t.Fatalf("Known(gone) = %v, %v; want a known tombstone", dk, ok)
		}
	})
	t.Run("a key written while the miss waits", func(t *testing.T) {
		lateKey, lateSealed := newKey("late")
		go func() {
			time.Sleep(500 * time.Millisecond)
			put("late", lateSealed)
		}()
		dk, err := ring.DataKey("late")
		if err != nil || !sameKey(lateKey, dk) {
			t.Fatalf("DataKey(late) = %v, %v; want the key written after the miss began", dk, err)
		}
	})
	t.Run("a key never written is unavailable, not gone", func(t *testing.T) {
		start := time.Now()
		_, err := ring.DataKey("never")
		if !errors.Is(err, ErrKeyUnavailable) || errors.Is(err, ErrNoKey) {
			t.Fatalf("DataKey(never) = %v; want ErrKeyUnavailable and not ErrNoKey", err)
		}
		if waited := time.Since(start); waited < missWait-100*time.Millisecond {
			t.Fatalf("DataKey(never) gave up after %v, before its MissWait of %v", waited, missWait)
		}
		if _, ok := ring.Known("never"); ok {
			t.Fatal("an absent key became known")
		}
	})

	// A miss reads the partition itself instead of waiting for the
	// follower: a keyring whose follower never runs still finds a
	// committed key, sees a tombstone, and skips an aborted one.
	t.Run("a miss reads the partition directly", func(t *testing.T) {
		tcfg := kcfg.ProducerSarama("pii-test")
		tcfg.Producer.Transaction.ID = topic + "-txn"
		tcfg.Producer.Partitioner = sarama.NewManualPartitioner
		txp, err := sarama.NewSyncProducer(kcfg.Brokers, tcfg)
		if err != nil {
			t.Fatal(err)
		}
		defer txp.Close()
		inTxn := func(commit bool, uid string, value []byte) {
			t.Helper()
			var v sarama.Encoder
			if value != nil {
				v = sarama.ByteEncoder(value)
			}
			sendInTxn(t, txp, &sarama.ProducerMessage{Topic: topic, Partition: kafkax.Partition(uid, partitions), Key: sarama.StringEncoder(uid), Value: v}, commit)
		}
		directKey, directSealed := newKey("direct")
		inTxn(true, "direct", directSealed)
		_, shreddedSealed := newKey("shredded")
		inTxn(true, "shredded", shreddedSealed)
		inTxn(true, "shredded", nil)
		_, abortedSealed := newKey("aborted")
		inTxn(false, "aborted", abortedSealed)

		idle, err := NewKeyring(topology.Config{Config: kafkax.Config{Brokers: kcfg.Brokers}, KeysTopic: topic, Partitions: partitions}, "pii-test-idle", kek, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close()
		idle.MissWait = time.Second
		for p := range int32(partitions) {
			idle.caught[p] = true // as if read at start, when the topic was empty
		}
		if dk, err := idle.DataKey("direct"); err != nil || !sameKey(directKey, dk) {
			t.Fatalf("DataKey(direct) = %v, %v; want the committed key", dk, err)
		}
		if _, err := idle.DataKey("shredded"); !errors.Is(err, ErrNoKey) {
			t.Fatalf("DataKey(shredded) = %v, want ErrNoKey", err)
		}
		if _, err := idle.DataKey("aborted"); !errors.Is(err, ErrKeyUnavailable) {
			t.Fatalf("DataKey(aborted) = %v, want ErrKeyUnavailable (its only record was aborted)", err)
		}
	})

	// The keys of one transaction land together, and the records that
	// need them arrive together: misses of one partition share one direct
	// read, and what it found answers the next ones, so a batch of new
	// profiles costs the broker one Fetch, not one per profile.
	t.Run("misses of one partition share a direct read", func(t *testing.T) {
		var uids []string
		for i := 0; len(uids) < 16; i++ {
			if uid := fmt.Sprintf("batch-%d", i); kafkax.Partition(uid, partitions) == 1 {
				uids = append(uids, uid)
			}
		}
		want := map[string]*DataKey{}
		for _, uid := range uids {
			dk, sealed := newKey(uid)
			want[uid] = dk
			put(uid, sealed)
		}
		shared, err := NewKeyring(topology.Config{Config: kafkax.Config{Brokers: kcfg.Brokers}, KeysTopic: topic, Partitions: partitions}, "pii-test-shared", kek, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer shared.Close()
		shared.MissWait = 5 * time.Second
		for p := range int32(partitions) {
			shared.caught[p] = true // as if read at start, when the topic was empty
		}
		before := testutil.ToFloat64(keyDirectReads)
		errs := make(chan error, len(uids))
		for _, uid := range uids {
			go func() {
				dk, err := shared.DataKey(uid)
				if err == nil && !sameKey(want[uid], dk) {
					err = fmt.Errorf("DataKey(%s) is another key", uid)
				}
				errs <- err
			}()
		}
		for range uids {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if n := testutil.ToFloat64(keyDirectReads) - before; n != 1 {
			t.Fatalf("%d misses of one partition made %v direct reads, want 1", len(uids), n)
		}
		// A key written after that read is past the read-ahead: the next
		// miss reads on from there, and finds it.
		lateKey, lateSealed := newKey(uids[0] + "-late")
		put(uids[0]+"-late", lateSealed)
		if dk, err := shared.DataKey(uids[0] + "-late"); err != nil || !sameKey(lateKey, dk) {
			t.Fatalf("DataKey(%s-late) = %v, %v; want the key written after the read-ahead", uids[0], dk, err)
		}
	})

	// A lazy follower (command-svc's) fetches about once a second; a miss
	// does not wait for it but reads the partition itself, at once.
	t.Run("a lazy keyring answers a miss without waiting for its follower", func(t *testing.T) {
		lazy, err := NewKeyring(topology.Config{Config: kafkax.Config{Brokers: kcfg.Brokers}, KeysTopic: topic, Partitions: partitions}, "pii-test-lazy", kek, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		lazy.Lazy = true
		lazy.MissWait = 5 * time.Second
		lazyCtx, stopLazy := context.WithCancel(ctx)
		lazyDone := make(chan struct{})
		go func() { _ = lazy.Run(lazyCtx); close(lazyDone) }()
		defer func() { stopLazy(); <-lazyDone; lazy.Close() }()
		if dk, err := lazy.DataKey("live"); err != nil || !sameKey(liveKey, dk) {
			t.Fatalf("DataKey(live) = %v, %v", dk, err)
		}
		freshKey, freshSealed := newKey("fresh")
		put("fresh", freshSealed)
		start := time.Now()
		dk, err := lazy.DataKey("fresh")
		if err != nil || !sameKey(freshKey, dk) {
			t.Fatalf("DataKey(fresh) = %v, %v; want the key just written", dk, err)
		}
		if took := time.Since(start); took > 500*time.Millisecond {
			t.Fatalf("a lazy keyring took %v to answer a miss; it should read the partition at once", took)
		}
	})
}

// sendInTxn writes msg in a transaction of its own of producer (a
// transactional sync producer), committed or aborted.
func sendInTxn(t *testing.T, producer sarama.SyncProducer, msg *sarama.ProducerMessage, commit bool) {
	t.Helper()
	err := producer.BeginTxn()
	if err == nil {
		_, _, err = producer.SendMessage(msg)
	}
	switch {
	case err == nil && commit:
		err = producer.CommitTxn()
	case err == nil:
		err = producer.AbortTxn()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// A keyring with a store resumes the keys topic at its stored offsets: a
// restart reads only the records written while it was down, and still
// answers every key and tombstone, those it read before the restart too.
func TestKeyringWithAStoreReadsOnlyTheTailAtRestart(t *testing.T) {
	kcfg := topology.Config{Config: kafkax.Config{Brokers: testenv.KafkaBrokers(t)}}
	const partitions = 3
	topic := fmt.Sprintf("pii-keys-%06d", rand.IntN(1e6))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := topology.CreateTopics(ctx, kcfg, "pii-test", []topology.TopicSpec{{Name: topic, Partitions: partitions,
		Required: map[string]string{"cleanup.policy": "compact"}}}); err != nil {
		t.Fatal(err)
	}
	kek, err := NewKEK(bytes.Repeat([]byte{7}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	cfg := kcfg.ProducerSarama("pii-test")
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	producer, err := sarama.NewSyncProducer(kcfg.Brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	keys := map[string]*DataKey{}
	put := func(uid string, live bool) {
		t.Helper()
		var v sarama.Encoder
		if live {
			dk, raw, err := kek.NewDataKey(uid)
			if err != nil {
				t.Fatal(err)
			}
			sealed, err := kek.Seal(uid, raw)
			if err != nil {
				t.Fatal(err)
			}
			keys[uid], v = dk, sarama.ByteEncoder(sealed)
		} else {
			delete(keys, uid)
		}
		if _, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Partition: kafkax.Partition(uid, partitions), Key: sarama.StringEncoder(uid), Value: v}); err != nil {
			t.Fatal(err)
		}
	}
	fs := vfs.NewMem()
	// run starts a keyring on the store in fs, waits until it has read
	// every partition, checks every key, and stops it; it returns how
	// many records it read.
	run := func(gone ...string) float64 {
		t.Helper()
		ring, err := NewKeyring(topology.Config{Config: kafkax.Config{Brokers: kcfg.Brokers}, KeysTopic: topic, Partitions: partitions}, "pii-test", kek, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if err := ring.OpenStore(KeyStoreOptions{Dir: "keys", FS: fs, Origin: "test " + topic}); err != nil {
			t.Fatal(err)
		}
		before := testutil.ToFloat64(keyRecordsRead)
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { _ = ring.Run(runCtx); close(done) }()
		defer func() { stop(); <-done; ring.Close() }()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			ring.mu.Lock()
			n := len(ring.caught)
			ring.mu.Unlock()
			if n == partitions {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the keyring did not read its partitions to their ends")
			}
		}
		for uid, want := range keys {
			dk, ok := ring.Known(uid)
			if !ok || dk == nil {
				t.Fatalf("Known(%s) = %v, %v; want its key", uid, dk, ok)
			}
			ct, err := want.Encrypt("email", "bob@mail.example")
			if err != nil {
				t.Fatal(err)
			}
			if pt, err := dk.Decrypt("email", ct); err != nil || pt != "bob@mail.example" {
				t.Fatalf("the key of %s is another: %q, %v", uid, pt, err)
			}
		}
		for _, uid := range gone {
			if dk, ok := ring.Known(uid); !ok || dk != nil {
				t.Fatalf("Known(%s) = %v, %v; want a known tombstone", uid, dk, ok)
			}
		}
		return testutil.ToFloat64(keyRecordsRead) - before
	}

	for i := range 20 {
		put(fmt.Sprintf("first-%d", i), true)
	}
	if n := run(); n != 20 {
		t.Fatalf("the first start read %v records, want 20", n)
	}
	put("first-3", false)
	put("later", true)
	if n := run("first-3"); n != 2 {
		t.Fatalf("the restart read %v records, want the 2 written while it was down", n)
	}
	if n := run("first-3"); n != 0 {
		t.Fatalf("a restart with nothing new read %v records", n)
	}
}
