package follower

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/testenv"
	"profiles/query-svc/internal/view"
)

// A standby keeps another instance's partitions warm on real Kafka: it
// reads them into the view without owning them. Release hands a partition
// to the group at once: nothing of it is applied after Release returns,
// while the rest stays warm. Given back, the partition resumes from the
// view's offset and reads only the tail, not the whole partition again.
// A read index (ReadIndex) of a warm partition holds every write that was
// acknowledged before it.
func TestStandbyKeepsPartitionsWarmAndHandsThemOver(t *testing.T) {
	kcfg := kafkax.Config{Brokers: testenv.KafkaBrokers(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := kafkax.Connect(ctx, kcfg, "standby-test")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	snapshots, index, eventLog := "standby-snapshots-"+run, "standby-index-"+run, "standby-events-"+run
	for _, topic := range []string{snapshots, index, eventLog} {
		if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false); err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
			t.Fatal(err)
		}
	}
	pcfg := kcfg.Sarama("standby-test-producer")
	pcfg.Producer.Return.Successes = true
	pcfg.Producer.Partitioner = sarama.NewManualPartitioner
	producer, err := sarama.NewSyncProducer(kcfg.Brokers, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()

	// One uid in each partition.
	uids := map[int32]string{}
	for i := 0; len(uids) < 2; i++ {
		uid := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		if p := kafkax.Partition(uid, 2); uids[p] == "" {
			uids[p] = uid
		}
	}
	write := func(p int32, version int64) {
		t.Helper()
		at := time.Unix(100, 0).UTC()
		value, err := events.EncodeSnapshot(events.Profile{UID: uids[p], Username: fmt.Sprintf("v%d", version), Email: fmt.Sprintf("%d@m.c", p), Version: version, CreatedAt: at, UpdatedAt: at})
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = producer.SendMessage(&sarama.ProducerMessage{Topic: snapshots, Partition: p, Key: sarama.StringEncoder(uids[p]), Value: sarama.ByteEncoder(value),
			Headers: []sarama.RecordHeader{{Key: []byte(events.HeaderVersion), Value: []byte(strconv.FormatInt(version, 10))}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	write(0, 1)
	write(0, 2)
	write(1, 1)

	kek, _ := pii.NewKEK(make([]byte, pii.KeySize))
	codec := pii.NewCodec(kek, keys{})
	store, err := view.Open("view", vfs.NewMem(), 2, codec, view.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &Standby{
		Applier: Applier{Codec: codec, Store: store, SnapshotsTopic: snapshots, IndexTopic: index, EventsTopic: eventLog, Log: log},
		Client:  client, Topics: []string{snapshots, index, eventLog}, Self: "b", Count: 1, Log: log,
		// a owns both partitions; b, this instance, is its standby.
		Assignment: func() kafkax.Assignment { return table("Stable", member("a", 0, 1), member("b")) },
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(sctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	version := func(p int32) int64 {
		prof, err := store.Get(uids[p])
		if errors.Is(err, view.ErrNotFound) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return prof.Version
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("after 30s: %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("both partitions warm", func() bool { return version(0) == 2 && version(1) == 1 })
	if got := s.Warm(); !slices.Equal(got, []int32{0, 1}) {
		t.Fatalf("Warm() = %v, want [0 1]", got)
	}

	// This instance's group takes partition 0 over.
	s.Release([]int32{0})
	offset0, _, err := store.Offset(snapshots, 0)
	if err != nil {
		t.Fatal(err)
	}
	write(0, 3)
	write(1, 2)
	waitFor("partition 1 still warm", func() bool { return version(1) == 2 })
	if got := s.Warm(); !slices.Equal(got, []int32{1}) {
		t.Fatalf("Warm() after Release([0]) = %v, want [1]", got)
	}
	time.Sleep(300 * time.Millisecond) // a late batch of partition 0 would land now
	if v := version(0); v != 2 {
		t.Fatalf("partition 0 was applied after Release: version %d, want 2", v)
	}
	if off, _, _ := store.Offset(snapshots, 0); off != offset0 {
		t.Fatalf("partition 0's offset moved after Release: %d, want %d", off, offset0)
	}
	if keep := s.Keep(); !slices.Contains(keep, 1) || slices.Contains(keep, 0) {
		t.Fatalf("Keep() = %v, want 1 and not 0", keep)
	}

	// A read index of a warm partition holds every write acknowledged
	// before it. A write is acknowledged once a read_committed reader can
	// read it (command-svc waits until a view shows it): once the last
	// stable offset has passed it, ReadIndex returns only once the view
	// has it. The write is transactional, as the projector's are, so that
	// a commit marker lies past the last record and the view's offset never
	// reaches the partition's end: the wait ends on Drained.
	tcfg := kcfg.Sarama("standby-test-txn")
	tcfg.Producer.Return.Successes = true
	tcfg.Producer.Partitioner = sarama.NewManualPartitioner
	tcfg.Producer.Idempotent = true
	tcfg.Producer.RequiredAcks = sarama.WaitForAll
	tcfg.Producer.Transaction.ID = "standby-test-" + run
	tcfg.Net.MaxOpenRequests = 1
	txn, err := sarama.NewSyncProducer(kcfg.Brokers, tcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	for v := int64(3); v <= 5; v++ {
		if err := txn.BeginTxn(); err != nil {
			t.Fatal(err)
		}
		value, _ := events.EncodeSnapshot(events.Profile{UID: uids[1], Username: "txn", Email: "1@m.c", Version: v, CreatedAt: time.Unix(100, 0).UTC(), UpdatedAt: time.Unix(100, 0).UTC()})
		_, offset, err := txn.SendMessage(&sarama.ProducerMessage{Topic: snapshots, Partition: 1, Key: sarama.StringEncoder(uids[1]), Value: sarama.ByteEncoder(value),
			Headers: []sarama.RecordHeader{{Key: []byte(events.HeaderVersion), Value: []byte(strconv.FormatInt(v, 10))}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := txn.CommitTxn(); err != nil {
			t.Fatal(err)
		}
		// The commit markers are written after CommitTxn returns.
		waitFor("the write readable (read_committed)", func() bool {
			lso, err := kafkax.ListOffsets(client, sarama.OffsetNewest, sarama.ReadCommitted, map[string][]int32{snapshots: {1}})
			return err == nil && lso[snapshots][1] > offset
		})
		began := time.Now()
		release, err := s.ReadIndex(ctx, 1)
		t.Logf("version %d: ReadIndex took %v", v, time.Since(began))
		if err != nil {
			t.Fatalf("ReadIndex(1) after version %d: %v", v, err)
		}
		if got := version(1); got != v {
			t.Fatalf("after ReadIndex the view holds version %d of partition 1, want %d", got, v)
		}
		if keep := s.Keep(); !slices.Contains(keep, 1) {
			t.Fatalf("Keep() = %v during a standby read of 1", keep)
		}
		release()
	}
	if _, err := s.ReadIndex(ctx, 0); !errors.Is(err, ErrNotWarm) {
		t.Fatalf("ReadIndex(0), a partition the group owns = %v, want ErrNotWarm", err)
	}

	// The group gives partition 0 back (a owns it again): it is warm again,
	// from the view's offset on.
	read := testutil.ToFloat64(recordsRead)
	s.Release(nil)
	waitFor("partition 0 warm again", func() bool { return version(0) == 3 })
	if n := testutil.ToFloat64(recordsRead) - read; n != 1 {
		t.Fatalf("partition 0 resumed with %v records read, want 1 (the tail)", n)
	}
}
