package kafkax

import (
	"errors"
	"net"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// A connection the tracking dialer made is closed by closeConns of its
// address, and no longer counted once closed.
func TestCloseConnsClosesTheConnectionsToAnAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	addr := ln.Addr().String()
	d := trackingDialer{&net.Dialer{Timeout: 5 * time.Second}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(conns.addrs(), addr) {
		t.Fatalf("addrs %v does not hold %s", conns.addrs(), addr)
	}
	if closed, cancelled := conns.closeConns(addr); closed != 1 || cancelled != 0 {
		t.Fatalf("closeConns = %d closed, %d cancelled; want 1, 0", closed, cancelled)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("a write on the closed connection: %v, want net.ErrClosed", err)
	}
	if slices.Contains(conns.addrs(), addr) {
		t.Errorf("addrs %v still holds %s", conns.addrs(), addr)
	}
}

// A dial that the broker leaves unanswered (a frozen broker whose listen
// backlog is full) ends as soon as closeConns is called for its address,
// not at the dial timeout: while it waits, sarama holds the lock of the
// broker that every other request to it waits for.
func TestCloseConnsCancelsADialThatIsNotAnswered(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SKIP: needs Linux's handling of a full listen backlog (a connection beyond it is left unanswered)")
	}
	addr, held := unansweredListener(t)
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	d := trackingDialer{&net.Dialer{Timeout: 30 * time.Second}}
	type result struct {
		err  error
		took time.Duration
	}
	out := make(chan result, 1)
	go func() {
		t0 := time.Now()
		c, err := d.Dial("tcp", addr)
		if c != nil {
			c.Close()
		}
		out <- result{err, time.Since(t0)}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(conns.addrs(), addr) {
		if time.Now().After(deadline) {
			t.Fatalf("the dial to %s is not under way after 5 s", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the dial waits for its SYN's answer
	select {
	case r := <-out:
		t.Fatalf("the dial returned before it was cancelled (%v after %s): the backlog was not full", r.err, r.took)
	default:
	}
	if closed, cancelled := conns.closeConns(addr); closed != 0 || cancelled != 1 {
		t.Fatalf("closeConns = %d closed, %d cancelled; want 0, 1", closed, cancelled)
	}
	select {
	case r := <-out:
		if r.err == nil {
			t.Fatal("the cancelled dial succeeded")
		}
		t.Logf("the dial ended %s after it began: %v", r.took, r.err)
	case <-time.After(2 * time.Second):
		t.Fatal("the dial did not end within 2 s of closeConns")
	}
	if slices.Contains(conns.addrs(), addr) {
		t.Errorf("addrs %v still holds %s", conns.addrs(), addr)
	}
}

// unansweredListener returns the address of a socket that listens with
// the smallest backlog and never accepts, and the connections that fill
// that backlog: the kernel leaves the next connection's SYN unanswered.
func unansweredListener(t *testing.T) (string, []net.Conn) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	var held []net.Conn
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return addr, held // the backlog is full
		}
		held = append(held, c)
	}
	for _, c := range held {
		c.Close()
	}
	t.Skipf("SKIP: %d connections to a listener with a backlog of 0 were all accepted by the kernel; cannot make a dial that is left unanswered", len(held))
	return "", nil
}
