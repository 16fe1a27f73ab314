package httpx

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The tests of this file run a real server (NewServerWith, Serve, a TCP
// listener on 127.0.0.1) against hostile clients, with the timeouts
// shortened so that they run in about a second.

// testTimeouts are short, but far apart from each other, so that each test
// can tell which one ended a connection.
var testTimeouts = Timeouts{
	ReadHeader: 300 * time.Millisecond,
	Read:       700 * time.Millisecond,
	Write:      5 * time.Second,
	Idle:       5 * time.Second,
}

// startServer serves h like service.Run does, with the given timeouts, until
// the test ends, and returns its address.
func startServer(t *testing.T, h http.Handler, to Timeouts) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, NewServerWith(h, to), ln, time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// dial opens a raw connection to addr, closed when the test ends.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// slowClient writes a request to a raw connection: a part at once, then the
// rest one byte every interval, until the server ends the connection.
type slowClient struct {
	start   time.Time
	closed  chan struct{} // closed when the server has ended the connection
	elapsed time.Duration // from the dial to the end; set before closed
	err     error         // how the read ended: nil for EOF
}

func startSlowClient(t *testing.T, addr, atOnce, slowly string, interval time.Duration) *slowClient {
	t.Helper()
	c := &slowClient{start: time.Now(), closed: make(chan struct{})}
	conn := dial(t, addr)
	go func() {
		if _, err := io.WriteString(conn, atOnce); err != nil {
			return
		}
		for i := 0; i < len(slowly); i++ {
			select {
			case <-c.closed:
				return
			case <-time.After(interval):
			}
			if _, err := conn.Write([]byte{slowly[i]}); err != nil {
				return
			}
		}
	}()
	go func() {
		// A hard stop, in case the server never closes the connection.
		_ = conn.SetReadDeadline(c.start.Add(10 * time.Second))
		_, c.err = io.Copy(io.Discard, conn) // a response (408, 400) may come first
		c.elapsed = time.Since(c.start)
		close(c.closed)
	}()
	return c
}

type bodyRead struct {
	n   int
	err error
}

func TestServerClosesSlowClients(t *testing.T) {
	to := testTimeouts
	const bodyLen = 200
	pad := strings.Repeat("a", 200) // at 20 ms a byte, 4 s: far beyond every timeout
	tests := []struct {
		name   string
		atOnce string
		slowly string
		limit  time.Duration // the timeout that must end the connection
	}{
		{"request line trickled past ReadHeaderTimeout", "",
			"GET /ok?" + pad + " HTTP/1.1\r\nHost: x\r\n\r\n", to.ReadHeader},
		{"headers trickled past ReadHeaderTimeout", "GET /ok HTTP/1.1\r\nHost: x\r\n",
			"X-Pad: " + pad + "\r\n\r\n", to.ReadHeader},
		{"body trickled past ReadTimeout",
			fmt.Sprintf("POST /body HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", bodyLen),
			strings.Repeat("x", bodyLen), to.Read},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var served atomic.Int32
			reads := make(chan bodyRead, 1)
			mux := http.NewServeMux()
			mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) {
				served.Add(1)
				w.WriteHeader(http.StatusOK)
			})
			mux.HandleFunc("POST /body", func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				reads <- bodyRead{len(b), err}
				w.WriteHeader(http.StatusBadRequest)
			})
			addr := startServer(t, mux, to)
			slow := startSlowClient(t, addr, tt.atOnce, tt.slowly, 20*time.Millisecond)

			// Meanwhile, a normal client is served at once.
			time.Sleep(to.ReadHeader / 3)
			client := &http.Client{Timeout: 5 * time.Second}
			resp, err := client.Get("http://" + addr + "/ok")
			if err != nil {
				t.Fatalf("normal client: %v", err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("normal client got %d", resp.StatusCode)
			}
			select {
			case <-slow.closed:
				t.Fatalf("the slow connection ended after %v, before the normal client was served", slow.elapsed)
			default:
			}

			<-slow.closed
			var ne net.Error
			if errors.As(slow.err, &ne) && ne.Timeout() {
				t.Fatalf("the server did not end the slow connection within %v", slow.elapsed)
			}
			if slow.elapsed < tt.limit/2 || slow.elapsed > 3*tt.limit {
				t.Fatalf("the slow connection ended after %v, want about %v (%v)", slow.elapsed, tt.limit, slow.err)
			}
			if n := served.Load(); n != 1 {
				t.Fatalf("GET /ok served %d times, want once (the normal client only)", n)
			}
			if tt.limit == to.Read {
				select {
				case got := <-reads:
					if got.err == nil || got.n >= bodyLen {
						t.Fatalf("the handler read %d of %d bytes, err %v: want an incomplete body", got.n, bodyLen, got.err)
					}
				case <-time.After(3 * to.Read):
					t.Fatal("the handler never finished reading the body")
				}
			}
		})
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.ReadCloser
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

