package kafkax

import (
	"context"
	"net"
	"sync"

	"github.com/IBM/sarama"
)

// trackingDialer dials the brokers for every sarama client of the process
// (Config.Sarama sets it as the client's dialer, with sarama's own
// timeouts) and keeps the connections it made, and the dials still under
// way, by address, so that closeConns can end those to a broker the
// cluster has fenced.
//
// sarama cannot end a request that a broker does not answer before the
// connection's read timeout: a client's Close of the broker waits for the
// lock that the request holds while it waits. Closing the socket under it
// ends the wait at once, with an error that the client's retries handle.
//
// A dial holds that lock too (sarama's Broker.Open), for up to the dial
// timeout: a frozen broker's kernel still completes connections until
// its listen backlog is full, and then leaves every new one unanswered.
// While such a dial waits, every request of that client to the broker
// (fetches, metadata, coordinator lookups) waits behind it; cancelling
// the dial ends them all.
type trackingDialer struct{ d *net.Dialer }

func (t trackingDialer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := conns.dialing(addr, cancel)
	c, err := t.d.DialContext(ctx, network, addr)
	done()
	if err != nil {
		return nil, err
	}
	return conns.add(addr, c), nil
}

// connSet is the process's open broker connections, and its dials under
// way, by address.
type connSet struct {
	mu     sync.Mutex
	byAddr map[string]map[*trackedConn]struct{}
	dials  map[string]map[*pendingDial]struct{}
}

var conns = newConnSet()

func newConnSet() *connSet {
	return &connSet{byAddr: map[string]map[*trackedConn]struct{}{}, dials: map[string]map[*pendingDial]struct{}{}}
}

// pendingDial is a dial under way; cancel ends it.
type pendingDial struct{ cancel context.CancelFunc }

type trackedConn struct {
	net.Conn
	addr string
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { conns.remove(c) })
	return c.Conn.Close()
}

func (s *connSet) add(addr string, c net.Conn) *trackedConn {
	tc := &trackedConn{Conn: c, addr: addr}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byAddr[addr] == nil {
		s.byAddr[addr] = map[*trackedConn]struct{}{}
	}
	s.byAddr[addr][tc] = struct{}{}
	return tc
}

func (s *connSet) remove(c *trackedConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byAddr[c.addr], c)
	if len(s.byAddr[c.addr]) == 0 {
		delete(s.byAddr, c.addr)
	}
}

// dialing records a dial to addr under way, which closeConns(addr) ends
// by calling cancel; the dial calls the returned func once it returns.
func (s *connSet) dialing(addr string, cancel context.CancelFunc) (done func()) {
	d := &pendingDial{cancel: cancel}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dials[addr] == nil {
		s.dials[addr] = map[*pendingDial]struct{}{}
	}
	s.dials[addr][d] = struct{}{}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.dials[addr], d)
		if len(s.dials[addr]) == 0 {
			delete(s.dials, addr)
		}
	}
}

// addrs returns the addresses that the process has connections or dials
// under way to.
func (s *connSet) addrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.byAddr)+len(s.dials))
	for a := range s.byAddr {
		out = append(out, a)
	}
	for a := range s.dials {
		if s.byAddr[a] == nil {
			out = append(out, a)
		}
	}
	return out
}

// closeConns closes every connection of the process to addr, cancels
// every dial to it under way, and returns how many of each it ended.
func (s *connSet) closeConns(addr string) (closed, cancelled int) {
	s.mu.Lock()
	open := make([]*trackedConn, 0, len(s.byAddr[addr]))
	for c := range s.byAddr[addr] {
		open = append(open, c)
	}
	dials := make([]*pendingDial, 0, len(s.dials[addr]))
	for d := range s.dials[addr] {
		dials = append(dials, d)
	}
	s.mu.Unlock()
	for _, d := range dials {
		d.cancel()
	}
	for _, c := range open {
		_ = c.Close()
	}
	return len(open), len(dials)
}

// trackConns makes sc dial through trackingDialer, with the timeouts sc
// already has, unless sc dials through a dialer of its own already.
func trackConns(sc *sarama.Config) {
	if sc.Net.Proxy.Enable {
		return
	}
	sc.Net.Proxy.Enable = true
	sc.Net.Proxy.Dialer = trackingDialer{&net.Dialer{Timeout: sc.Net.DialTimeout, KeepAlive: sc.Net.KeepAlive, LocalAddr: sc.Net.LocalAddr}}
}
