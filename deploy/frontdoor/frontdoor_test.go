package frontdoor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"profiles/platform/httpx"
	"profiles/platform/routing"
)

// hit is one request as an upstream saw it.
type hit struct {
	method, path, body string
	contentLength      int64
	header             http.Header
}

// backend is a fake instance of a service. It answers 200 with its name in
// the body and in X-Served-By, and records every request.
type backend struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	hits []hit
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.hits = append(b.hits, hit{r.Method, r.URL.RequestURI(), string(body), r.ContentLength, r.Header.Clone()})
		b.mu.Unlock()
		w.Header().Set("X-Served-By", name)
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) URL() *url.URL { return mustParse(b.srv.URL) }

func (b *backend) Hits() []hit {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]hit(nil), b.hits...)
}

// downURL returns the URL of a server that has been closed: connecting to
// it is refused.
func downURL(t *testing.T) *url.URL {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	u := mustParse(srv.URL)
	srv.Close()
	return u
}

// handlerURL serves h on a fresh server and returns its URL.
func handlerURL(t *testing.T, h http.Handler) *url.URL {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return mustParse(srv.URL)
}

func mustParse(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// frontDoor serves New(cmd, qry) on a real server (so that the client,
// X-Forwarded-* and connections are real) and returns its base URL.
func frontDoor(t *testing.T, cmd, qry []*url.URL) string {
	t.Helper()
	h, err := New(cmd, qry, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func do(t *testing.T, method, url string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func urls(bs ...*backend) []*url.URL {
	out := make([]*url.URL, len(bs))
	for i, b := range bs {
		out[i] = b.URL()
	}
	return out
}

// wantProblem checks that resp is a problem+json of the given status and type.
func wantProblem(t *testing.T, resp *http.Response, body string, status int, typ string) {
	t.Helper()
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != httpx.ProblemContentType {
		t.Fatalf("status %d, Content-Type %q, body %s; want %d %s", resp.StatusCode, resp.Header.Get("Content-Type"), body, status, httpx.ProblemContentType)
	}
	var p httpx.Problem
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatalf("problem body %q: %v", body, err)
	}
	if p.Status != status || p.Type != typ {
		t.Fatalf("problem %+v, want status %d type %s", p, status, typ)
	}
}

func TestRoutingByMethod(t *testing.T) {
	cmd, qry := newBackend(t, "command"), newBackend(t, "query")
	fd := frontDoor(t, urls(cmd), urls(qry))
	tests := []struct {
		method string
		want   *backend
	}{
		{http.MethodGet, qry},
		{http.MethodHead, qry},
		{http.MethodPost, cmd},
		{http.MethodPut, cmd},
		{http.MethodPatch, cmd},
		{http.MethodDelete, cmd},
		{http.MethodOptions, cmd},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			before := len(tt.want.Hits())
			resp, _ := do(t, tt.method, fd+"/api/profile/42?x=1", nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			// Response headers of the upstream reach the client.
			if got := resp.Header.Get("X-Served-By"); got != tt.want.name {
				t.Fatalf("X-Served-By = %q, want %q", got, tt.want.name)
			}
			hits := tt.want.Hits()
			if len(hits) != before+1 {
				t.Fatalf("%s saw %d requests, want %d", tt.want.name, len(hits), before+1)
			}
			h := hits[len(hits)-1]
			if h.method != tt.method || h.path != "/api/profile/42?x=1" {
				t.Fatalf("upstream saw %s %s", h.method, h.path)
			}
			fdHost := strings.TrimPrefix(fd, "http://")
			if h.header.Get("X-Forwarded-Host") != fdHost || h.header.Get("X-Forwarded-Proto") != "http" ||
				h.header.Get("X-Forwarded-For") != "127.0.0.1" {
				t.Fatalf("X-Forwarded-* = %q %q %q", h.header.Get("X-Forwarded-Host"),
					h.header.Get("X-Forwarded-Proto"), h.header.Get("X-Forwarded-For"))
			}
		})
	}
}

func TestRoundRobin(t *testing.T) {
	for _, n := range []int{1, 2, 3} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			t.Run(fmt.Sprintf("%d instances %s", n, method), func(t *testing.T) {
				var cmd, qry []*backend
				for i := range n {
					cmd = append(cmd, newBackend(t, fmt.Sprintf("command-%d", i)))
					qry = append(qry, newBackend(t, fmt.Sprintf("query-%d", i)))
				}
				fd := frontDoor(t, urls(cmd...), urls(qry...))
				side := qry
				if method != http.MethodGet {
					side = cmd
				}
				for i := range 3 * n {
					_, got := do(t, method, fd+"/api/x", nil)
					if want := side[i%n].name; got != want {
						t.Fatalf("request %d served by %q, want %q", i, got, want)
					}
				}
				for _, b := range side {
					if len(b.Hits()) != 3 {
						t.Fatalf("%s saw %d requests, want 3", b.name, len(b.Hits()))
					}
				}
			})
		}
	}
}

