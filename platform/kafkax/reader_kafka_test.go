package kafkax

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/IBM/sarama"
	gometrics "github.com/rcrowley/go-metrics"

	"profiles/platform/testenv"
)

// testKafka returns the test broker's config, or skips (loudly) or fails
// the test when there is none.
func testKafka(t *testing.T) Config {
	t.Helper()
	return Config{Brokers: testenv.KafkaBrokers(t)}
}

// testTopic is a topic a test creates: its name, partition count and
// configs.
type testTopic struct {
	Name       string
	Partitions int32
	Configs    map[string]string
}

// createTopics creates the topics with one replica (an existing one is
// kept) and waits until every partition has a leader or ctx ends.
func createTopics(ctx context.Context, c Config, topics ...testTopic) error {
	admin, err := NewAdmin(ctx, c, "kafkax-test")
	if err != nil {
		return err
	}
	defer admin.Close()
	for _, tt := range topics {
		configs := map[string]*string{}
		for k, v := range tt.Configs {
			configs[k] = &v
		}
		err := admin.CreateTopic(tt.Name, &sarama.TopicDetail{NumPartitions: tt.Partitions, ReplicationFactor: 1, ConfigEntries: configs}, false)
		if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", tt.Name, err)
		}
		for !hasLeaders(admin, tt.Name, tt.Partitions) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("topic %s: no leaders: %w", tt.Name, ctx.Err())
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	return nil
}

// hasLeaders reports whether topic has n partitions, each with a leader.
func hasLeaders(admin sarama.ClusterAdmin, topic string, n int32) bool {
	metas, err := admin.DescribeTopics([]string{topic})
	if err != nil || len(metas) != 1 || !errors.Is(metas[0].Err, sarama.ErrNoError) || int32(len(metas[0].Partitions)) != n {
		return false
	}
	for _, pm := range metas[0].Partitions {
		if !errors.Is(pm.Err, sarama.ErrNoError) {
			return false
		}
	}
	return true
}

