package httpx

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/mux"
)

// A Path route matches what mux's own route of the same template matches,
// with the same variables, the same 405 and the same template in Route.
func TestPathIsMuxsPath(t *testing.T) {
	templates := []string{"/api/profile/{uid}", "/api/profile/{uid}/history", "/api/search", "/a/{x}/b/{y}"}
	type answer struct {
		status int
		route  string
		vars   map[string]string
	}
	serve := func(useRegexp bool) func(method, path string) answer {
		r := mux.NewRouter()
		r.NotFoundHandler, r.MethodNotAllowedHandler = NotFoundHandler, MethodNotAllowedHandler
		for _, tpl := range templates {
			var rt *mux.Route
			if useRegexp {
				rt = r.Path(tpl)
			} else {
				rt = Path(r, tpl)
			}
			rt.Handler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				w.Header().Set("X-Route", Route(req))
				w.Header().Set("X-Vars", strings.Join(func() []string {
					var kv []string
					for k, v := range mux.Vars(req) {
						kv = append(kv, k+"="+v)
					}
					return kv
				}(), "&"))
			})).Methods(http.MethodGet, http.MethodHead)
		}
		return func(method, path string) answer {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(method, "/", nil)
			req.URL.Path = path
			r.ServeHTTP(rec, req)
			vars := map[string]string{}
			for kv := range strings.SplitSeq(rec.Header().Get("X-Vars"), "&") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					vars[k] = v
				}
			}
			return answer{rec.Code, rec.Header().Get("X-Route"), vars}
		}
	}
	want, got := serve(true), serve(false)
	paths := []string{"/api/profile/u", "/api/profile/u/", "/api/profile/", "/api/profile//history", "/api/profile/u/history",
		"/api/profile/u/history/", "/api/search", "/api/search/", "/a/1/b/2", "/a//b/2", "/a/1/b/", "/", "/api", "/api/profile/a b",
		"/api/profile/ü", "/api/profile/u/historyx"}
	rng := rand.New(rand.NewPCG(3, 4))
	parts := []string{"api", "profile", "u", "history", "search", "a", "b", "", "x"}
	for range 3000 {
		var b strings.Builder
		for range 1 + rng.IntN(5) {
			b.WriteString("/" + parts[rng.IntN(len(parts))])
		}
		paths = append(paths, b.String())
	}
	for _, p := range paths {
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			w, g := want(m, p), got(m, p)
			if w.status != g.status || w.route != g.route || len(w.vars) != len(g.vars) {
				t.Fatalf("%s %s: Path %+v, mux %+v", m, p, g, w)
			}
			for k, v := range w.vars {
				if g.vars[k] != v {
					t.Fatalf("%s %s: Path %+v, mux %+v", m, p, g, w)
				}
			}
		}
	}
}
