package kafkax

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/platform/internal/loop"
)

// NewClient is sarama.NewClient, and the client it returns is watched by
// the process's WatchFences while it is open (its Close stops that).
// Every long-lived client of the services is made by it or by Connect.
func NewClient(addrs []string, conf *sarama.Config) (sarama.Client, error) {
	c, err := sarama.NewClient(addrs, conf)
	if err != nil {
		return nil, err
	}
	return watched.add(c), nil
}

// fencedClient is a client that the process's fence watch looks after.
type fencedClient struct {
	sarama.Client
	// rebootstrapped is when the watch last gave it new seeds (UnixNano).
	rebootstrapped atomic.Int64
	// checking is set while the watch looks at it.
	checking atomic.Bool
}

func (c *fencedClient) Close() error {
	watched.remove(c)
	return c.Client.Close()
}

// clientSet is the clients of this process that NewClient and Connect
// made and that are not closed.
type clientSet struct {
	mu      sync.Mutex
	clients map[*fencedClient]struct{}
}

var watched = &clientSet{clients: map[*fencedClient]struct{}{}}

func (s *clientSet) add(c sarama.Client) *fencedClient {
	fc := &fencedClient{Client: c}
	s.mu.Lock()
	s.clients[fc] = struct{}{}
	s.mu.Unlock()
	return fc
}

func (s *clientSet) remove(c *fencedClient) {
	s.mu.Lock()
	delete(s.clients, c)
	s.mu.Unlock()
}

func (s *clientSet) list() []*fencedClient {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*fencedClient, 0, len(s.clients))
	for c := range s.clients {
		out = append(out, c)
	}
	return out
}

// FenceOptions configures WatchFences. A zero duration means its default;
// none may be negative.
type FenceOptions struct {
	// Topic is the topic whose metadata the brokers are asked for.
	Topic string
	// Every is how often the brokers are asked (default 1 s).
	Every time.Duration
	// Cooldown is how long a client that was given new seeds is left
	// alone (default 10 s).
	Cooldown time.Duration

	adjust func(*sarama.Config) // tests: the votes' configuration
}

// WatchFences runs until ctx ends: every opts.Every it asks the brokers of
// c which brokers are live (each broker lists those in its metadata; the
// live ones are those that every broker that answers lists). It closes
// every connection of the process (of the clients of Config.Sarama's
// configurations) to a broker that a broker once listed and the vote
// leaves out, and gives every client of this process (NewClient,
// Connect) that still knows such a broker the live brokers as its new
// seeds (sarama's Client.RefreshBrokers), then refreshes its metadata.
// Run one per process.
//
// Such a broker was fenced by the controller: frozen, or cut off from the
// controller quorum. A client learns of it only from another broker's
// metadata, which sarama asks of any broker it knows, the fenced one too:
// a frozen broker holds that request, and the client's consumers go on
// fetching from it, until sarama's read timeout (30 s); sarama's own close
// of that broker waits for the lock that the request holds meanwhile.
// Closing the sockets ends those requests at once, and their retries go,
// with the new seeds, to the brokers that lead now.
//
// The votes keep one connection to each broker of c (a broker whose last
// answer is still outstanding sits the vote out), so they cost one small
// metadata request per broker and interval, and no new connection, TLS
// handshake or SASL exchange while the brokers answer.
func WatchFences(ctx context.Context, c Config, opts FenceOptions, log *slog.Logger) {
	every := cmp.Or(opts.Every, time.Second)
	cooldown := cmp.Or(opts.Cooldown, 10*time.Second)
	conf := c.Sarama("fence-watch")
	conf.Net.DialTimeout, conf.Net.ReadTimeout, conf.Net.WriteTimeout = voteConnTimeout, voteConnTimeout, voteConnTimeout
	if opts.adjust != nil {
		opts.adjust(conf)
	}
	v := newVoter(conf, opts.Topic)
	defer v.close()
	seen := &addrSet{m: map[string]bool{}} // every broker a broker has listed
	loop.Every(ctx, every, func() {
		clients := watched.list()
		if len(clients) == 0 {
			return
		}
		vctx, cancel := context.WithTimeout(ctx, every)
		agreed, _, _ := voteWith(vctx, c.Brokers, func(addr string) []string {
			live := v.ask(addr)
			seen.add(live)
			return live
		})
		cancel()
		log.Debug("fence watch: the brokers' vote", "live", agreed)
		// First the process's connections to a broker that some broker
		// has listed but that the vote leaves out are closed, at every
		// vote: a request that waits on one, or on a new one that sarama
		// made since (a lookup that picked that broker), fails now
		// instead of at the read timeout, and releases the locks of its
		// client that it holds while it waits. A dial to it under way
		// (one that its full listen backlog leaves unanswered) is
		// cancelled, for the same reason (see trackingDialer). A
		// bootstrap address that no broker lists (a load balancer's) is
		// never closed.
		if len(agreed) > 0 {
			for _, b := range conns.addrs() {
				if slices.Contains(agreed, b) || !seen.has(b) {
					continue
				}
				if n, d := conns.closeConns(b); n+d > 0 {
					log.Warn("closed this process's connections to a broker that the cluster has fenced", "broker", b, "connections", n, "dials", d)
				}
			}
		}
		// Then each client that still knows such a broker gets the live
		// brokers as its seeds, in a goroutine of its own: a client's
		// lock can be held by a request that waits on the fenced broker,
		// and the watch must go on voting meanwhile.
		now := time.Now()
		for _, fc := range clients {
			if now.Sub(time.Unix(0, fc.rebootstrapped.Load())) < cooldown || !fc.checking.CompareAndSwap(false, true) {
				continue
			}
			go func() {
				defer fc.checking.Store(false)
				var known []string
				for _, b := range fc.Brokers() {
					known = append(known, b.Addr())
				}
				stale := staleBrokers(known, agreed)
				if len(stale) == 0 {
					return
				}
				fc.rebootstrapped.Store(now.UnixNano())
				log.Warn("a Kafka client still knows a broker that the cluster has fenced; giving it the live brokers as its seeds",
					"client_id", fc.Config().ClientID, "fenced", stale, "seeds", agreed)
				clientsRebootstrapped.Inc()
				if err := fc.RefreshBrokers(agreed); err == nil {
					_ = fc.RefreshMetadata()
				}
			}()
		}
	})
}

