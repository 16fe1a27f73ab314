package kafkax

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// Between two sessions (Cleanup until the next Setup has set its
// partitions up) the instance owns nothing: it is not ready, and
// InSession runs nothing, so that nothing drops state that the next
// Setup is about to resume from.
func TestBetweenSessionsTheGroupIsNotReadyAndRunsNothingInSession(t *testing.T) {
	g := &Group{
		opts: GroupOptions{Group: "g"}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		joined: true, inSession: true, changed: make(chan struct{}),
		owned: map[int32]*sessionPartition{3: {behind: map[string]bool{}}, 1: {behind: map[string]bool{}}},
		lease: lease{until: time.Now().Add(time.Hour)},
	}
	if err := g.Ready(); err != nil {
		t.Fatalf("in a session, caught up: Ready = %v", err)
	}
	var got []int32
	if !g.InSession(func(owned []int32) { got = owned }) || !slices.Equal(got, []int32{1, 3}) {
		t.Fatalf("InSession in a session gave %v; want [1 3]", got)
	}

	if err := g.Cleanup(nil); err != nil {
		t.Fatal(err)
	}
	if err := g.Ready(); !errors.Is(err, ErrBetweenSessions) {
		t.Fatalf("between sessions: Ready = %v; want ErrBetweenSessions", err)
	}
	if g.InSession(func([]int32) { t.Fatal("InSession ran between sessions") }) {
		t.Fatal("InSession reported a session between two")
	}

	// Detached (no session can start), the instance answers for what the
	// last session read, and is ready for it, but InSession still runs
	// nothing: a session may start at any moment.
	g.detach()
	if err := g.Ready(); err != nil {
		t.Fatalf("detached with caught-up partitions: Ready = %v", err)
	}
	if g.InSession(func([]int32) { t.Fatal("InSession ran while detached") }) {
		t.Fatal("InSession reported a session while detached")
	}
}

