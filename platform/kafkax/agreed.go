package kafkax

import (
	"context"
	"slices"
	"time"

	"github.com/IBM/sarama"
)

// AgreedBrokers asks each of addrs, concurrently and within ctx, for the
// metadata of topic, and returns the brokers (their advertised addresses,
// sorted) that every broker that answered lists as live. It returns nil if
// none answered.
//
// It is a bootstrap list that leaves out a deposed broker: one that was cut
// off from the controller quorum is fenced by the controller, and the
// other brokers drop it from their metadata, but it does not learn of it
// until the cut heals. Until then it goes on answering, with metadata that
// names itself as the leader of partitions that have moved, so a client
// bootstrapped from it would send its requests there again. A broker that
// does not answer in time is left out of the vote; one that every other
// broker still lists stays in. Once all brokers but one have answered, the
// last one is waited for at most lastVoterWait: a frozen broker would
// otherwise hold every vote to ctx's end, and the answers in hand already
// leave out a deposed broker if one of them is a healthy broker's.
func AgreedBrokers(ctx context.Context, conf *sarama.Config, addrs []string, topic string) []string {
	answers := make(chan []string, len(addrs)) // nil: no answer
	for _, addr := range addrs {
		go func() { answers <- liveBrokers(conf, addr, topic) }()
	}
	var agreed []string // nil until the first answer
	var last <-chan time.Time
	for i := range addrs {
		if i == len(addrs)-1 && i > 0 {
			last = time.After(lastVoterWait)
		}
		select {
		case <-last:
			slices.Sort(agreed)
			return agreed
		case live := <-answers:
			switch {
			case live == nil:
			case agreed == nil:
				agreed = live
			default:
				agreed = slices.DeleteFunc(agreed, func(b string) bool { return !slices.Contains(live, b) })
			}
		case <-ctx.Done():
			slices.Sort(agreed)
			return agreed
		}
	}
	slices.Sort(agreed)
	return agreed
}

// liveBrokers returns the brokers that the broker at addr lists in its
// metadata for topic, or nil if it did not answer. The connection is
// closed before it returns; a broker that hangs is left to sarama's
// read timeout (the caller does not wait for it).
func liveBrokers(conf *sarama.Config, addr, topic string) []string {
	b := sarama.NewBroker(addr)
	if err := b.Open(conf); err != nil {
		return nil
	}
	defer func() { _ = b.Close() }()
	resp, err := b.GetMetadata(sarama.NewMetadataRequest(conf.Version, []string{topic}))
	if err != nil {
		return nil
	}
	live := make([]string, 0, len(resp.Brokers))
	for _, lb := range resp.Brokers {
		live = append(live, lb.Addr())
	}
	return live
}

// lastVoterWait bounds the wait for the last broker of an AgreedBrokers
// vote.
const lastVoterWait = 250 * time.Millisecond

// agreedTimeout bounds AgreedBrokers when its caller gives no deadline of
// its own; see AgreedBrokersWithin.
const agreedTimeout = 2 * time.Second

// AgreedBrokersWithin is AgreedBrokers within d (2 s if d is 0), falling
// back to addrs when no broker answered.
func AgreedBrokersWithin(d time.Duration, conf *sarama.Config, addrs []string, topic string) []string {
	if d == 0 {
		d = agreedTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if agreed := AgreedBrokers(ctx, conf, addrs, topic); len(agreed) > 0 {
		return agreed
	}
	return addrs
}
