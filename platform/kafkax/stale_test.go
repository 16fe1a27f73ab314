package kafkax

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

func TestStaleBrokers(t *testing.T) {
	for _, tc := range []struct {
		name          string
		known, agreed []string
		want          []string
	}{
		{"all live", []string{"a", "b", "c"}, []string{"a", "b", "c"}, nil},
		{"one fenced", []string{"a", "b", "c"}, []string{"a", "c"}, []string{"b"}},
		{"a new broker the producer has not met", []string{"a"}, []string{"a", "d"}, nil},
		{"no broker answered: nothing is known", []string{"a", "b"}, nil, nil},
	} {
		if got := staleBrokers(tc.known, tc.agreed); !slices.Equal(got, tc.want) {
			t.Errorf("%s: staleBrokers(%v, %v) = %v, want %v", tc.name, tc.known, tc.agreed, got, tc.want)
		}
	}
}

// knowing is a SyncProducer whose metadata lists brokers.
type knowing struct {
	sarama.SyncProducer
	brokers []string
}

func (k knowing) Brokers() []string { return k.brokers }

// A producer that knows b2 is left alone while the brokers list b2 (frozen,
// but not yet fenced by the controller), however long its transaction
// runs; once b1 and b3 drop b2 from their metadata, held is called once,
// with b2. A producer that knows only live brokers is never held, and
// after stop, held is not called.
func TestWatchStaleCallsHeldOnceABrokerTheProducerKnowsIsFenced(t *testing.T) {
	b1, b2, b3 := sarama.NewMockBroker(t, 1), sarama.NewMockBroker(t, 2), sarama.NewMockBroker(t, 3)
	defer b1.Close()
	defer b3.Close()
	for _, b := range []*sarama.MockBroker{b1, b2, b3} {
		b.SetHandlerByMap(listing(t, b1, b2, b3))
	}
	b2.Close() // frozen: it does not answer
	opts := StaleOptions{
		Seeds: []string{b1.Addr(), b2.Addr(), b3.Addr()},
		Conf: func() *sarama.Config {
			conf := Config{}.Sarama("stale-test")
			conf.ApiVersionsRequest = false // the mock brokers answer Metadata only
			return conf
		},
		Topic: "events", After: 50 * time.Millisecond, Every: 100 * time.Millisecond,
	}
	type call struct {
		at    time.Time
		stale []string
	}
	watch := func(known ...string) (chan call, func()) {
		calls := make(chan call, 2)
		stop := WatchStale(knowing{brokers: known}, opts, func(stale []string) { calls <- call{time.Now(), stale} })
		return calls, stop
	}

	held, stopHeld := watch(b1.Addr(), b2.Addr(), b3.Addr())
	defer stopHeld()
	live, stopLive := watch(b1.Addr(), b3.Addr())
	time.Sleep(600 * time.Millisecond)
	select {
	case c := <-held:
		t.Fatalf("held was called with %v before the brokers dropped b2", c.stale)
	default:
	}
	fenced := time.Now()
	b1.SetHandlerByMap(listing(t, b1, b3))
	b3.SetHandlerByMap(listing(t, b1, b3))
	select {
	case c := <-held:
		if !slices.Equal(c.stale, []string{b2.Addr()}) {
			t.Errorf("held was called with %v, want [%s]", c.stale, b2.Addr())
		}
		if took := c.at.Sub(fenced); took > 2*time.Second {
			t.Errorf("held was called %v after the fence, want within a vote or two (100 ms each)", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held was not called within 5 s of the fence")
	}
	time.Sleep(300 * time.Millisecond)
	select {
	case c := <-held:
		t.Errorf("held was called a second time, with %v", c.stale)
	default:
	}
	stopLive()
	time.Sleep(300 * time.Millisecond)
	select {
	case c := <-live:
		t.Errorf("a producer that knows only live brokers was held, with %v", c.stale)
	default:
	}
}

// A producer that cannot tell its brokers (a test's) is not watched.
func TestWatchStaleIgnoresAProducerWithoutBrokers(t *testing.T) {
	var called atomic.Bool
	stop := WatchStale(nil, StaleOptions{Seeds: []string{"127.0.0.1:1"}, After: time.Millisecond}, func([]string) { called.Store(true) })
	time.Sleep(50 * time.Millisecond)
	stop()
	if called.Load() {
		t.Error("held was called for a producer that is not a SyncProducer")
	}
}
