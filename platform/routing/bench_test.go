package routing

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"profiles/platform/kafkax"
)

// heldRouter serves every partition here and always holds it.
type heldRouter struct{ self kafkax.Member }

func (h heldRouter) Route(context.Context, int32) (kafkax.Member, bool, error) {
	return h.self, true, nil
}
func (heldRouter) Holds(int32, int) bool { return true }

// interruptibleRouter is heldRouter with an Interrupt that costs what
// kafkax.Group's does for a read shorter than its watch delay: a
// cancellable context and a timer that is stopped.
type interruptibleRouter struct{ heldRouter }

func (interruptibleRouter) Interrupt(ctx context.Context, _ int32, _ int) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	t := time.AfterFunc(20*time.Millisecond, cancel)
	return ctx, func() { t.Stop(); cancel() }
}

// BenchmarkLocalRead is the routing layer's cost for a read served here,
// without and with an Interrupter (the handler writes a small body).
func BenchmarkLocalRead(b *testing.B) {
	self := kafkax.Member{ID: "a"}
	for _, bc := range []struct {
		name   string
		router Router
	}{{"held", heldRouter{self}}, {"interruptible", interruptibleRouter{heldRouter{self}}}} {
		b.Run(bc.name, func(b *testing.B) {
			rt := Routing{Router: bc.router, Self: self, Wait: time.Second, Log: slog.New(slog.DiscardHandler)}
			h := rt.Handler(func(*http.Request) (int32, bool) { return 3, true },
				http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"uid":"u"}`) }))
			req := httptest.NewRequest(http.MethodGet, "/api/profile/u", nil)
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	}
}