func TestFailover(t *testing.T) {
	tests := []struct {
		name   string
		layout string // one letter per instance: u = up, d = down
		method string
	}{
		{"first down GET", "du", http.MethodGet},
		{"first down POST", "du", http.MethodPost},
		{"last down DELETE", "ud", http.MethodDelete},
		{"middle down PUT", "udu", http.MethodPut},
		{"two of three down GET", "ddu", http.MethodGet},
		{"two of three down POST", "dud", http.MethodPost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var list []*url.URL
			var live []*backend
			for i, c := range tt.layout {
				if c == 'd' {
					list = append(list, downURL(t))
					continue
				}
				b := newBackend(t, fmt.Sprintf("instance-%d", i))
				live = append(live, b)
				list = append(list, b.URL())
			}
			fd := frontDoor(t, list, list)
			requests := 2 * len(tt.layout)
			for i := range requests {
				resp, got := do(t, tt.method, fd+"/api/x", strings.NewReader(`{"n":1}`))
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("request %d: status %d, body %s", i, resp.StatusCode, got)
				}
			}
			total := 0
			for _, b := range live {
				total += len(b.Hits())
			}
			if total != requests {
				t.Fatalf("live instances saw %d requests, want %d", total, requests)
			}
		})
	}
}

func TestAllDown(t *testing.T) {
	for _, n := range []int{1, 2, 3} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			t.Run(fmt.Sprintf("%d instances %s", n, method), func(t *testing.T) {
				var list []*url.URL
				for range n {
					list = append(list, downURL(t))
				}
				fd := frontDoor(t, list, list)
				resp, body := do(t, method, fd+"/api/x", strings.NewReader(`{}`))
				wantProblem(t, resp, body, http.StatusBadGateway, "urn:profiles:problem:upstream-unavailable")
				if resp.Header.Get("Retry-After") != "1" {
					t.Fatalf("Retry-After = %q", resp.Header.Get("Retry-After"))
				}
			})
		}
	}
}

// A POST that fails over must reach the live instance with its whole body,
// whether the client sent a Content-Length or a chunked body.
func TestBodyReplayOnFailover(t *testing.T) {
	payload := `{"username":"bob","email":"bob@example.com","bio":"` + strings.Repeat("x", 10_000) + `"}`
	tests := []struct {
		name string
		body func() io.Reader
	}{
		{"content length", func() io.Reader { return strings.NewReader(payload) }},
		{"chunked", func() io.Reader { return io.NopCloser(strings.NewReader(payload)) }}, // unknown length
		{"empty", func() io.Reader { return strings.NewReader("") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			live := newBackend(t, "live")
			cmd := []*url.URL{downURL(t), downURL(t), live.URL()}
			fd := frontDoor(t, cmd, cmd)
			want := ""
			if tt.name != "empty" {
				want = payload
			}
			resp, _ := do(t, http.MethodPost, fd+"/api/profile", tt.body())
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			hits := live.Hits()
			if len(hits) != 1 {
				t.Fatalf("live instance saw %d requests", len(hits))
			}
			if hits[0].body != want || hits[0].contentLength != int64(len(want)) {
				t.Fatalf("upstream got %d bytes (Content-Length %d), want %d", len(hits[0].body), hits[0].contentLength, len(want))
			}
			if hits[0].header.Get("Content-Type") != "application/json" {
				t.Fatalf("Content-Type = %q", hits[0].header.Get("Content-Type"))
			}
		})
	}
}

