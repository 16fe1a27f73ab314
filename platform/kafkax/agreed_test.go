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
