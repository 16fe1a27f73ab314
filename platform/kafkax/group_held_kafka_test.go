package kafkax

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// On real Kafka: member b restarts after a took all of its partitions
// over. Its join says which partitions its store holds, and the plan gives
// it back exactly those, although a holds everything and the sticky plan
// alone would hand b others, which b would then read from their start.
func TestARestartedMemberGetsBackThePartitionsItsStoreHolds(t *testing.T) {
	kcfg := testKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	topic, group := "held-"+run, "held-test-"+run
	if err := createTopics(ctx, kcfg, testTopic{Name: topic, Partitions: 6}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(id string, held map[int32]int64) (*Group, context.CancelFunc) {
		t.Helper()
		client, err := Connect(ctx, kcfg, "held-test-"+id)
		if err != nil {
			t.Fatal(err)
		}
		opts := GroupOptions{
			Group: group, Topics: []string{topic}, Self: Member{ID: id, URL: "http://" + id}, SessionTimeout: 6 * time.Second,
			Start:  func(string, int32) (int64, error) { return sarama.OffsetOldest, nil },
			Handle: func(context.Context, string, int32, []*sarama.ConsumerMessage) error { return nil },
			Held:   func() (map[int32]int64, error) { return held, nil },
		}
		g, err := NewGroup(client, opts, log)
		if err != nil {
			t.Fatal(err)
		}
		gctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = g.Run(gctx, kcfg.GroupConfig("held-test-"+id, opts), kcfg.Brokers)
		}()
		return g, func() {
			stop()
			<-done
			client.Close()
		}
	}
	owns := func(g *Group, want []int32) bool {
		return g.Ready() == nil && slices.Equal(g.Owned(), want)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: %v", what, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}

	// a holds every partition, further along than b in each.
	a, stopA := start("a", map[int32]int64{0: 900, 1: 900, 2: 900, 3: 900, 4: 900, 5: 900})
	defer stopA()
	waitFor("a owns all six partitions", func() bool { return owns(a, []int32{0, 1, 2, 3, 4, 5}) })

	// b held 1, 3 and 4 before its stop; the sticky plan of a new member
	// taking three of a's six moves a contiguous run, 0-2 or 3-5.
	b, stopB := start("b", map[int32]int64{1: 850, 3: 880, 4: 899})
	defer stopB()
	waitFor("b owns the partitions its store holds", func() bool {
		return owns(b, []int32{1, 3, 4}) && owns(a, []int32{0, 2, 5})
	})
}
