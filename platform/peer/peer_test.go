package peer

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"profiles/events"
)

// The bodies keep the JSON both sides spoke before they shared the types.
func TestBodiesKeepTheirJSON(t *testing.T) {
	b, _ := json.Marshal(ProfileState{UID: "u", Username: "n", Email: "e", Version: 3})
	if want := `{"deleted":false,"email":"e","uid":"u","username":"n","version":3}`; string(b) != want {
		t.Fatalf("ProfileState = %s, want %s", b, want)
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b, _ = json.Marshal(ViewStatus{Instance: "q1", State: "done", Generation: 2, StartedAt: &at, Partitions: 4, Records: 9})
	if want := `{"instance":"q1","state":"done","generation":2,"startedAt":"2026-01-01T00:00:00Z","partitions":4,"behind":0,"records":9}`; string(b) != want {
		t.Fatalf("ViewStatus = %s, want %s", b, want)
	}
}

type fakeClaims struct{ err error }

func (f fakeClaims) Claim(context.Context, string, string) error   { return f.err }
func (f fakeClaims) Release(context.Context, string, string) error { return f.err }

type fakeStates map[string]events.Profile

func (f fakeStates) Get(uid string) (events.Profile, error) { return f[uid], nil }

var errBusy = errors.New("busy")

func TestClientAndHandlers(t *testing.T) {
	const uid = "74292b21-0fbb-4f1d-a18f-fa80f947fa5d"
	claims := &fakeClaims{}
	fail := func(w http.ResponseWriter, _ *http.Request, err error) {
		if errors.Is(err, errBusy) {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusConflict)
	}
	r := mux.NewRouter()
	r.Handle(PathClaims, ClaimsHandler(claims, fail))
	r.Handle(RouteProfile, ProfileHandler(fakeStates{uid: {UID: uid, Username: "bob", Email: "b@m.c", Version: 2}}, slog.Default()))
	srv := httptest.NewServer(r)
	defer srv.Close()
	c := Client{HTTP: srv.Client()}
	ctx := context.Background()

	if err := c.Claim(ctx, srv.URL, ClaimRequest{Email: "b@m.c", UID: uid}); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	claims.err = errors.New("taken")
	if err := c.Release(ctx, srv.URL, ClaimRequest{Email: "b@m.c", UID: uid}); !errors.Is(err, ErrClaimTaken) {
		t.Fatalf("Release refused: %v, want ErrClaimTaken", err)
	}
	claims.err = errBusy
	var se *StatusError
	if err := c.Claim(ctx, srv.URL, ClaimRequest{Email: "b@m.c", UID: uid}); !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable {
		t.Fatalf("Claim unavailable: %v, want a 503 StatusError", err)
	}
	if err := c.Claim(ctx, srv.URL, ClaimRequest{Email: "b@m.c", UID: "not-a-uid"}); !errors.As(err, &se) || se.Code != http.StatusUnprocessableEntity {
		t.Fatalf("Claim of an invalid uid: %v, want a 422 StatusError", err)
	}
	p, err := c.Profile(ctx, srv.URL, uid)
	if err != nil || p.UID != uid || p.Username != "bob" || p.Version != 2 {
		t.Fatalf("Profile = %+v, %v", p, err)
	}
	if _, err := c.Profile(ctx, srv.URL, "x"); !errors.As(err, &se) || se.Code != http.StatusBadRequest {
		t.Fatalf("Profile of an invalid uid: %v, want a 400 StatusError", err)
	}
}

type fakeRebuilder struct{ err error }

func (f fakeRebuilder) Rebuild() error { return f.err }
func (f fakeRebuilder) RebuildStatus() ViewStatus {
	return ViewStatus{State: "rebuilding", Partitions: 3, Behind: 1}
}

func TestRebuildHandlersNameTheInstance(t *testing.T) {
	r := mux.NewRouter()
	fail := func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusConflict) }
	r.Handle(PathViewRebuild, StartRebuildHandler(fakeRebuilder{}, "q1", fail)).Methods(http.MethodPost)
	r.Handle(PathViewRebuild, RebuildStatusHandler(fakeRebuilder{}, "q1")).Methods(http.MethodGet)
	srv := httptest.NewServer(r)
	defer srv.Close()
	c := Client{HTTP: srv.Client()}
	if err := c.StartRebuild(context.Background(), srv.URL+"/"); err != nil {
		t.Fatalf("StartRebuild: %v", err)
	}
	st, err := c.ViewStatus(context.Background(), srv.URL)
	if err != nil || st.Instance != "q1" || st.State != "rebuilding" || st.Behind != 1 {
		t.Fatalf("ViewStatus = %+v, %v", st, err)
	}
}
