package httpx

import (
	"net/http"
	"strings"

	"github.com/gorilla/mux"
)

// Path adds a route to r for the path template tpl, as r.Path(tpl) does,
// for a template whose segments are each literal or a whole variable
// ({name}, without a pattern): a variable matches a non-empty segment, as
// mux's default pattern [^/]+ does. The route compares the path's
// segments instead of running mux's regexp on every request tried
// against it, and sets the variables itself (mux.Vars). It is named tpl:
// Route, and the tracing middleware, report its name as its template.
func Path(r *mux.Router, tpl string) *mux.Route {
	if !strings.HasPrefix(tpl, "/") {
		panic("httpx.Path: " + tpl + " does not start with /")
	}
	segs := strings.Split(tpl[1:], "/")
	var names []string
	for i, s := range segs {
		switch {
		case len(s) > 2 && s[0] == '{' && s[len(s)-1] == '}' && !strings.ContainsAny(s[1:len(s)-1], "{}:"):
			names = append(names, s[1:len(s)-1])
			segs[i] = "" // a variable
		case s == "" || strings.ContainsAny(s, "{}"):
			panic("httpx.Path: " + tpl + " has a segment that is neither a literal nor a whole {name}")
		}
	}
	return r.MatcherFunc(func(req *http.Request, m *mux.RouteMatch) bool {
		var vals [4]string
		vars, ok := matchSegments(req.URL.Path, segs, vals[:0])
		if !ok {
			return false
		}
		if len(names) > 0 {
			if m.Vars == nil {
				m.Vars = make(map[string]string, len(names))
			}
			for i, n := range names {
				m.Vars[n] = vars[i]
			}
		}
		return true
	}).Name(tpl)
}

// matchSegments matches path against segs (an empty one is a variable)
// and appends the variables' values to vars.
func matchSegments(path string, segs []string, vars []string) ([]string, bool) {
	if !strings.HasPrefix(path, "/") {
		return nil, false
	}
	rest := path[1:]
	for i, s := range segs {
		seg := rest
		if i < len(segs)-1 {
			j := strings.IndexByte(rest, '/')
			if j < 0 {
				return nil, false
			}
			seg, rest = rest[:j], rest[j+1:]
		} else if strings.IndexByte(rest, '/') >= 0 {
			return nil, false
		}
		switch {
		case s == "":
			if seg == "" {
				return nil, false
			}
			vars = append(vars, seg)
		case seg != s:
			return nil, false
		}
	}
	return vars, true
}
