package kafkax_test

import (
	"context"
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
	if got := kafkax.AgreedBrokersWithin(time.Second, conf, []string{"127.0.0.1:1"}, "t"); !slices.Equal(got, []string{"127.0.0.1:1"}) {
		t.Errorf("AgreedBrokersWithin fell back to %v, want the addresses it was given", got)
	}
}
