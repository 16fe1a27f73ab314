package ports_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"profiles/events"
	"profiles/platform/peer"
	"profiles/query-svc/internal/app"
	"profiles/query-svc/internal/ports"
)

const uid = "74292b21-0fbb-4f1d-a18f-fa80f947fa5d"

type local struct{}

func (local) Handler(_ func(*http.Request) (int32, bool), h http.Handler) http.Handler { return h }

type historyFunc func(app.GetHistory) ([]app.HistoryEntry, error)

func (f historyFunc) Handle(_ context.Context, q app.GetHistory) ([]app.HistoryEntry, error) {
	return f(q)
}

func server(t *testing.T, f historyFunc) *httptest.Server {
	t.Helper()
	r := mux.NewRouter()
	ports.HTTP{
		Queries:     ports.Queries{GetHistory: f},
		Routing:     local{},
		PartitionOf: func(string) int32 { return 0 },
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}.Register(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv
}

func TestGetHistory(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var asked app.GetHistory
	srv := server(t, func(q app.GetHistory) ([]app.HistoryEntry, error) {
		asked = q
		switch q.MinVersion {
		case 7:
			return nil, app.ErrNotYet
		}
		if q.UID != uid {
			return nil, app.ErrNotFound
		}
		return []app.HistoryEntry{
			{Type: events.TypeProfileCreated, Version: 1, OccurredAt: at, Changes: map[string]json.RawMessage{"username": []byte(`"bob"`)}},
			{Type: events.TypeProfileDeleted, Version: 2, OccurredAt: at, Changes: map[string]json.RawMessage{}},
		}, nil
	})
	tests := []struct {
		name, path  string
		status      int
		contentType string
		body        string
	}{
		{"history", "/api/profile/" + uid + "/history?minVersion=2", 200, "application/json",
			`{"uid":"` + uid + `","events":[{"type":"ProfileCreated","version":1,"occurredAt":"2026-01-02T03:04:05Z","changes":{"username":"bob"}},` +
				`{"type":"ProfileDeleted","version":2,"occurredAt":"2026-01-02T03:04:05Z","changes":{}}]}`},
		{"unknown uid", "/api/profile/00000000-0000-4000-8000-000000000000/history", 404, "application/problem+json", ""},
		{"malformed uid", "/api/profile/nope/history", 400, "application/problem+json", ""},
		{"malformed minVersion", "/api/profile/" + uid + "/history?minVersion=-1", 400, "application/problem+json", ""},
		{"version not reached", "/api/profile/" + uid + "/history?minVersion=7", 503, "application/problem+json", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != tt.contentType {
				t.Fatalf("%s = %d %s %s", tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), b)
			}
			if tt.body != "" {
				var got, want any
				if json.Unmarshal(b, &got) != nil || json.Unmarshal([]byte(tt.body), &want) != nil {
					t.Fatalf("body %s", b)
				}
				if g, _ := json.Marshal(got); string(g) != string(mustJSON(want)) {
					t.Fatalf("body = %s\nwant %s", b, tt.body)
				}
			}
		})
	}
	if asked.UID != uid || asked.MinVersion != 7 {
		t.Fatalf("last query = %+v", asked)
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// Waits is true for every read whose query may name minVersion.
func TestWaits(t *testing.T) {
	for target, want := range map[string]bool{
		"/api/profile/u":                      false,
		"/api/profile/u?":                     false,
		"/api/search?email=a@b.c":             false,
		"/api/profile/u?minVersion=3":         true,
		"/api/search?email=a@b.c&minVersion=": true,
		"/api/profile/u?min%56ersion=3":       true,
		"/api/search?email=a%40b.c":           true,
	} {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		if got := ports.Waits(r); got != want {
			t.Errorf("%s: Waits %t, want %t", target, got, want)
		}
		if r.URL.Query().Has("minVersion") && !ports.Waits(r) {
			t.Errorf("%s: names minVersion, and Waits says no", target)
		}
	}
}

type waitFunc func(app.WaitVisible) error

func (f waitFunc) Handle(_ context.Context, q app.WaitVisible) error { return f(q) }

type emailKeys struct{}

func (emailKeys) EmailKey(email string) string { return "email:" + email }

// GET peer.RouteVisible answers 204 once visible, 503 while not yet, and
// 400 for a wait it cannot serve here: no version, or an email whose index
// entry is in another partition than the uid.
func TestWaitVisible(t *testing.T) {
	var asked app.WaitVisible
	r := mux.NewRouter()
	ports.HTTP{
		Queries: ports.Queries{WaitVisible: waitFunc(func(q app.WaitVisible) error {
			asked = q
			if q.MinVersion == 9 {
				return app.ErrNotYet
			}
			return nil
		})},
		Routing: local{},
		PartitionOf: func(key string) int32 {
			if key == "email:far@b.c" {
				return 1
			}
			return 0
		},
		EmailKey: emailKeys{},
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}.Register(r)
	srv := httptest.NewServer(r)
	defer srv.Close()
	for _, tt := range []struct {
		path   string
		status int
	}{
		{peer.VisiblePath(uid, 3, []string{"a@b.c", "c@d.e"}), http.StatusNoContent},
		{peer.VisiblePath(uid, 3, nil), http.StatusNoContent},
		{peer.VisiblePath(uid, 9, []string{"a@b.c"}), http.StatusServiceUnavailable},
		{peer.VisiblePath(uid, 3, []string{"far@b.c"}), http.StatusBadRequest},
		{peer.VisiblePath(uid, 3, []string{"not an email"}), http.StatusBadRequest},
		{peer.VisiblePath(uid, 0, []string{"a@b.c"}), http.StatusBadRequest},
		{peer.VisiblePath("nope", 3, nil), http.StatusBadRequest},
	} {
		resp, err := http.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s = %d %s, want %d", tt.path, resp.StatusCode, b, tt.status)
		}
	}
	// The last wait that reached the query (the one answered 503).
	if asked.UID != uid || asked.MinVersion != 9 || len(asked.Emails) != 1 || asked.Emails[0] != "a@b.c" {
		t.Fatalf("last query = %+v", asked)
	}
}