// Read with StopAtEnd on a transactional topic, with a slow handler on
// many partitions (so that sarama starves some partitions while others are
// handled): it must hand over every committed record, no aborted one, and
// stop. Before the drained check, an idle timer alone ended partitions
// early under exactly this load.
func TestReadStopsAtTheEndOfATransactionalTopicAndMissesNothing(t *testing.T) {
	kcfg := testKafka(t)
	const partitions, perPartition = 4, 60
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Committed transactions of one record each (a marker after every
	// record), plus an aborted transaction at the end of every partition.
	topic, producer := newTestTopic(ctx, t, kcfg, "kafkax-read", partitions, true)
	send := func(p int32, value string, commit bool) {
		sendInTxn(t, producer, &sarama.ProducerMessage{Topic: topic, Partition: p, Value: sarama.StringEncoder(value)}, commit)
	}
	for i := range perPartition {
		for p := range int32(partitions) {
			send(p, fmt.Sprintf("%d-%d", p, i), true)
		}
	}
	for p := range int32(partitions) {
		send(p, "aborted", false)
	}

	client, err := sarama.NewClient(kcfg.Brokers, kcfg.Sarama("kafkax-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var mu sync.Mutex
	got := map[string]int{}
	caught := map[int32]bool{}
	err = Read(ctx, client, ReadOptions{
		Topic: topic, StopAtEnd: true, MaxBatch: 10,
		Handle: func(_ context.Context, p int32, recs []*sarama.ConsumerMessage) error {
			time.Sleep(300 * time.Millisecond) // longer than the idle timer
			mu.Lock()
			defer mu.Unlock()
			for _, r := range recs {
				got[string(r.Value)]++
			}
			return nil
		},
		CaughtUp: func(p int32) { mu.Lock(); caught[p] = true; mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(caught) != partitions {
		t.Errorf("%d partitions caught up, want %d", len(caught), partitions)
	}
	if got["aborted"] != 0 {
		t.Errorf("read %d aborted records", got["aborted"])
	}
	for i := range perPartition {
		for p := range partitions {
			if n := got[fmt.Sprintf("%d-%d", p, i)]; n != 1 {
				t.Fatalf("record %d-%d read %d times", p, i, n)
			}
		}
	}
}

// newTestTopic creates a topic named prefix-<random number> of partitions
// partitions, and returns it with a producer whose messages name their
// partition (transactional when txn), closed when the test ends.
func newTestTopic(ctx context.Context, t *testing.T, kcfg Config, prefix string, partitions int32, txn bool) (string, sarama.SyncProducer) {
	t.Helper()
	topic := fmt.Sprintf("%s-%06d", prefix, rand.IntN(1e6))
	if err := createTopics(ctx, kcfg, testTopic{Name: topic, Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	cfg := kcfg.ProducerSarama("kafkax-test")
	if txn {
		cfg.Producer.Transaction.ID = topic + "-txn"
	}
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	producer, err := sarama.NewSyncProducer(kcfg.Brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { producer.Close() })
	return topic, producer
}

// sendInTxn writes msg in a transaction of its own of producer (a
// transactional sync producer), committed or aborted.
func sendInTxn(t *testing.T, producer sarama.SyncProducer, msg *sarama.ProducerMessage, commit bool) {
	t.Helper()
	if err := producer.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := producer.SendMessage(msg); err != nil {
		t.Fatal(err)
	}
	var err error
	if commit {
		err = producer.CommitTxn()
	} else {
		err = producer.AbortTxn()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// A follower's fetches do not hold up the client's other requests: Read
// fetches over connections of its own. A fetch that finds nothing waits
// at the broker for Consumer.MaxWaitTime (3 s here, to make the effect
// unmistakable), and a broker answers one connection's requests in order,
// so on the follower's connections an offset lookup waited up to that
// long, and so did a second Read's catch-up. And a Read with StopAtEnd
// returns as its last partition catches up, without waiting for its
// fetches in flight to return.
func TestReadFetchesDoNotHoldUpTheClient(t *testing.T) {
	c := testKafka(t)
	ctx := context.Background()
	topic := fmt.Sprintf("kafkax-test-fetches-%d", time.Now().UnixNano())
	if err := createTopics(ctx, c, testTopic{Name: topic, Partitions: 6}, testTopic{Name: topic + "-followed", Partitions: 6}); err != nil {
		t.Fatal(err)
	}
	sc := c.Sarama("kafkax-test")
	sc.Consumer.MaxWaitTime = 3 * time.Second
	client, err := sarama.NewClient(c.Brokers, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	pcfg := c.ProducerSarama("kafkax-test")
	pcfg.Producer.Partitioner = sarama.NewManualPartitioner
	prod, err := sarama.NewSyncProducer(c.Brokers, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for i := range 60 { // ten records per partition
		if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Partition: int32(i % 6), Value: sarama.StringEncoder("v")}); err != nil {
			t.Fatal(err)
		}
	}
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	followed := make(chan error, 1)
	go func() {
		followed <- Read(fctx, client, ReadOptions{Topic: topic + "-followed", Handle: func(context.Context, int32, []*sarama.ConsumerMessage) error { return nil }})
	}()
	time.Sleep(time.Second) // the follower's fetches are waiting at the broker
	for range 3 {
		start := time.Now()
		if _, err := client.GetOffset(topic, 0, sarama.OffsetNewest); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("an offset lookup took %v while a follower read on the same client", d)
		}
	}
	for range 2 {
		start := time.Now()
		var mu sync.Mutex
		var caught time.Duration
		n := 0
		err := Read(ctx, client, ReadOptions{Topic: topic, StopAtEnd: true,
			Start: func(int32) (int64, error) { return 5, nil },
			Handle: func(_ context.Context, _ int32, rs []*sarama.ConsumerMessage) error {
				mu.Lock()
				defer mu.Unlock()
				n += len(rs)
				return nil
			},
			CaughtUp: func(int32) { mu.Lock(); caught = time.Since(start); mu.Unlock() }})
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 2*time.Second || took-caught > time.Second {
			t.Errorf("a Read of a six-partition tail took %v, its last partition caught up after %v", took, caught)
		}
		if n != 30 {
			t.Errorf("read %d records of the tail, want 30", n)
		}
	}
	stop()
	if err := <-followed; err != nil {
		t.Fatalf("the follower: %v", err)
	}
}

// A follower that has caught up holds none of the records it handed over.
// A record's value is a slice of its whole fetch response (up to
// Fetch.MaxBytes, 8 MiB), so one record kept alive keeps the response; a
// batch buffer reused without clearing kept the last largest batch of
// every partition, tens of MiB of a caught-up query-svc's heap.
func TestAFollowerKeepsNoRecordItHandedOver(t *testing.T) {
	kcfg := testKafka(t)
	const partitions, perPartition = 2, 500
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topic, producer := newTestTopic(ctx, t, kcfg, "kafkax-keep", partitions, false)
	var msgs []*sarama.ProducerMessage
	for i := range perPartition {
		for p := range int32(partitions) {
			msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Partition: p, Value: sarama.StringEncoder(fmt.Sprintf("%d-%d", p, i))})
		}
	}
	if err := producer.SendMessages(msgs); err != nil {
		t.Fatal(err)
	}

	client, err := sarama.NewClient(kcfg.Brokers, kcfg.Sarama("kafkax-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var mu sync.Mutex
	var handed []weak.Pointer[sarama.ConsumerMessage]
	caught := make(chan int32, partitions)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Read(rctx, client, ReadOptions{
			Topic: topic, MaxBatch: 1000,
			Handle: func(_ context.Context, _ int32, recs []*sarama.ConsumerMessage) error {
				mu.Lock()
				defer mu.Unlock()
				for _, r := range recs {
					handed = append(handed, weak.Make(r))
				}
				return nil
			},
			CaughtUp: func(p int32) { caught <- p },
		})
	}()
	for range partitions {
		select {
		case <-caught:
		case <-ctx.Done():
			t.Fatal("not caught up")
		}
	}
	// The follower runs on, caught up; nothing it handed over is needed.
	var live int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		runtime.GC()
		mu.Lock()
		live = 0
		for _, w := range handed {
			if w.Value() != nil {
				live++
			}
		}
		n := len(handed)
		mu.Unlock()
		if n != partitions*perPartition {
			t.Fatalf("%d records handed over, want %d", n, partitions*perPartition)
		}
		if live == 0 || time.Now().After(deadline) {
			break
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if live != 0 {
		t.Errorf("%d of the %d records handed over are still alive while the follower waits for more", live, partitions*perPartition)
	}
}

// Reads that share a Fetcher fetch together: one Fetch request per broker
// carries the partitions of every topic, so while nothing is written the
// broker holds one fetch where Reads of their own hold one each, and each
// Read still gets its own topic's records, and only those. Counted with
// sarama's request meter, which is off in the services (see init).
func TestReadsThatShareAFetcherFetchTogether(t *testing.T) {
	kcfg := testKafka(t)
	gometrics.UseNilMetrics = false
	defer func() { gometrics.UseNilMetrics = true }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var topics []string
	for _, prefix := range []string{"kafkax-fetcher-a", "kafkax-fetcher-b", "kafkax-fetcher-c"} {
		topic, producer := newTestTopic(ctx, t, kcfg, prefix, 2, false)
		for i := range 20 {
			if _, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Partition: int32(i % 2), Value: sarama.StringEncoder(topic)}); err != nil {
				t.Fatal(err)
			}
		}
		topics = append(topics, topic)
	}
	// fetches runs a Read of every topic, shared says whether through one
	// Fetcher, and returns the requests sent while they wait, caught up,
	// for idle (a fetch that finds nothing returns after MaxWaitTime).
	const wait, idle = 250 * time.Millisecond, 3 * time.Second
	fetches := func(shared bool) int64 {
		sc := kcfg.Sarama("kafkax-test")
		sc.MetricRegistry = gometrics.NewRegistry()
		sc.Consumer.MaxWaitTime = wait
		sc.Metadata.RefreshFrequency = time.Hour
		client, err := sarama.NewClient(kcfg.Brokers, sc)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		var fetcher *Fetcher
		if shared {
			if fetcher, err = NewFetcher(client); err != nil {
				t.Fatal(err)
			}
			defer fetcher.Close()
		}
		rctx, stop := context.WithCancel(ctx)
		defer stop()
		var wg sync.WaitGroup
		caught := make(chan int32, 2*len(topics))
		for _, topic := range topics {
			wg.Go(func() {
				n := 0
				err := Read(rctx, client, ReadOptions{Topic: topic, Fetcher: fetcher,
					Handle: func(_ context.Context, _ int32, recs []*sarama.ConsumerMessage) error {
						for _, r := range recs {
							if string(r.Value) != topic {
								return fmt.Errorf("a record of %s read from %s", r.Value, topic)
							}
						}
						n += len(recs)
						return nil
					},
					CaughtUp: func(p int32) { caught <- p }})
				if err != nil || n != 20 {
					t.Errorf("%s (shared %v): read %d records of 20, error %v", topic, shared, n, err)
				}
			})
		}
		for range 2 * len(topics) {
			select {
			case <-caught:
			case <-ctx.Done():
				t.Fatal("not caught up")
			}
		}
		requests := gometrics.GetOrRegisterMeter("request-rate", sc.MetricRegistry)
		before := requests.Count()
		time.Sleep(idle)
		n := requests.Count() - before
		stop()
		wg.Wait()
		return n
	}
	own, shared := fetches(false), fetches(true)
	t.Logf("requests in %v of waiting: %d with a consumer per Read, %d with one Fetcher", idle, own, shared)
	perWait := int64(idle / wait)
	if shared > perWait+2 || own < 2*perWait {
		t.Errorf("%d requests in %v with one Fetcher (want about %d: one fetch per %v), %d with a consumer per Read (want about %d)",
			shared, idle, perWait, wait, own, int64(len(topics))*perWait)
	}
}