// Once a write has reached an instance, its answer (or its failure) is
// final: the next instance is never tried. A read whose instance fails
// before answering goes to the next one.
func TestNoRetryOnceSent(t *testing.T) {
	tests := []struct {
		name       string
		first      http.HandlerFunc
		wantStatus int // 0: the client sees a failure, not a status
		wantGet    int // a GET's status, when it differs
	}{
		{"error response passed on", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Served-By", "first")
			httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusServiceUnavailable, "", "", "busy"))
		}, http.StatusServiceUnavailable, 0},
		{"conflict passed on", func(w http.ResponseWriter, r *http.Request) {
			httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusConflict, "email-taken", "", "taken"))
		}, http.StatusConflict, 0},
		{"connection dropped mid-request", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.ReadAll(r.Body)
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				panic(err)
			}
			conn.Close()
		}, http.StatusBadGateway, http.StatusOK},
		{"connection dropped after partial response", func(w http.ResponseWriter, r *http.Request) {
			conn, buf, err := http.NewResponseController(w).Hijack()
			if err != nil {
				panic(err)
			}
			_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
			_ = buf.Flush()
			conn.Close()
		}, 0, 0}, // 0: the client sees the connection drop too
	}
	for _, tt := range tests {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			t.Run(tt.name+" "+method, func(t *testing.T) {
				want := tt.wantStatus
				if method == http.MethodGet && tt.wantGet != 0 {
					want = tt.wantGet
				}
				second := newBackend(t, "second")
				list := []*url.URL{handlerURL(t, tt.first), second.URL()}
				fd := frontDoor(t, list, list)
				req, _ := http.NewRequest(method, fd+"/api/x", strings.NewReader(`{}`))
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				switch {
				case want == 0 && err == nil:
					t.Fatalf("status %d and a whole body, want a failure", resp.StatusCode)
				case want != 0 && err != nil:
					t.Fatal(err)
				case want != 0 && resp.StatusCode != want:
					t.Fatalf("status %d, want %d", resp.StatusCode, want)
				}
				retried := method == http.MethodGet && tt.wantGet != 0
				if n := len(second.Hits()); !retried && n != 0 {
					t.Fatalf("the second instance saw %d requests, want 0", n)
				} else if retried && n != 1 {
					t.Fatalf("the second instance saw %d requests, want the retried read", n)
				}
			})
		}
	}
}

// An instance that answers 503 with routing.HeaderNotServed did nothing
// with the request (it had no owner for its partition: cut off from its
// group, say), so the front door sends it, a write too, to the next
// instance, whose table may name the new owner. When no instance is left,
// the last 503 is passed on, without the internal header.
func TestNotServedIsTriedOnTheNext(t *testing.T) {
	notServed := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set(routing.HeaderNotServed, "cut-off")
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusServiceUnavailable, "partition-unavailable", "", "cut off"))
	}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			second := newBackend(t, "second")
			list := []*url.URL{handlerURL(t, http.HandlerFunc(notServed)), second.URL()}
			fd := frontDoor(t, list, list)
			resp, body := do(t, method, fd+"/api/x", strings.NewReader(`{"a":1}`))
			if resp.StatusCode != http.StatusOK || body != "second" {
				t.Fatalf("status %d body %q; want the second instance's answer", resp.StatusCode, body)
			}
			hits := second.Hits()
			if len(hits) != 1 || (method == http.MethodPost && hits[0].body != `{"a":1}`) {
				t.Fatalf("the second instance saw %+v; want the request once, with its body", hits)
			}

			both := []*url.URL{handlerURL(t, http.HandlerFunc(notServed)), handlerURL(t, http.HandlerFunc(notServed))}
			fd = frontDoor(t, both, both)
			resp, body = do(t, method, fd+"/api/x", strings.NewReader(`{"a":1}`))
			wantProblem(t, resp, body, http.StatusServiceUnavailable, "urn:profiles:problem:partition-unavailable")
			if resp.Header.Get(routing.HeaderNotServed) != "" || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("headers %v; want Retry-After, and no %s", resp.Header, routing.HeaderNotServed)
			}
		})
	}
}

func TestBodyTooLarge(t *testing.T) {
	big := strings.Repeat("x", MaxBody+1)
	tests := []struct {
		name string
		body io.Reader
	}{
		{"content length", strings.NewReader(big)},
		{"chunked", io.NopCloser(strings.NewReader(big))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := newBackend(t, "command")
			fd := frontDoor(t, urls(cmd), urls(cmd))
			resp, body := do(t, http.MethodPost, fd+"/api/profile", tt.body)
			wantProblem(t, resp, body, http.StatusRequestEntityTooLarge, "urn:profiles:problem:body-too-large")
			if n := len(cmd.Hits()); n != 0 {
				t.Fatalf("upstream saw %d requests", n)
			}
		})
	}
	t.Run("at the limit", func(t *testing.T) {
		cmd := newBackend(t, "command")
		fd := frontDoor(t, urls(cmd), urls(cmd))
		resp, _ := do(t, http.MethodPost, fd+"/api/profile", strings.NewReader(big[:MaxBody]))
		if resp.StatusCode != http.StatusOK || len(cmd.Hits()[0].body) != MaxBody {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
}

func TestAnyReady(t *testing.T) {
	ready := handlerURL(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
		}
	}))
	notReady := handlerURL(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	down := downURL(t)
	tests := []struct {
		name      string
		instances []*url.URL
		wantReady bool
	}{
		{"one ready", []*url.URL{ready}, true},
		{"one down", []*url.URL{down}, false},
		{"down then ready", []*url.URL{down, ready}, true},
		{"not ready then ready", []*url.URL{notReady, ready}, true},
		{"ready then down", []*url.URL{ready, down}, true},
		{"none ready", []*url.URL{notReady, down, notReady}, false},
		{"no instances", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := AnyReady(tt.instances)()
			if (err == nil) != tt.wantReady {
				t.Fatalf("AnyReady = %v, want ready %v", err, tt.wantReady)
			}
		})
	}
}

