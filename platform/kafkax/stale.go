package kafkax

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// SyncProducer is a sarama.SyncProducer that also tells which brokers its
// client knows: the brokers of its last metadata. NewSyncProducer returns
// one; a held transaction's watch (WatchStale) needs it.
type SyncProducer interface {
	sarama.SyncProducer
	// Brokers returns the addresses of the brokers that the producer's
	// metadata lists.
	Brokers() []string
}

// NewSyncProducer is sarama.NewSyncProducer on a client of its own, which
// its Close closes too, so that the producer can tell which brokers it
// knows (SyncProducer.Brokers).
func NewSyncProducer(seeds []string, conf *sarama.Config) (sarama.SyncProducer, error) {
	client, err := sarama.NewClient(seeds, conf)
	if err != nil {
		return nil, err
	}
	prod, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	return &clientProducer{SyncProducer: prod, client: client}, nil
}

type clientProducer struct {
	sarama.SyncProducer
	client sarama.Client
}

func (p *clientProducer) Brokers() []string {
	var addrs []string
	for _, b := range p.client.Brokers() {
		addrs = append(addrs, b.Addr())
	}
	return addrs
}

func (p *clientProducer) Close() error { return closeWithClient(p.SyncProducer.Close(), p.client) }

// closeWithClient closes client, which the caller made for what it has
// just closed with err, and joins the client's error to err (a client
// closed already is not one).
func closeWithClient(err error, client sarama.Client) error {
	if cerr := client.Close(); cerr != nil && !errors.Is(cerr, sarama.ErrClosedClient) {
		err = errors.Join(err, cerr)
	}
	return err
}

// StaleOptions configures WatchStale. The zero value of a duration means
// its default.
type StaleOptions struct {
	// Seeds are the bootstrap brokers, asked which brokers are live.
	Seeds []string
	// Conf returns the configuration of the vote's connections (their
	// timeouts are set to 2 s); it is called only once the watch votes.
	Conf func() *sarama.Config
	// Topic is the topic whose metadata the brokers are asked for.
	Topic string
	// After is how long the transaction runs before the first vote
	// (default 1 s: a healthy transaction takes milliseconds, one under
	// heavy load tens of them); Every, how often it votes again (default
	// 500 ms).
	After, Every time.Duration
}

// WatchStale watches a transaction of prod that has begun: from
// opts.After on, every opts.Every until stop is called, it asks the brokers
// which brokers are live (AgreedBrokers over opts.Seeds), and calls held
// once, in its own goroutine, with the brokers that prod still knows but
// the live brokers no longer list.
//
// Such a broker was fenced by the controller: frozen, dead, or cut off
// from the controller quorum. Its partitions and its transaction
// coordinators have moved, but a producer learns of it only from another
// broker's metadata, and sarama asks any broker it knows for that, the
// fenced one too, whose silence holds the refresh until the read timeout.
// Until then the producer sends its requests to the fenced broker, which
// holds them. Replacing the producer as soon as the vote shows it (about
// broker.session.timeout.ms after the fault) ends the transaction sooner
// than a fixed bound on its length can, without shortening that bound for
// a transaction that is merely slow: while every broker prod knows is
// live, held is never called.
//
// held is called at most once, and not after stop has returned unless it
// had begun before: its caller checks that the transaction it replaces is
// still the one in flight. A producer that is not a SyncProducer (tests)
// is not watched. stop may be called more than once, from any goroutine.
func WatchStale(prod sarama.SyncProducer, opts StaleOptions, held func(stale []string)) (stop func()) {
	p, ok := prod.(SyncProducer)
	if !ok || len(opts.Seeds) == 0 {
		return func() {}
	}
	after, every := opts.After, opts.Every
	if after <= 0 {
		after = time.Second
	}
	if every <= 0 {
		every = 500 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu      sync.Mutex // held while held is being decided, so that stop waits for it
		stopped bool
	)
	timer := time.AfterFunc(after, func() {
		// A vote does not wait for a silent broker beyond every; its
		// connection gives up soon after, rather than at sarama's 30 s.
		conf := opts.Conf()
		conf.Net.DialTimeout, conf.Net.ReadTimeout, conf.Net.WriteTimeout = voteConnTimeout, voteConnTimeout, voteConnTimeout
		for {
			vctx, vcancel := context.WithTimeout(ctx, every)
			agreed := AgreedBrokers(vctx, conf, opts.Seeds, opts.Topic)
			vcancel()
			stale := staleBrokers(p.Brokers(), agreed)
			mu.Lock()
			if stopped {
				mu.Unlock()
				return
			}
			if len(stale) > 0 {
				stopped = true
				mu.Unlock()
				go held(stale)
				return
			}
			mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
		}
	})
	return func() {
		timer.Stop()
		cancel()
		mu.Lock()
		stopped = true
		mu.Unlock()
	}
}

// voteConnTimeout bounds the connections of WatchStale's votes.
const voteConnTimeout = 2 * time.Second

// staleBrokers returns the brokers of known that agreed leaves out, or
// nil when agreed is empty (no broker answered: nothing is known).
func staleBrokers(known, agreed []string) []string {
	if len(agreed) == 0 {
		return nil
	}
	var stale []string
	for _, b := range known {
		if !slices.Contains(agreed, b) {
			stale = append(stale, b)
		}
	}
	return stale
}
