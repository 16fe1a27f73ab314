package ports

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"profiles/command-svc/internal/app"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/routing"
	"profiles/platform/service"
)

// overloaded answers every command with app.ErrOverloaded, as the use
// cases do when the instance has its bound of writes in flight, and
// counts the commands it got.
type overloaded struct{ n *atomic.Int64 }

func (o overloaded) err() error {
	o.n.Add(1)
	return fmt.Errorf("%w: 16 of 16", app.ErrOverloaded)
}

func (o overloaded) create() createFunc {
	return func(context.Context, app.CreateProfile) (app.Result, error) { return app.Result{}, o.err() }
}

func (o overloaded) change() changeFunc {
	return func(context.Context, app.ChangeProfile) (app.Result, error) { return app.Result{}, o.err() }
}

func (o overloaded) delete() deleteFunc {
	return func(context.Context, app.DeleteProfile) (app.Result, error) { return app.Result{}, o.err() }
}

type (
	createFunc func(context.Context, app.CreateProfile) (app.Result, error)
	changeFunc func(context.Context, app.ChangeProfile) (app.Result, error)
	deleteFunc func(context.Context, app.DeleteProfile) (app.Result, error)
)

func (f createFunc) Handle(ctx context.Context, c app.CreateProfile) (app.Result, error) {
	return f(ctx, c)
}
func (f changeFunc) Handle(ctx context.Context, c app.ChangeProfile) (app.Result, error) {
	return f(ctx, c)
}
func (f deleteFunc) Handle(ctx context.Context, c app.DeleteProfile) (app.Result, error) {
	return f(ctx, c)
}

// ownerAt routes every partition to one member: this instance when self.
type ownerAt struct {
	owner kafkax.Member
	self  bool
}

func (o ownerAt) Route(context.Context, int32) (kafkax.Member, bool, error) {
	return o.owner, o.self, nil
}

// commandServer returns command-svc's router as main wires it, with the
// use cases of cmds and the Router r.
func commandServer(id string, r routing.Router, cmds overloaded) http.Handler {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	router := service.NewRouter(log, &httpx.Health{})
	HTTP{
		Log:         log,
		Routing:     routing.Routing{Router: r, Self: kafkax.Member{ID: id}, Wait: time.Second, Log: log},
		PartitionOf: func(string) int32 { return 0 },
		EmailKey:    normalized{},
		NewUID:      func(string) string { return fuzzUID },
		Commands:    Commands{CreateProfile: cmds.create(), ChangeProfile: cmds.change(), DeleteProfile: cmds.delete()},
	}.Register(router)
	return router
}

// A write refused by the owner's admission is 503 overloaded with
// Retry-After, served where it arrived or forwarded from another
// instance, which passes the owner's answer on as it is.
func TestOverloadedWriteIs503WithRetryAfter(t *testing.T) {
	var ownerCalls, forwarderCalls atomic.Int64
	owner := httptest.NewServer(commandServer("owner", ownerAt{kafkax.Member{ID: "owner"}, true}, overloaded{&ownerCalls}))
	defer owner.Close()
	forwarder := httptest.NewServer(commandServer("forwarder", ownerAt{kafkax.Member{ID: "owner", URL: owner.URL}, false}, overloaded{&forwarderCalls}))
	defer forwarder.Close()

	body := `{"username":"bob","email":"b@mail.com"}`
	for _, via := range []struct {
		name, url, hops string
	}{{"at the owner", owner.URL, "0"}, {"forwarded", forwarder.URL, "1"}} {
		for _, req := range []struct{ method, path, body string }{
			{http.MethodPost, "/api/profile", body},
			{http.MethodPut, "/api/profile/" + fuzzUID, body},
			{http.MethodDelete, "/api/profile/" + fuzzUID, ""},
		} {
			t.Run(via.name+" "+req.method, func(t *testing.T) {
				r, _ := http.NewRequest(req.method, via.url+req.path, strings.NewReader(req.body))
				if req.body != "" {
					r.Header.Set("Content-Type", "application/json")
				}
				resp, err := http.DefaultClient.Do(r)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var p httpx.Problem
				if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != http.StatusServiceUnavailable || p.Status != http.StatusServiceUnavailable ||
					p.Type != "urn:profiles:problem:overloaded" || p.Instance != req.path {
					t.Fatalf("%d %+v, want 503 urn:profiles:problem:overloaded", resp.StatusCode, p)
				}
				if ra := resp.Header.Get("Retry-After"); ra != RetryAfterOverloaded {
					t.Fatalf("Retry-After = %q, want %q", ra, RetryAfterOverloaded)
				}
				if ct := resp.Header.Get("Content-Type"); ct != httpx.ProblemContentType {
					t.Fatalf("Content-Type = %q", ct)
				}
				if by, hops := resp.Header.Get(routing.HeaderServedBy), resp.Header.Get(routing.HeaderHops); by != "owner" || hops != via.hops {
					t.Fatalf("served by %q in %q hops, want the owner in %s", by, hops, via.hops)
				}
			})
		}
	}
	if ownerCalls.Load() != 6 || forwarderCalls.Load() != 0 {
		t.Fatalf("the owner ran %d commands and the forwarder %d; want 6 and 0", ownerCalls.Load(), forwarderCalls.Load())
	}
}