func TestServerRejectsHugeBody(t *testing.T) {
	const size = 10 << 20
	tests := []struct {
		name    string
		chunked bool
	}{
		{"10 MiB with Content-Length", false},
		{"10 MiB chunked", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type outcome struct {
				status int
				read   int64
			}
			outcomes := make(chan outcome, 1)
			addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body := &countingReader{r: r.Body}
				r.Body = body
				var dst struct {
					Name string `json:"name"`
				}
				p := DecodeJSON(w, r, 0, &dst)
				if p == nil {
					p = NewProblem(http.StatusOK, "", "", "")
				}
				WriteProblem(w, r, p)
				outcomes <- outcome{p.Status, body.n.Load()}
			}), testTimeouts)

			conn := dial(t, addr)
			go func() {
				// Write until done or until the server closes the connection.
				w := bufio.NewWriter(conn)
				if tt.chunked {
					fmt.Fprint(w, "POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
				} else {
					fmt.Fprintf(w, "POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", size)
				}
				part := func(s string) error { // one chunk when chunked
					if tt.chunked {
						fmt.Fprintf(w, "%x\r\n%s\r\n", len(s), s)
					} else {
						_, _ = w.WriteString(s)
					}
					return w.Flush()
				}
				if part(`{"name":"`) != nil {
					return
				}
				chunk := strings.Repeat("x", 64<<10)
				for sent := 9; sent < size-2; sent += len(chunk) {
					if part(chunk[:min(len(chunk), size-2-sent)]) != nil {
						return
					}
				}
				if part(`"}`) != nil {
					return
				}
				if tt.chunked {
					fmt.Fprint(w, "0\r\n\r\n")
				}
				_ = w.Flush()
			}()

			select {
			case got := <-outcomes:
				if got.status != http.StatusRequestEntityTooLarge {
					t.Fatalf("handler answered %d, want 413", got.status)
				}
				// MaxBytesReader reads at most one byte past the limit.
				if got.read > DefaultMaxBody+1 {
					t.Fatalf("the handler read %d bytes of the body, more than the limit %d", got.read, DefaultMaxBody)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the handler did not answer")
			}

			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				// The server may reset the connection while the client
				// still writes; the handler's 413 was checked above.
				t.Logf("no response read (the connection was cut): %v", err)
				return
			}
			defer func() { _ = resp.Body.Close() }()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("Content-Type") != ProblemContentType {
				t.Fatalf("response %d %q, want 413 %s", resp.StatusCode, resp.Header.Get("Content-Type"), ProblemContentType)
			}
			var p Problem
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
				t.Fatalf("413 body: %v", err)
			}
			if p.Status != http.StatusRequestEntityTooLarge || p.Type != "urn:profiles:problem:body-too-large" {
				t.Fatalf("413 problem %+v", p)
			}
		})
	}
}

func TestServerRejectsHugeHeaders(t *testing.T) {
	big := strings.Repeat("a", 100<<10)
	var many strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&many, "X-H%d: %s\r\n", i, strings.Repeat("b", 40))
	}
	tests := []struct {
		name       string
		request    string
		wantStatus int
	}{
		{"headers within MaxHeaderBytes are served", "GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + big[:MaxHeaderBytes-1024] + "\r\n\r\n", http.StatusOK},
		{"one 100 KiB header", "GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge},
		{"2000 headers, 100 KiB in all", "GET /ok HTTP/1.1\r\nHost: x\r\n" + many.String() + "\r\n", http.StatusRequestHeaderFieldsTooLarge},
		{"a 100 KiB request line", "GET /ok?" + big + " HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusOK)
			}), testTimeouts)
			conn := dial(t, addr)
			go func() { _, _ = io.WriteString(conn, tt.request) }() // the server may stop reading
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
		})
	}
}

// NewServer keeps its limits; NewServerWith only changes the timeouts.
func TestNewServerDefaults(t *testing.T) {
	srv := NewServer(http.NotFoundHandler())
	if srv.ReadHeaderTimeout != 5*time.Second || srv.ReadTimeout != 15*time.Second || srv.WriteTimeout != 60*time.Second ||
		srv.IdleTimeout != 120*time.Second || srv.MaxHeaderBytes != 64<<10 || srv.Handler == nil {
		t.Fatalf("NewServer = %+v", srv)
	}
	short := NewServerWith(http.NotFoundHandler(), testTimeouts)
	if short.ReadHeaderTimeout != testTimeouts.ReadHeader || short.ReadTimeout != testTimeouts.Read ||
		short.WriteTimeout != testTimeouts.Write || short.IdleTimeout != testTimeouts.Idle || short.MaxHeaderBytes != MaxHeaderBytes {
		t.Fatalf("NewServerWith = %+v", short)
	}
}

// A shutdown that runs out of grace says how many requests it cuts off.
func TestServeSaysWhatTheGraceCutOff(t *testing.T) {
	var logs bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	defer slog.SetDefault(old)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	srv := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
	}))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, srv, ln, 100*time.Millisecond) }()
	go func() { _, _ = http.Get("http://" + ln.Addr().String()) }()
	<-started
	stop()
	<-done
	if !strings.Contains(logs.String(), "requests still running after the shutdown grace are cut off") || !strings.Contains(logs.String(), "requests=1") {
		t.Fatalf("the log after a shutdown past its grace:\n%s", logs.String())
	}
}
