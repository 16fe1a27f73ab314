package kafkax

import (
	"net"
	"sync"

	"github.com/IBM/sarama"
)

// trackingDialer dials the brokers for every sarama client of the process
// (Config.Sarama sets it as the client's dialer, with sarama's own
// timeouts) and keeps the connections it made by address, so that
// closeConns can close those to a broker the cluster has fenced.
//
// sarama cannot end a request that a broker does not answer before the
// connection's read timeout: a client's Close of the broker waits for the
// lock that the request holds while it waits. Closing the socket under it
// ends the wait at once, with an error that the client's retries handle.
type trackingDialer struct{ d *net.Dialer }

func (t trackingDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := t.d.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	return conns.add(addr, c), nil
}

// connSet is the process's open broker connections, by address.
type connSet struct {
	mu     sync.Mutex
	byAddr map[string]map[*trackedConn]struct{}
}

var conns = &connSet{byAddr: map[string]map[*trackedConn]struct{}{}}

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

// addrs returns the addresses that the process has connections to.
func (s *connSet) addrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.byAddr))
	for a := range s.byAddr {
		out = append(out, a)
	}
	return out
}

// closeConns closes every connection of the process to addr and returns
// how many it closed.
func (s *connSet) closeConns(addr string) int {
	s.mu.Lock()
	open := make([]*trackedConn, 0, len(s.byAddr[addr]))
	for c := range s.byAddr[addr] {
		open = append(open, c)
	}
	s.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
	return len(open)
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
