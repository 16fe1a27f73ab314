package adapters_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"profiles/command-svc/internal/adapters"
	"profiles/events"
	"profiles/platform/kafkax"
)

// testKafka returns the test broker's config for a fresh one-partition
// event log, or skips (loudly) or fails when there is no broker.
func testKafka(t *testing.T) kafkax.Config {
	t.Helper()
	brokers := os.Getenv("PROFILES_TEST_KAFKA")
	if brokers == "" {
		if os.Getenv("PROFILES_REQUIRE_KAFKA") == "1" {
			t.Fatal("PROFILES_REQUIRE_KAFKA=1 but PROFILES_TEST_KAFKA is not set; run `make test`")
		}
		t.Skip("SKIPPED: no Kafka broker (PROFILES_TEST_KAFKA is not set); `make test` starts one")
	}
	prefix := fmt.Sprintf("txnlog-%06d", rand.IntN(1e6))
	cfg := kafkax.Config{Brokers: strings.Split(brokers, ","), EventsTopic: prefix + ".events", ClaimsTopic: prefix + ".claims", Partitions: 1}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := kafkax.CreateTopics(ctx, cfg, "txnlog-test", []kafkax.TopicSpec{{Name: cfg.EventsTopic, Partitions: 1}, {Name: cfg.ClaimsTopic, Partitions: 1}}); err != nil {
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