// A member whose lease ran out (it was frozen past most of a session
// timeout) serves nothing and is not ready, though it still believes it
// owns its partitions, until a heartbeat of its session is accepted.
func TestWithoutALeaseNothingIsServed(t *testing.T) {
	g := &Group{
		opts: GroupOptions{Group: "g", Self: Member{ID: "me"}}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		joined: true, inSession: true, changed: make(chan struct{}),
		owned: map[int32]*sessionPartition{1: {behind: map[string]bool{}}},
		lease: lease{length: time.Minute, until: time.Now().Add(-time.Millisecond)},
	}
	if g.Serving(1) || g.Holds(1, 0) {
		t.Fatal("served without a lease")
	}
	if err := g.Ready(); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("Ready = %v; want ErrLeaseExpired", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, self, err := g.Route(ctx, 1); self || !errors.Is(err, ErrNoOwner) {
		t.Fatalf("Route without a lease: self=%v err=%v", self, err)
	}
	g.mu.Lock()
	g.lease.renew(time.Now(), time.Now())
	g.mu.Unlock()
	if !g.Serving(1) || g.Ready() != nil {
		t.Fatal("not served once the lease was renewed")
	}
}

// An instance cut off from its coordinator (its lease ran out, and its
// heartbeat gets no answer) fails a request for a partition it owned at
// once, instead of letting it wait for an owner; one whose coordinator
// answers, if only to refuse it, waits.
func TestCutOffInstanceFailsAtOnce(t *testing.T) {
	g := &Group{
		opts: GroupOptions{Group: "g", Self: Member{ID: "me"}}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		joined: true, inSession: true, changed: make(chan struct{}),
		owned:         map[int32]*sessionPartition{1: {behind: map[string]bool{}}},
		heartbeatSent: time.Now().Add(-2 * silentAfter),
	}
	start := time.Now()
	_, _, err := g.Route(context.Background(), 1)
	if !errors.Is(err, ErrCutOff) || !errors.Is(err, ErrNoOwner) || time.Since(start) > time.Second {
		t.Fatalf("Route = %v after %v; want ErrCutOff at once", err, time.Since(start))
	}
	g.mu.Lock()
	g.heartbeatSent, g.leaseFailing = time.Time{}, true // answered: refused
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := g.Route(ctx, 1); errors.Is(err, ErrCutOff) || !errors.Is(err, ErrNoOwner) {
		t.Fatalf("Route with a coordinator that answers = %v; want a wait for the owner", err)
	}
}

// A lease heartbeat that the coordinator refuses because a rebalance has
// begun ends the session at once, so that the member rejoins now rather
// than at sarama's own next heartbeat (up to a heartbeat interval later).
// A refusal for an older generation, or outside a session, ends nothing.
func TestRefusedLeaseHeartbeatEndsTheSession(t *testing.T) {
	broker := sarama.NewMockBroker(t, 1)
	defer broker.Close()
	broker.SetHandlerByMap(map[string]sarama.MockResponse{
		"MetadataRequest": sarama.NewMockMetadataResponse(t).SetBroker(broker.Addr(), broker.BrokerID()).SetController(broker.BrokerID()),
		"FindCoordinatorRequest": sarama.NewMockFindCoordinatorResponse(t).
			SetCoordinator(sarama.CoordinatorGroup, "g", broker),
		"HeartbeatRequest": sarama.NewMockHeartbeatResponse(t).SetError(sarama.ErrRebalanceInProgress),
	})
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V0_10_2_0 // Heartbeat v0, as the mock answers
	cfg.ApiVersionsRequest = false
	client, err := sarama.NewClient([]string{broker.Addr()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ended := 0
	g := &Group{
		opts: GroupOptions{Group: "g"}, client: client, log: slog.New(slog.DiscardHandler),
		joined: true, inSession: true, changed: make(chan struct{}), generation: 7, memberID: "m",
		owned:      map[int32]*sessionPartition{1: {behind: map[string]bool{}}},
		lease:      lease{length: time.Second, until: time.Now().Add(time.Second)},
		endSession: func() { ended++ },
	}
	g.renewLease()
	if ended != 1 {
		t.Fatalf("the session ended %d times after the coordinator refused a heartbeat for a rebalance; want 1", ended)
	}
	if !g.leaseFailing || g.coordinatorSilent {
		t.Error("a refused heartbeat must count as failing, from a coordinator that answers")
	}
	g.inSession, g.detached = false, true // between sessions, answering for the last one
	g.renewLease()
	if ended != 1 {
		t.Fatalf("a refusal outside a session ended a session (%d)", ended)
	}
	if !rejoinNow(fmt.Errorf("heartbeat: %w", sarama.ErrUnknownMemberId)) || rejoinNow(sarama.ErrNotCoordinatorForConsumer) {
		t.Error("rejoinNow: want the generation's end only")
	}
}

// A coordinator that does not answer (its broker frozen) holds a lease
// heartbeat only silentAfter: then the other brokers are asked which
// broker coordinates the group now, in the background, and the next
// renewal's heartbeat goes there and renews the lease, while the first
// still waits. No second heartbeat is sent to the silent broker.
func TestLeaseHeartbeatFindsTheCoordinatorThatMovedAwayFromASilentBroker(t *testing.T) {
	silent, live, client, move := coordinatorMovingAwayFromASilentBroker(t, func(*sarama.MockBroker) map[string]sarama.MockResponse {
		return map[string]sarama.MockResponse{"HeartbeatRequest": sarama.NewMockHeartbeatResponse(t)}
	})
	// Broker 1 goes silent, and the group moves to broker 2.
	move()
	g := &Group{
		opts: GroupOptions{Group: "g"}, client: client, log: slog.New(slog.DiscardHandler),
		joined: true, inSession: true, changed: make(chan struct{}), generation: 7, memberID: "m",
		owned: map[int32]*sessionPartition{1: {behind: map[string]bool{}}},
		lease: lease{length: 3 * time.Second},
	}
	start := time.Now()
	g.renewLease()
	if took := time.Since(start); took > silentAfter+500*time.Millisecond {
		t.Fatalf("renewLease waited %s on a silent coordinator; want silentAfter (%s)", took, silentAfter)
	}
	g.mu.Lock()
	held, silentNow := g.lease.held(time.Now()), g.coordinatorSilentLocked(time.Now())
	g.mu.Unlock()
	if held || !silentNow {
		t.Fatalf("after a heartbeat without an answer: lease held %v, coordinator silent %v; want false, true", held, silentNow)
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := g.coordinator(); err == nil && c.ID() == live.BrokerID() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the coordinator was not looked up again")
		}
	}
	g.renewLease()
	g.mu.Lock()
	held, silentNow = g.lease.held(time.Now()), g.coordinatorSilentLocked(time.Now())
	g.mu.Unlock()
	if !held || silentNow {
		t.Fatalf("after the new coordinator answered: lease held %v, coordinator silent %v; want true, false", held, silentNow)
	}
	time.Sleep(4 * time.Second) // broker 1 answers its one heartbeat
	n := 0
	for _, rr := range silent.History() {
		if _, ok := rr.Request.(*sarama.HeartbeatRequest); ok {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the silent broker got %d heartbeats; want 1", n)
	}
}

// A heartbeat that the coordinator refuses as not the coordinator has the
// client look the coordinator up again, but does not wait for that: the
// client asks the least loaded broker it knows, which may be frozen, and
// a heartbeat still waiting marks its broker as waited on, so no later
// heartbeat would reach the group's new coordinator meanwhile.
func TestARefusedHeartbeatDoesNotWaitForTheCoordinatorLookup(t *testing.T) {
	slow := sarama.NewMockBroker(t, 1) // the only broker the client knows; frozen
	defer slow.Close()
	refusing := sarama.NewMockBroker(t, 2)
	defer refusing.Close()
	slow.SetHandlerByMap(map[string]sarama.MockResponse{
		"MetadataRequest":        sarama.NewMockMetadataResponse(t).SetBroker(slow.Addr(), slow.BrokerID()).SetController(slow.BrokerID()),
		"FindCoordinatorRequest": sarama.NewMockFindCoordinatorResponse(t).SetCoordinator(sarama.CoordinatorGroup, "g", slow),
	})
	refusing.SetHandlerByMap(map[string]sarama.MockResponse{
		"HeartbeatRequest": sarama.NewMockHeartbeatResponse(t).SetError(sarama.ErrNotCoordinatorForConsumer),
	})
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V0_10_2_0 // Heartbeat v0, as the mock answers
	cfg.ApiVersionsRequest = false
	client, err := sarama.NewClient([]string{slow.Addr()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	coord := sarama.NewBroker(refusing.Addr())
	if err := coord.Open(cfg); err != nil {
		t.Fatal(err)
	}
	defer coord.Close()
	g := &Group{opts: GroupOptions{Group: "g"}, client: client, log: slog.New(slog.DiscardHandler)}
	slow.SetLatency(3 * time.Second)
	start := time.Now()
	err = g.heartbeat(coord, 7, "m")
	if !errors.Is(err, sarama.ErrNotCoordinatorForConsumer) {
		t.Fatalf("heartbeat: %v, want the refusal", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the refused heartbeat returned after %s: it waited for the client's lookup of the coordinator", took)
	}
}

// TestTheRoutingTableIsReadFromTheCoordinatorThatMovedAwayFromASilentBroker:
// the client caches broker 1 as the group's coordinator, broker 1 goes
// silent, and the group moves to broker 2. A refresh of the routing table
// waits at most silentAfter, and a later one reads the table from broker
// 2, long before broker 1 answers. Through sarama's admin (its cached
// coordinator) the table was read from broker 1 only when it answered.
func TestTheRoutingTableIsReadFromTheCoordinatorThatMovedAwayFromASilentBroker(t *testing.T) {
	// Broker 1 goes silent (and would answer a state of its own, late);
	// the group moves to broker 2.
	_, _, client, move := coordinatorMovingAwayFromASilentBroker(t, func(answering *sarama.MockBroker) map[string]sarama.MockResponse {
		state := "Stable"
		if answering.BrokerID() == 1 {
			state = "PreparingRebalance"
		}
		return map[string]sarama.MockResponse{"DescribeGroupsRequest": sarama.NewMockDescribeGroupsResponse(t).AddGroupDescription("g",
			&sarama.GroupDescription{GroupId: "g", State: state, ProtocolType: "consumer"})}
	})
	move()
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	g := &Group{
		opts: GroupOptions{Group: "g", Topics: []string{"events"}}, client: client, admin: admin, log: slog.New(slog.DiscardHandler),
		changed: make(chan struct{}),
	}
	start := time.Now()
	g.refresh()
	if took := time.Since(start); took > silentAfter+500*time.Millisecond {
		t.Fatalf("refresh waited %s on a silent coordinator; want silentAfter (%s)", took, silentAfter)
	}
	for {
		time.Sleep(60 * time.Millisecond) // refresh reads at most every 50 ms
		g.refresh()
		g.mu.Lock()
		state, err := g.table.State, g.lastErr
		g.mu.Unlock()
		if state == "Stable" && err == nil {
			break
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("the table was not read from the new coordinator within %s (state %q, err %v)", took, state, err)
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("the table was read from the new coordinator after %s; want before broker 1 answers (4 s)", took)
	}
}

// coordinatorMovingAwayFromASilentBroker starts two mock brokers, 1 and 2,
// and a client (of the protocol versions the mocks answer) that has broker
// 1 cached as group "g"'s coordinator. Both brokers answer metadata (topic
// "events" led by broker 2), FindCoordinator, and what extra returns for
// the broker that answers. move makes broker 1 silent for 4 s and has
// broker 2 name itself as the coordinator. Everything closes with t.
func coordinatorMovingAwayFromASilentBroker(t *testing.T, extra func(answering *sarama.MockBroker) map[string]sarama.MockResponse) (silent, live *sarama.MockBroker, client sarama.Client, move func()) {
	t.Helper()
	silent = sarama.NewMockBroker(t, 1)
	t.Cleanup(silent.Close)
	live = sarama.NewMockBroker(t, 2)
	t.Cleanup(live.Close)
	metadata := sarama.NewMockMetadataResponse(t).
		SetBroker(silent.Addr(), silent.BrokerID()).SetBroker(live.Addr(), live.BrokerID()).SetController(live.BrokerID()).
		SetLeader("events", 0, live.BrokerID())
	handlers := func(answering, coordinator *sarama.MockBroker) map[string]sarama.MockResponse {
		m := map[string]sarama.MockResponse{
			"MetadataRequest":        metadata,
			"FindCoordinatorRequest": sarama.NewMockFindCoordinatorResponse(t).SetCoordinator(sarama.CoordinatorGroup, "g", coordinator),
		}
		maps.Copy(m, extra(answering))
		return m
	}
	silent.SetHandlerByMap(handlers(silent, silent))
	live.SetHandlerByMap(handlers(live, silent))
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V0_10_2_0 // the versions the mocks answer
	cfg.ApiVersionsRequest = false
	client, err := sarama.NewClient([]string{live.Addr()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if c, err := client.Coordinator("g"); err != nil || c.ID() != silent.BrokerID() {
		t.Fatalf("coordinator %v, %v; want broker 1 cached", c, err)
	}
	move = func() {
		silent.SetLatency(4 * time.Second)
		live.SetHandlerByMap(handlers(live, live))
	}
	return silent, live, client, move
}
