package kafkax_test

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"profiles/platform/kafkax"
	"profiles/platform/testenv"
)

// Every broker that answers votes with the brokers its metadata lists; one
// that does not answer (nothing listens at 127.0.0.1:1) has no vote, and
// none answering means no list.
func TestAgreedBrokersAreThoseEveryAnsweringBrokerLists(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	conf := kafkax.Config{Brokers: brokers}.Sarama("agreed-test")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	got := kafkax.AgreedBrokers(ctx, conf, append([]string{"127.0.0.1:1"}, brokers...), "agreed-test-no-such-topic")
	want := slices.Sorted(slices.Values(brokers))
	if !slices.Equal(got, want) {
		t.Errorf("AgreedBrokers = %v, want the test brokers %v", got, want)
	}
	if got := kafkax.AgreedBrokers(ctx, conf, []string{"127.0.0.1:1"}, "t"); got != nil {
		t.Errorf("no broker answered, yet AgreedBrokers = %v", got)
	}
	if got := kafkax.ReplacementSeeds(conf, []string{"127.0.0.1:1"}, "t", time.Minute); !slices.Equal(got, []string{"127.0.0.1:1"}) {
		t.Errorf("ReplacementSeeds fell back to %v, want the addresses it was given", got)
	}
}

// A broker that accepts connections and never answers (a frozen one) holds
// a vote up for lastVoterWait once every other broker has answered, not
// until the vote's deadline.
func TestAgreedBrokersWaitLittleForTheLastSilentBroker(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close() // accepted by the kernel, never read: a frozen process
	conf := kafkax.Config{Brokers: brokers}.Sarama("agreed-test")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	began := time.Now()
	got := kafkax.AgreedBrokers(ctx, conf, append([]string{silent.Addr().String()}, brokers...), "agreed-test-no-such-topic")
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("the vote took %v with one silent broker, want about 250 ms", took)
	}
	if want := slices.Sorted(slices.Values(brokers)); !slices.Equal(got, want) {
		t.Errorf("AgreedBrokers = %v, want the test brokers %v", got, want)
	}
}

// NewSyncProducer's producer knows the brokers of its metadata, which are
// the brokers a vote agrees on, and its Close closes its client too.
func TestNewSyncProducerKnowsTheBrokersOfItsMetadata(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	conf := kafkax.Config{Brokers: brokers}.ProducerSarama("stale-test")
	prod, err := kafkax.NewSyncProducer(brokers, conf)
	if err != nil {
		t.Fatal(err)
	}
	known := prod.(kafkax.SyncProducer).Brokers()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	agreed := kafkax.AgreedBrokers(ctx, conf, brokers, "stale-test-no-such-topic")
	if !slices.Equal(slices.Sorted(slices.Values(known)), agreed) {
		t.Errorf("the producer knows %v, the brokers agree on %v", known, agreed)
	}
	if err := prod.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
