package kafkax

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	topic, group := groupTopic(ctx, t, kcfg, "held", 6)
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
		g, stop := runGroup(ctx, t, kcfg, client, opts, log)
		return g, func() {
			stop()
			client.Close()
		}
	}
	owns := func(g *Group, want []int32) bool {
		return g.Ready() == nil && slices.Equal(g.Owned(), want)
	}
	waitFor := func(what string, ok func() bool) { t.Helper(); waitUntil(ctx, t, what, ok) }

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

// On real Kafka: a static member whose instance id the coordinator handed
// to another member id (here a second client joins with it and goes away
// without leaving, as a static member does) is refused FENCED_INSTANCE_ID
// at every join with its own member id. Group.Run then joins with a new
// client, without a member id, which takes the instance id over at once;
// sarama alone joins with the old member id until the coordinator drops
// the other one, a session timeout (10 s here) later, or, in the fault suite's
// scenario 14 (a run of 2026-12-07), a join answered while the
// coordinator moved left a member id that a rebalance waited for, and the
// member was refused for over a minute.
func TestAFencedStaticMemberJoinsAgain(t *testing.T) {
	kcfg := testKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topic, group := groupTopic(ctx, t, kcfg, "fenced", 2)
	client, err := Connect(ctx, kcfg, "fenced-test")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	opts := GroupOptions{
		Group: group, Topics: []string{topic}, Self: Member{ID: "a", URL: "http://a"}, InstanceID: "a", SessionTimeout: 10 * time.Second,
		Start:  func(string, int32) (int64, error) { return sarama.OffsetOldest, nil },
		Handle: func(context.Context, string, int32, []*sarama.ConsumerMessage) error { return nil },
	}
	logged := &lockedBuffer{}
	g, stop := runGroup(ctx, t, kcfg, client, opts, slog.New(slog.NewTextHandler(logged, nil)))
	defer stop()
	waitFor := func(what string, ok func() bool) { t.Helper(); waitUntil(ctx, t, what, ok) }
	// In a session of the group (not answering, detached, for what it read
	// before), with both partitions.
	owns := func() bool {
		var got []int32
		return g.InSession(func(owned []int32) { got = owned }) && slices.Equal(got, []int32{0, 1})
	}
	waitFor("a owns both partitions", owns)

	// Another client joins with a's instance id and a member id of its
	// own, and goes away without leaving (a static member does not).
	other, err := sarama.NewConsumerGroup(kcfg.Brokers, group, kcfg.GroupConfig("fenced-test-other", opts))
	if err != nil {
		t.Fatal(err)
	}
	octx, ocancel := context.WithTimeout(ctx, 20*time.Second)
	joined := make(chan struct{})
	go func() {
		_ = other.Consume(octx, []string{topic}, setupOnly{joined})
	}()
	select {
	case <-joined:
	case <-octx.Done():
		t.Fatal("the other client never joined with a's instance id")
	}
	ocancel()
	_ = other.Close()
	const fenced = "has registered with a different member.id"
	waitFor("a was fenced", func() bool { return strings.Contains(logged.String(), fenced) })
	fencedAt := time.Now()

	// Member b joins: the rebalance waits, up to the rebalance timeout
	// (sarama's 60 s), for every member to join again, the other client's
	// member id too, which never will. a's joins with its own member id
	// are refused all that time; a join without one takes the instance id
	// over, and the rebalance goes on.
	bClient, err := Connect(ctx, kcfg, "fenced-test-b")
	if err != nil {
		t.Fatal(err)
	}
	defer bClient.Close()
	bOpts := opts
	bOpts.Self, bOpts.InstanceID = Member{ID: "b", URL: "http://b"}, "b"
	b, stopB := runGroup(ctx, t, kcfg, bClient, bOpts, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer stopB()
	inSession := func(g *Group) (owned []int32, ok bool) {
		ok = g.InSession(func(o []int32) { owned = o })
		return owned, ok
	}
	// Within 5 s of the fence: well before the other member id's session
	// (10 s) could have run out.
	deadline := fencedAt.Add(5 * time.Second)
	for {
		ao, aok := inSession(g)
		bo, bok := inSession(b)
		if aok && bok && len(ao) == 1 && len(bo) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after a was fenced: a in a session %v with %v, b %v with %v; want one partition each", aok, ao, bok, bo)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lockedBuffer is an io.Writer that many goroutines may write to.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// setupOnly is a sarama consumer group handler that reports its first
// session's setup and consumes nothing.
type setupOnly struct{ joined chan struct{} }

func (h setupOnly) Setup(sarama.ConsumerGroupSession) error {
	select {
	case <-h.joined:
	default:
		close(h.joined)
	}
	return nil
}
func (setupOnly) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (setupOnly) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	<-s.Context().Done()
	return nil
}

// groupTopic creates a topic of its own for a group test, and names the
// test's group.
func groupTopic(ctx context.Context, t *testing.T, kcfg Config, name string, partitions int32) (topic, group string) {
	t.Helper()
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	topic, group = name+"-"+run, name+"-test-"+run
	if err := createTopics(ctx, kcfg, testTopic{Name: topic, Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	return topic, group
}

// runGroup makes a Group of opts on client and runs it until the function
// it returns is called, which waits for Run to return.
func runGroup(ctx context.Context, t *testing.T, kcfg Config, client sarama.Client, opts GroupOptions, log *slog.Logger) (*Group, func()) {
	t.Helper()
	g, err := NewGroup(client, opts, log)
	if err != nil {
		t.Fatal(err)
	}
	gctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Run(gctx, kcfg.GroupConfig(opts.Self.ID, opts), kcfg.Brokers)
	}()
	return g, func() { stop(); <-done }
}

// waitUntil polls ok every 100 ms until it holds, and fails the test with
// what if ctx ends first.
func waitUntil(ctx context.Context, t *testing.T, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
