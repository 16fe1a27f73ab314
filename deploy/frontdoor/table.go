package frontdoor

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"profiles/platform/kafkax"
	"profiles/platform/routing"
)

// table is what the front door knows of one service's group: the number
// of partitions and the owner of each. It is never changed once built:
// a newer one replaces it whole (pool.table), so a request reads it
// without a lock.
type table struct {
	n      int32
	owners []owner // by partition; the zero owner where none is known
	// ids are the members by instance id, to learn an owner from the
	// X-Served-By of an answer.
	ids map[string]*upstream
}

// owner is the member that owns a partition: its instance id (as its
// answers' X-Served-By names it) and the upstream that reaches it.
type owner struct {
	id string
	u  *upstream
}

// errNotStable is buildTable's answer to a view of a group that is
// rebalancing: its members do not name the owners, so the table in use
// is kept, and polled again soon.
var errNotStable = errors.New("the group is not stable")

// buildTable makes the table that rep, an instance's view of its group
// (routing.Table), describes. upstreamOf returns the upstream that reaches
// a member; nil when it cannot (its URL is not an http(s) base URL), and
// the member's partitions then have no known owner. A member's partitions
// outside [0, Partitions) make the whole view invalid.
func buildTable(rep routing.Table, upstreamOf func(kafkax.Member) *upstream) (*table, error) {
	if rep.Partitions <= 0 {
		return nil, fmt.Errorf("the instance reports %d partitions", rep.Partitions)
	}
	if rep.State != "Stable" {
		return nil, fmt.Errorf("%w (%q)", errNotStable, rep.State)
	}
	t := &table{n: rep.Partitions, owners: make([]owner, rep.Partitions), ids: map[string]*upstream{}}
	for _, m := range rep.Members {
		if m.ID == "" || m.URL == "" {
			continue // a member that did not say where it is
		}
		u := upstreamOf(m.Member)
		if u == nil {
			continue
		}
		t.ids[m.ID] = u
		for _, p := range m.Partitions {
			if p < 0 || p >= t.n {
				return nil, fmt.Errorf("member %s owns partition %d of %d", m.ID, p, t.n)
			}
			t.owners[p] = owner{id: m.ID, u: u}
		}
	}
	return t, nil
}

// ownerOf returns the partition of key and its owner (the zero owner if
// unknown). A nil table knows nothing: the partition is then -1.
func (t *table) ownerOf(key string) (int32, owner) {
	if t == nil {
		return -1, owner{}
	}
	p := kafkax.Partition(key, t.n)
	return p, t.owners[p]
}

// learn returns a copy of t in which the member id owns partition p of n,
// as an answer served by id says; nil when t already says so, knows no
// member id (the next poll brings it), or has another number of
// partitions than the one p was computed with.
func (t *table) learn(p, n int32, id string) *table {
	if t == nil || t.n != n || p < 0 || p >= t.n {
		return nil
	}
	u := t.ids[id]
	if u == nil || t.owners[p] == (owner{id: id, u: u}) {
		return nil
	}
	out := &table{n: t.n, owners: make([]owner, t.n), ids: t.ids}
	copy(out.owners, t.owners)
	out.owners[p] = owner{id: id, u: u}
	return out
}

// keyOf returns the key by which the instances place r (see
// platform/routing): the uid of /api/profile/{uid} and of
// /api/profile/{uid}/history. Other requests have no key the front door
// can compute: a search and a POST are placed by the HMAC of an email
// under PII_KEK, which the front door does not hold.
func keyOf(method, path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/api/profile/")
	if !ok {
		return "", false
	}
	switch method {
	case "GET", "HEAD":
		rest = strings.TrimSuffix(rest, "/history")
	case "PUT", "DELETE":
	default:
		return "", false
	}
	if rest == "" || strings.Contains(rest, "/") {
		return "", false
	}
	return rest, true
}

// apiRoute returns the route template of an API path (those of the
// OpenAPI description), or "/api/" for any other: the name of the
// front door's spans, which must never hold a raw path (a uid).
func apiRoute(path string) string {
	switch path {
	case "/api/profile", "/api/search", StreamPath:
		return path
	}
	if rest, ok := strings.CutPrefix(path, "/api/profile/"); ok && rest != "" {
		switch uid, tail, _ := strings.Cut(rest, "/"); {
		case uid == "":
		case tail == "" && !strings.HasSuffix(rest, "/"):
			return "/api/profile/{uid}"
		case tail == "history":
			return "/api/profile/{uid}/history"
		}
	}
	return "/api/"
}

// memberURL parses the URL a member advertises; nil unless it is an
// http(s) base URL.
func memberURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil
	}
	return u
}
