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
	b1.SetHandlerByMap(listing(t, b1, b3))
	b2.SetHandlerByMap(listing(t, b1, b2, b3))
	b3.SetHandlerByMap(listing(t, b1, b3))
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

// While every broker answers and all list the same brokers, or a broker
// that does not answer is still listed by the others, ReplacementSeeds
// votes again until one is dropped (a deposed or frozen leader, fenced by
// the controller only after its session timeout), for at most its wait.
// A vote that drops a broker is taken at once, as is one where the broker
// that does not answer is dropped already (a broker killed and fenced), and
// a single address is no vote.
func TestReplacementSeedsWaitForADissentWhileTheBrokersAgree(t *testing.T) {
	b1, b2, b3 := sarama.NewMockBroker(t, 1), sarama.NewMockBroker(t, 2), sarama.NewMockBroker(t, 3)
	defer b1.Close()
	// b2 is closed below, as a frozen broker stops answering
	defer b3.Close()
	all := func() {
		for _, b := range []*sarama.MockBroker{b1, b2, b3} {
			b.SetHandlerByMap(listing(t, b1, b2, b3))
		}
	}
	fence := func(after time.Duration) *time.Timer {
		return time.AfterFunc(after, func() {
			b1.SetHandlerByMap(listing(t, b1, b3))
			b3.SetHandlerByMap(listing(t, b1, b3))
		})
	}
	conf := Config{}.Sarama("agreed-test")
	conf.ApiVersionsRequest = false // the mock brokers answer Metadata only
	addrs := []string{b1.Addr(), b2.Addr(), b3.Addr()}
	three := slices.Sorted(slices.Values(addrs))
	withoutB2 := slices.Sorted(slices.Values([]string{b1.Addr(), b3.Addr()}))
	timed := func(name string, wait time.Duration, addrs []string, want []string, min, max time.Duration) {
		t.Helper()
		began := time.Now()
		got := ReplacementSeeds(conf, addrs, "events", wait)
		took := time.Since(began)
		if !slices.Equal(got, want) {
			t.Errorf("%s: ReplacementSeeds = %v, want %v", name, got, want)
		}
		if took < min || took > max {
			t.Errorf("%s: ReplacementSeeds took %v, want %v to %v", name, took, min, max)
		}
	}

	all()
	f := fence(700 * time.Millisecond)
	timed("the controller fences b2 after 700 ms", 10*time.Second, addrs, withoutB2, 700*time.Millisecond, 5*time.Second)
	f.Stop()

	all()
	timed("no broker is ever dropped", time.Second, addrs, three, 700*time.Millisecond, 3*time.Second)

	all()
	timed("a single address", 10*time.Second, []string{b1.Addr()}, three, 0, 2*time.Second)

	b1.SetHandlerByMap(listing(t, b1, b3))
	timed("b1 has dropped b2 already", 10*time.Second, addrs, withoutB2, 0, 2*time.Second)

	// b2 freezes: it does not answer, and the others list it until the
	// controller fences it.
	all()
	b2.Close()
	f = fence(700 * time.Millisecond)
	defer f.Stop()
	timed("b2 silent, then fenced", 10*time.Second, addrs, withoutB2, 700*time.Millisecond, 5*time.Second)
	timed("b2 silent and fenced already", 10*time.Second, addrs, withoutB2, 0, 2*time.Second)
}

// listing is a mock broker's answers: metadata that lists brokers.
func listing(t *testing.T, brokers ...*sarama.MockBroker) map[string]sarama.MockResponse {
	md := sarama.NewMockMetadataResponse(t)
	for _, b := range brokers {
		md.SetBroker(b.Addr(), b.BrokerID())
	}
	return map[string]sarama.MockResponse{"MetadataRequest": md}
}