var clientsRebootstrapped = promauto.NewCounter(prometheus.CounterOpts{
	Name: "profiles_kafka_clients_rebootstrapped_total",
	Help: "Kafka clients given the live brokers as new seeds because they still knew a broker that the cluster had fenced (see kafkax.WatchFences).",
})

// addrSet is a set of broker addresses that many goroutines may use.
type addrSet struct {
	mu sync.Mutex
	m  map[string]bool
}

func (s *addrSet) add(addrs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range addrs {
		s.m[a] = true
	}
}

func (s *addrSet) has(addr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[addr]
}

// voter asks brokers for their metadata on one connection each, kept open
// between votes.
type voter struct {
	conf  *sarama.Config
	topic string

	mu      sync.Mutex
	brokers map[string]*sarama.Broker
	asking  map[string]bool // a request to it is outstanding
}

func newVoter(conf *sarama.Config, topic string) *voter {
	return &voter{conf: conf, topic: topic, brokers: map[string]*sarama.Broker{}, asking: map[string]bool{}}
}

// ask returns the brokers that addr lists, or nil if it did not answer,
// or is still to answer an earlier vote.
func (v *voter) ask(addr string) []string {
	v.mu.Lock()
	if v.asking[addr] {
		v.mu.Unlock()
		return nil
	}
	v.asking[addr] = true
	b := v.brokers[addr]
	if b == nil {
		b = sarama.NewBroker(addr)
		v.brokers[addr] = b
	}
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		delete(v.asking, addr)
		v.mu.Unlock()
	}()
	if ok, _ := b.Connected(); !ok {
		if err := b.Open(v.conf); err != nil {
			return nil
		}
	}
	resp, err := b.GetMetadata(sarama.NewMetadataRequest(v.conf.Version, []string{v.topic}))
	if err != nil {
		_ = b.Close()
		return nil
	}
	live := make([]string, 0, len(resp.Brokers))
	for _, lb := range resp.Brokers {
		live = append(live, lb.Addr())
	}
	slices.Sort(live)
	return live
}

func (v *voter) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, b := range v.brokers {
		_ = b.Close()
	}
}