func TestParseURLs(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"http://127.0.0.1:8081", []string{"http://127.0.0.1:8081"}, false},
		{"http://a:8081,http://b:8081", []string{"http://a:8081", "http://b:8081"}, false},
		{" http://a:8081 , ,https://b/base ", []string{"http://a:8081", "https://b/base"}, false},
		{"", nil, true},
		{" , ", nil, true},
		{"127.0.0.1:8081", nil, true},
		{"http://a:8081,a:8082", nil, true},
		{"ftp://a", nil, true},
		{"http://", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseURLs(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i].String() != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestNewNeedsInstances(t *testing.T) {
	one := []*url.URL{mustParse("http://127.0.0.1:1")}
	for _, tt := range []struct {
		name     string
		cmd, qry []*url.URL
	}{{"no command-svc", nil, one}, {"no query-svc", one, nil}} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cmd, tt.qry, slog.New(slog.DiscardHandler)); err == nil {
				t.Fatal("New accepted an empty list")
			}
		})
	}
}

// stubTransport answers for any host, except that connecting to the hosts
// in down fails; it counts the attempts per host.
type stubTransport struct {
	mu    sync.Mutex
	down  map[string]bool
	tries map[string]int
}

func (s *stubTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tries[r.URL.Host]++
	if s.down[r.URL.Host] {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	}
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"X-Served-By": {r.URL.Host}},
		Body: http.NoBody, Request: r}, nil
}

func (s *stubTransport) set(host string, down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down[host] = down
}

func (s *stubTransport) triesOf(host string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tries[host]
}

// An instance that cannot be connected to is tried last for downFor, then
// in turn again; once it answers, it is back in the rotation.
func TestUnreachableInstanceIsTriedLast(t *testing.T) {
	stub := &stubTransport{down: map[string]bool{"a": true}, tries: map[string]int{}}
	p := newPool("svc", []*url.URL{mustParse("http://a"), mustParse("http://b"), mustParse("http://c")},
		stub, slog.New(slog.DiscardHandler))
	now := time.Unix(1000, 0)
	p.now, p.epoch = func() time.Time { return now }, now
	send := func() string {
		t.Helper()
		w := httptest.NewRecorder()
		p.serve(w, httptest.NewRequest(http.MethodPost, "/api/x", strings.NewReader("{}")), []byte("{}"))
		if w.Code != http.StatusOK {
			t.Fatalf("status %d", w.Code)
		}
		return w.Header().Get("X-Served-By")
	}
	steps := []struct {
		name      string
		advance   time.Duration
		aDown     bool
		requests  int
		wantTries int // connection attempts to a, in total, after the step
	}{
		{"a is down: tried once, then skipped", 0, true, 9, 1},
		{"still within downFor", downFor - time.Millisecond, true, 9, 1},
		{"after downFor a is tried again, once", 2 * time.Millisecond, true, 9, 2},
		{"a is back: in turn again after downFor", downFor + time.Millisecond, false, 9, 2 + 3},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		stub.set("a", st.aDown)
		served := map[string]int{}
		for range st.requests {
			served[send()]++
		}
		if got := stub.triesOf("a"); got != st.wantTries {
			t.Fatalf("%s: %d attempts to a, want %d (served %v)", st.name, got, st.wantTries, served)
		}
		if st.aDown && served["a"] != 0 {
			t.Fatalf("%s: a served %d requests while down", st.name, served["a"])
		}
		if served["b"] == 0 || served["c"] == 0 {
			t.Fatalf("%s: served %v", st.name, served)
		}
	}
}

// Many concurrent requests are spread exactly evenly.
func TestRoundRobinConcurrent(t *testing.T) {
	bs := []*backend{newBackend(t, "q0"), newBackend(t, "q1"), newBackend(t, "q2")}
	fd := frontDoor(t, urls(bs...), urls(bs...))
	var wg sync.WaitGroup
	for range 60 {
		wg.Go(func() {
			resp, err := http.Get(fd + "/api/x")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		})
	}
	wg.Wait()
	for _, b := range bs {
		if n := len(b.Hits()); n != 20 {
			t.Fatalf("%s saw %d requests, want 20", b.name, n)
		}
	}
}

