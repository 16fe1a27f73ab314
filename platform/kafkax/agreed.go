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
	agreed, _, _ := vote(ctx, conf, addrs, topic)
	return agreed
}

// vote is AgreedBrokers. answered lists the addrs that answered;
// unanimous reports that all of addrs answered, each listing the same
// brokers.
func vote(ctx context.Context, conf *sarama.Config, addrs []string, topic string) (agreed, answered []string, unanimous bool) {
	return voteWith(ctx, addrs, func(addr string) []string { return liveBrokers(conf, addr, topic) })
}

// voteWith is vote with ask as the question to each broker: the brokers
// it lists, or nil if it did not answer.
func voteWith(ctx context.Context, addrs []string, ask func(addr string) []string) (agreed, answered []string, unanimous bool) {
	type answer struct {
		addr string
		live []string // nil: no answer
	}
	answers := make(chan answer, len(addrs))
	for _, addr := range addrs {
		go func() { answers <- answer{addr, ask(addr)} }()
	}
	same := true
	var last <-chan time.Time
	done := func() ([]string, []string, bool) {
		slices.Sort(agreed)
		return agreed, answered, same && len(answered) == len(addrs)
	}
	for i := range addrs {
		if i == len(addrs)-1 && i > 0 {
			last = time.After(lastVoterWait)
		}
		select {
		case <-last:
			return done()
		case a := <-answers:
			switch {
			case a.live == nil:
				continue
			case agreed == nil:
				agreed = a.live
			default:
				if len(a.live) != len(agreed) || slices.ContainsFunc(a.live, func(b string) bool { return !slices.Contains(agreed, b) }) {
					same = false
				}
				agreed = slices.DeleteFunc(agreed, func(b string) bool { return !slices.Contains(a.live, b) })
			}
			answered = append(answered, a.addr)
		case <-ctx.Done():
			return done()
		}
	}
	return done()
}

// ReplacementSeeds returns the bootstrap list of a producer that replaces
// one whose transaction a broker holds: the brokers AgreedBrokers returns
// within 2 s (addrs if none answered). While that vote cannot yet tell a
// broker that holds requests from a healthy one, it votes again every
// revoteInterval, for at most wait: while every broker answers and all
// list the same brokers, and while a broker that does not answer is still
// listed by the others. With a single address there is no vote, and it
// returns at once.
//
// A broker that is frozen, or cut off from the controller quorum, is
// fenced, and dropped from the others' metadata, only
// broker.session.timeout.ms after its last heartbeat, which may be later
// than the producer was found held. A replacement bootstrapped before that
// learns the broker's leadership as current, sends its requests there,
// and is held in turn.
func ReplacementSeeds(conf *sarama.Config, addrs []string, topic string, wait time.Duration) []string {
	deadline := time.Now().Add(wait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), agreedTimeout)
		agreed, answered, unanimous := vote(ctx, conf, addrs, topic)
		cancel()
		if len(agreed) == 0 {
			return addrs
		}
		silentButListed := slices.ContainsFunc(agreed, func(b string) bool {
			return slices.Contains(addrs, b) && !slices.Contains(answered, b)
		})
		if len(addrs) < 2 || !unanimous && !silentButListed || !time.Now().Add(revoteInterval).Before(deadline) {
			return agreed
		}
		time.Sleep(revoteInterval)
	}
}

// revoteInterval is how often ReplacementSeeds votes while the brokers
// agree.
const revoteInterval = 250 * time.Millisecond

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

// agreedTimeout bounds each vote of ReplacementSeeds.
const agreedTimeout = 2 * time.Second
