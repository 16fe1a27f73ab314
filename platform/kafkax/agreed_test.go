package kafkax

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// A broker cut off from the quorum (b2) still lists itself and the others;
// the two that fenced it list only each other. The vote leaves b2 out, and
// a single broker's view is taken as it is.
func TestAgreedBrokersLeaveOutABrokerTheOthersDropped(t *testing.T) {
	b1, b2, b3 := sarama.NewMockBroker(t, 1), sarama.NewMockBroker(t, 2), sarama.NewMockBroker(t, 3)
	defer b1.Close()
	defer b2.Close()
	defer b3.Close()
	lists := func(brokers ...*sarama.MockBroker) map[string]sarama.MockResponse {
		md := sarama.NewMockMetadataResponse(t)
		for _, b := range brokers {
			md.SetBroker(b.Addr(), b.BrokerID())
		}
		return map[string]sarama.MockResponse{"MetadataRequest": md}
	}
	b1.SetHandlerByMap(lists(b1, b3))
	b2.SetHandlerByMap(lists(b1, b2, b3))
	b3.SetHandlerByMap(lists(b1, b3))
	conf := Config{}.Sarama("agreed-test")
	conf.ApiVersionsRequest = false // the mock brokers answer Metadata only
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	got := AgreedBrokers(ctx, conf, []string{b1.Addr(), b2.Addr(), b3.Addr()}, "events")
	if want := slices.Sorted(slices.Values([]string{b1.Addr(), b3.Addr()})); !slices.Equal(got, want) {
		t.Errorf("AgreedBrokers = %v, want %v (without the deposed %s)", got, want, b2.Addr())
	}
	if got := AgreedBrokers(ctx, conf, []string{b2.Addr()}, "events"); len(got) != 3 {
		t.Errorf("AgreedBrokers of the deposed broker alone = %v, want the three it lists", got)
	}
}

// While all brokers answer and agree, ReplacementSeeds votes again until
// one is dropped (a deposed leader, fenced by the controller only after
// its session timeout), for at most its wait; a vote that is not
// unanimous is taken at once.
func TestReplacementSeedsWaitForADissentWhileTheBrokersAgree(t *testing.T) {
	b1, b2, b3 := sarama.NewMockBroker(t, 1), sarama.NewMockBroker(t, 2), sarama.NewMockBroker(t, 3)
	defer b1.Close()
	// b2 is closed below, as a broker that stopped
	defer b3.Close()
	lists := func(brokers ...*sarama.MockBroker) map[string]sarama.MockResponse {
		md := sarama.NewMockMetadataResponse(t)
		for _, b := range brokers {
			md.SetBroker(b.Addr(), b.BrokerID())
		}
		return map[string]sarama.MockResponse{"MetadataRequest": md}
	}
	all := func() {
		for _, b := range []*sarama.MockBroker{b1, b2, b3} {
			b.SetHandlerByMap(lists(b1, b2, b3))
		}
	}
	conf := Config{}.Sarama("agreed-test")
	conf.ApiVersionsRequest = false // the mock brokers answer Metadata only
	addrs := []string{b1.Addr(), b2.Addr(), b3.Addr()}
	three := slices.Sorted(slices.Values(addrs))
	withoutB2 := slices.Sorted(slices.Values([]string{b1.Addr(), b3.Addr()}))

	// The controller fences b2 after 700 ms: b1 and b3 drop it.
	all()
	began := time.Now()
	fence := time.AfterFunc(700*time.Millisecond, func() {
		b1.SetHandlerByMap(lists(b1, b3))
		b3.SetHandlerByMap(lists(b1, b3))
	})
	defer fence.Stop()
	got := ReplacementSeeds(conf, addrs, "events", 10*time.Second)
	took := time.Since(began)
	if !slices.Equal(got, withoutB2) {
		t.Errorf("ReplacementSeeds = %v, want %v (without the fenced %s)", got, withoutB2, b2.Addr())
	}
	if took < 700*time.Millisecond || took > 5*time.Second {
		t.Errorf("ReplacementSeeds took %v, want from the fencing (700 ms) to a few votes later", took)
	}

	// Nobody is ever dropped: the wait bounds it.
	all()
	began = time.Now()
	if got := ReplacementSeeds(conf, addrs, "events", time.Second); !slices.Equal(got, three) {
		t.Errorf("ReplacementSeeds = %v, want all three", got)
	}
	if took := time.Since(began); took < 700*time.Millisecond || took > 3*time.Second {
		t.Errorf("a unanimous ReplacementSeeds with a wait of 1 s took %v", took)
	}

	// A broker that does not answer: no reason to wait.
	b2.Close()
	began = time.Now()
	if got := ReplacementSeeds(conf, addrs, "events", 10*time.Second); !slices.Equal(got, three) {
		t.Errorf("ReplacementSeeds = %v, want the three that b1 and b3 list", got)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("ReplacementSeeds waited %v with a silent broker", took)
	}
}
