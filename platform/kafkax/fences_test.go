package kafkax

import (
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A client whose metadata still names b2 after b1 and b3 dropped it (b2
// frozen and fenced) is given b1 and b3 as its seeds and learns the
// metadata again from them; while every broker lists b2, it is left alone.
// A closed client is no longer watched.
func TestWatchFencesRebootstrapsAClientThatKnowsAFencedBroker(t *testing.T) {
	b1, b2, b3 := sarama.NewMockBroker(t, 1), sarama.NewMockBroker(t, 2), sarama.NewMockBroker(t, 3)
	defer b1.Close()
	defer b3.Close()
	answering := func(brokers ...*sarama.MockBroker) map[string]sarama.MockResponse { return listing(t, brokers...) }
	mockOnly := func(c *sarama.Config) { c.ApiVersionsRequest = false } // the mock brokers answer what is mapped only
	for _, b := range []*sarama.MockBroker{b1, b2, b3} {
		b.SetHandlerByMap(answering(b1, b2, b3))
	}
	kcfg := Config{Brokers: []string{b1.Addr(), b2.Addr(), b3.Addr()}}
	conf := kcfg.Sarama("fences-test")
	conf.Metadata.RefreshFrequency = 0 // only the watch refreshes it
	mockOnly(conf)
	client, err := NewClient([]string{b1.Addr()}, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	known := func() []string {
		var addrs []string
		for _, b := range client.Brokers() {
			addrs = append(addrs, b.Addr())
		}
		slices.Sort(addrs)
		return addrs
	}
	if got := known(); len(got) != 3 {
		t.Fatalf("the client knows %v, want the three brokers", got)
	}
	before := testutil.ToFloat64(clientsRebootstrapped)
	defer watchFences(kcfg, mockOnly)()

	b2.Close() // frozen: it answers nothing, and the others still list it
	time.Sleep(500 * time.Millisecond)
	if n := testutil.ToFloat64(clientsRebootstrapped) - before; n != 0 {
		t.Fatalf("%v clients rebootstrapped while every broker listed b2", n)
	}
	b1.SetHandlerByMap(answering(b1, b3))
	b3.SetHandlerByMap(answering(b1, b3))
	want := slices.Sorted(slices.Values([]string{b1.Addr(), b3.Addr()}))
	for deadline := time.Now().Add(5 * time.Second); !slices.Equal(known(), want); {
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the fence the client knows %v, want %v", known(), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := testutil.ToFloat64(clientsRebootstrapped) - before; n != 1 {
		t.Errorf("%v clients rebootstrapped, want 1", n)
	}
	_ = client.Close()
	for _, c := range watched.list() {
		if c.Client == client.(*fencedClient).Client {
			t.Error("a closed client is still watched")
		}
	}
}

// A request that a frozen broker holds (a listener that accepts and never
// answers) ends as soon as the brokers drop that broker from their
// metadata: the watch closes the process's connections to it, rather than
// leaving the request to sarama's read timeout (30 s).
func TestWatchFencesEndsTheRequestsAFencedBrokerHolds(t *testing.T) {
	frozen, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer frozen.Close()
	b1, b3 := sarama.NewMockBroker(t, 1), sarama.NewMockBroker(t, 3)
	defer b1.Close()
	defer b3.Close()
	listingFrozen := func(fenced bool) map[string]sarama.MockResponse {
		md := sarama.NewMockMetadataResponse(t).SetBroker(b1.Addr(), 1).SetBroker(b3.Addr(), 3)
		if !fenced {
			md.SetBroker(frozen.Addr().String(), 2)
		}
		return map[string]sarama.MockResponse{"MetadataRequest": md}
	}
	b1.SetHandlerByMap(listingFrozen(false))
	b3.SetHandlerByMap(listingFrozen(false))
	kcfg := Config{Brokers: []string{b1.Addr(), frozen.Addr().String(), b3.Addr()}}
	mockOnly := func(c *sarama.Config) { c.ApiVersionsRequest = false }
	conf := kcfg.Sarama("fences-test")
	mockOnly(conf)
	conf.Metadata.RefreshFrequency = 0
	client, err := NewClient([]string{b1.Addr()}, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	held := sarama.NewBroker(frozen.Addr().String())
	if err := held.Open(conf); err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	answered := make(chan error, 1)
	go func() {
		_, err := held.GetMetadata(sarama.NewMetadataRequest(conf.Version, nil))
		answered <- err
	}()

	defer watchFences(kcfg, mockOnly)()
	select {
	case err := <-answered:
		t.Fatalf("the frozen broker's request ended before the fence: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	fenced := time.Now()
	b1.SetHandlerByMap(listingFrozen(true))
	b3.SetHandlerByMap(listingFrozen(true))
	select {
	case err := <-answered:
		if err == nil {
			t.Fatal("the frozen broker's request succeeded")
		}
		if took := time.Since(fenced); took > 3*time.Second {
			t.Errorf("the frozen broker's request ended %v after the fence, want within a few votes", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the frozen broker's request still waits 10 s after the fence")
	}
}

// watchFences runs WatchFences on kcfg, voting every 100 ms, until the
// function it returns is called.
func watchFences(kcfg Config, adjust func(*sarama.Config)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		WatchFences(ctx, kcfg, FenceOptions{Topic: "events", Every: 100 * time.Millisecond, adjust: adjust}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	return func() { cancel(); <-done }
}
