package adapters_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"profiles/command-svc/internal/adapters"
	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/testenv"
	"profiles/platform/topology"
)

// testKafka returns the test broker's config for a fresh one-partition
// event log, or skips (loudly) or fails when there is no broker.
func testKafka(t *testing.T) topology.Config {
	t.Helper()
	prefix := fmt.Sprintf("txnlog-%06d", rand.IntN(1e6))
	cfg := topology.Config{Config: kafkax.Config{Brokers: testenv.KafkaBrokers(t)}, EventsTopic: prefix + ".events", ClaimsTopic: prefix + ".claims",
		DeadLetterTopic: prefix + ".dlq", ControlTopic: prefix + ".control", Partitions: 1}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := topology.CreateTopics(ctx, cfg, "txnlog-test", cfg.BaseSpecs()); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// When a second instance starts the partition's producer, the first one's
// next append is refused with ErrNotWriter, and the first one is told, so
// that command-svc can rejoin its group (TxnEventLog.Fenced).
func TestAFencedWriterRefusesAppendsAndIsTold(t *testing.T) {
	cfg := testKafka(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fenced := make(chan int32, 4)
	newLog := func(id string) *adapters.TxnEventLog {
		return &adapters.TxnEventLog{Config: cfg, ClientID: id, TxnPrefix: cfg.EventsTopic, Source: "/test/" + id, Log: log,
			Fenced: func(p int32) { fenced <- p }}
	}
	old, current := newLog("old"), newLog("new")
	defer old.Close()
	defer current.Close()
	ctx := context.Background()
	created := events.New("e1", events.Profile{}, "u1", events.ProfileCreated{Username: "u", Email: "u@mail.com"}, time.Now())

	old.Assigned([]int32{0})
	if err := old.Append(ctx, created); err != nil {
		t.Fatalf("append by the only writer: %v", err)
	}
	current.Assigned([]int32{0}) // fences old
	changed := events.New("e2", events.Profile{Version: 1}, "u1", events.UsernameChanged{Username: "v"}, time.Now())
	if err := old.Append(ctx, changed); !errors.Is(err, adapters.ErrNotWriter) {
		t.Fatalf("append by the fenced writer = %v; want ErrNotWriter", err)
	}
	select {
	case p := <-fenced:
		if p != 0 {
			t.Fatalf("Fenced(%d); want partition 0", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Fenced was not called")
	}
	if err := old.Append(ctx, changed); !errors.Is(err, adapters.ErrNotWriter) {
		t.Fatalf("second append by the fenced writer = %v; want ErrNotWriter", err)
	}
	if err := current.Append(ctx, changed); err != nil {
		t.Fatalf("append by the new writer: %v", err)
	}
	select {
	case p := <-fenced:
		t.Fatalf("Fenced(%d) called again", p)
	default:
	}
}

// Appends that arrive while a transaction runs share the next one (group
// commit): 200 concurrent appends to one partition all succeed, each is in
// the log once, and far fewer than 200 transactions were needed (each
// transaction leaves one commit marker in the partition).
func TestConcurrentAppendsShareTransactions(t *testing.T) {
	cfg := testKafka(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	w := &adapters.TxnEventLog{Config: cfg, ClientID: "batch", TxnPrefix: cfg.EventsTopic, Source: "/test/batch", Log: log}
	defer w.Close()
	w.Assigned([]int32{0})

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			uid := fmt.Sprintf("u%03d", i)
			e := events.New(uid+"-e1", events.Profile{}, uid, events.ProfileCreated{Username: uid, Email: uid + "@mail.com"}, time.Now())
			errs <- w.Append(context.Background(), e)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("append: %v", err)
		}
	}

	seen, end := keysInLog(t, cfg)
	for i := range n {
		if uid := fmt.Sprintf("u%03d", i); seen[uid] != 1 {
			t.Errorf("%s is in the log %d times", uid, seen[uid])
		}
	}
	txns := end - n
	t.Logf("%d appends in %d transactions", n, txns)
	if txns >= n/2 {
		t.Errorf("%d appends took %d transactions; concurrent appends should share them", n, txns)
	}
}

// An append that gave up before its transaction began to commit is never
// written, even when it shared the transaction with appends that went on:
// with an append timeout shorter than a transaction, every 200 appends of
// this test end as written (nil), not written (ErrAppendTimeout), or
// unknown (the commit had begun), and the log agrees with the first two.
func TestAppendsThatGaveUpAreNotWritten(t *testing.T) {
	cfg := testKafka(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	w := &adapters.TxnEventLog{Config: cfg, ClientID: "withdraw", TxnPrefix: cfg.EventsTopic, Source: "/test/withdraw", Log: log,
		AppendTimeout: 40 * time.Millisecond}
	defer w.Close()
	w.Assigned([]int32{0})

	const n = 200
	outcome := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i%20) * time.Millisecond) // spread them over several transactions
			uid := fmt.Sprintf("w%03d", i)
			e := events.New(uid+"-e1", events.Profile{}, uid, events.ProfileCreated{Username: uid, Email: uid + "@mail.com"}, time.Now())
			outcome[i] = w.Append(context.Background(), e)
		}()
	}
	wg.Wait()
	w.Close()

	seen, _ := keysInLog(t, cfg)
	written, notWritten, unknown := 0, 0, 0
	for i, err := range outcome {
		uid := fmt.Sprintf("w%03d", i)
		switch {
		case err == nil:
			written++
			if seen[uid] != 1 {
				t.Errorf("%s was acknowledged but is in the log %d times", uid, seen[uid])
			}
		case errors.Is(err, adapters.ErrAppendTimeout) && strings.Contains(err.Error(), "outcome is not known"):
			unknown++
			if seen[uid] > 1 {
				t.Errorf("%s is in the log %d times", uid, seen[uid])
			}
		case errors.Is(err, adapters.ErrAppendTimeout):
			notWritten++
			if seen[uid] != 0 {
				t.Errorf("%s was answered %q but is in the log", uid, err)
			}
		default:
			t.Errorf("%s: %v", uid, err)
		}
	}
	t.Logf("%d written, %d not written, %d unknown", written, notWritten, unknown)
}

// keysInLog reads the committed records of the one-partition event log,
// and returns how often each key occurs, and the partition's end offset
// (records plus transaction markers).
func keysInLog(t *testing.T, cfg topology.Config) (map[string]int, int64) {
	t.Helper()
	client, err := topology.Connect(context.Background(), cfg, "txnlog-test")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	end, err := client.GetOffset(cfg.EventsTopic, 0, sarama.OffsetNewest)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	err = kafkax.Read(context.Background(), client, kafkax.ReadOptions{
		Topic: cfg.EventsTopic, Partitions: []int32{0}, StopAtEnd: true,
		Start: func(int32) (int64, error) { return sarama.OffsetOldest, nil },
		Handle: func(_ context.Context, _ int32, recs []*sarama.ConsumerMessage) error {
			for _, r := range recs {
				seen[string(r.Key)]++
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return seen, end
}