func TestInternalHeadersFromClientsAreDropped(t *testing.T) {
	var seen http.Header
	up := handlerURL(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
	}))
	fd := frontDoor(t, []*url.URL{up}, []*url.URL{up})
	req, _ := http.NewRequest(http.MethodPost, fd+"/api/profile", strings.NewReader("{}"))
	req.Header.Set("X-Profiles-Uid", "00000000-0000-4000-8000-000000000000")
	req.Header.Set("X-Profiles-Forwarded-By", "someone")
	req.Header.Set("X-Request-Id", "kept")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if seen.Get("X-Profiles-Uid") != "" || seen.Get("X-Profiles-Forwarded-By") != "" || seen.Get("X-Request-Id") != "kept" {
		t.Fatalf("upstream saw %v", seen)
	}
}

// The change stream reaches the client event by event, outlives the front
// door's write timeout, and ends when the client goes (upstream too) or at
// StopStreams.
func TestChangeStream(t *testing.T) {
	var (
		mu       sync.Mutex
		lastIDs  []string
		upClosed = make(chan struct{}, 10)
	)
	release := make(chan struct{})
	up := handlerURL(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != StreamPath {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-Served-By", "query")
		rc := http.NewResponseController(w)
		_, _ = io.WriteString(w, "id: g1:0=0\nevent: ready\ndata: {}\n\n")
		_ = rc.Flush()
		select { // the next event only once the client has the first
		case <-release:
		case <-r.Context().Done():
			upClosed <- struct{}{}
			return
		}
		for i := 1; ; i++ {
			if _, err := fmt.Fprintf(w, "id: g1:0=%d\nevent: profile\ndata: {}\n\n", i); err != nil || rc.Flush() != nil {
				upClosed <- struct{}{}
				return
			}
			select {
			case <-time.After(50 * time.Millisecond):
			case <-r.Context().Done():
				upClosed <- struct{}{}
				return
			}
		}
	}))
	stop := make(chan struct{})
	h, err := New([]*url.URL{downURL(t)}, []*url.URL{downURL(t), up}, slog.New(slog.DiscardHandler), StopStreams(stop))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.WriteTimeout = 300 * time.Millisecond // far below the stream's life
	srv.Start()
	t.Cleanup(srv.Close)

	open := func() (*http.Response, *bufio.Reader, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+StreamPath, nil)
		req.Header.Set("Last-Event-ID", "g1:0=0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("X-Served-By") != "query" {
			t.Fatalf("%d %v", resp.StatusCode, resp.Header)
		}
		return resp, bufio.NewReader(resp.Body), cancel
	}
	readEvent := func(br *bufio.Reader) (string, error) {
		var ev strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return ev.String(), err
			}
			if line == "\n" {
				return ev.String(), nil
			}
			ev.WriteString(line)
		}
	}

	resp, br, cancel := open()
	got := make(chan string, 1)
	go func() { ev, _ := readEvent(br); got <- ev }()
	select {
	case ev := <-got:
		if !strings.HasPrefix(ev, "id: g1:0=0\nevent: ready") {
			t.Fatalf("first event %q", ev)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the first event was held back by the front door")
	}
	close(release)
	deadline := time.Now().Add(700 * time.Millisecond) // past the write timeout
	for n := 1; time.Now().Before(deadline); n++ {
		ev, err := readEvent(br)
		if err != nil || !strings.HasPrefix(ev, fmt.Sprintf("id: g1:0=%d\n", n)) {
			t.Fatalf("event %d: %q %v", n, ev, err)
		}
	}
	mu.Lock()
	if len(lastIDs) != 1 || lastIDs[0] != "g1:0=0" {
		t.Fatalf("upstream saw Last-Event-ID %v", lastIDs)
	}
	mu.Unlock()
	// The client goes: the upstream's stream ends too.
	cancel()
	resp.Body.Close()
	select {
	case <-upClosed:
	case <-time.After(3 * time.Second):
		t.Fatal("the upstream stream outlived its client")
	}

	// StopStreams ends a stream for the client and the upstream.
	resp, br, cancel = open()
	defer cancel()
	defer resp.Body.Close()
	if _, err := readEvent(br); err != nil {
		t.Fatal(err)
	}
	close(stop)
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := readEvent(br); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case <-ended:
	case <-time.After(3 * time.Second):
		t.Fatal("the stream outlived StopStreams")
	}
	select {
	case <-upClosed:
	case <-time.After(3 * time.Second):
		t.Fatal("the upstream stream outlived StopStreams")
	}
}
