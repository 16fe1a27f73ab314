package e2e

import (
	"fmt"
	"net/http"
	"testing"
)

type profile struct {
	UID       string `json:"uid"`
	Username  string `json:"username"`
	Email     string `json:"email"`
	Version   int64  `json:"version"`
	CreatedAt string `json:"createdAt"`
	UpdatedAt string `json:"updatedAt"`
}

// search returns the uids found for email, through the front door.
func (s *System) search(email string) []string {
	s.t.Helper()
	return s.searchAt("frontdoor", email)
}

// searchAt returns the uids found for email, through one instance.
func (s *System) searchAt(name, email string) []string {
	s.t.Helper()
	r := s.DoAt(name, http.MethodGet, "/api/search?email="+email, nil, nil)
	if r.Status != http.StatusOK {
		s.t.Fatalf("search %s: %d %s", email, r.Status, r.Body)
	}
	var found []profile
	r.JSON(s.t, &found)
	uids := []string{}
	for _, p := range found {
		uids = append(uids, p.UID)
	}
	return uids
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// The curl flow of the seed README, 20 times in a row, with no sleeps: every
// write must already be visible when it returns.
func TestSeedFlowTwentyTimes(t *testing.T) {
	s := StartSystem(t, Options{})
	for i := range 20 {
		email1 := fmt.Sprintf("bob%d-1@mail.com", i)
		email2 := fmt.Sprintf("bob%d-2@mail.com", i)

		r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "bob", "email": email1}, nil)
		if r.Status != http.StatusCreated {
			t.Fatalf("round %d: POST = %d %s", i, r.Status, r.Body)
		}
		var created profile
		r.JSON(t, &created)
		if created.UID == "" || created.Version != 1 || r.Header.Get("Location") != "/api/profile/"+created.UID || r.Header.Get("ETag") != `"1"` {
			t.Fatalf("round %d: POST answered %+v, Location %q, ETag %q", i, created, r.Header.Get("Location"), r.Header.Get("ETag"))
		}

		r = s.Do(http.MethodGet, "/api/profile/"+created.UID, nil, map[string]string{"Accept": "application/json"})
		var got profile
		if r.Status != http.StatusOK {
			t.Fatalf("round %d: GET after POST = %d %s", i, r.Status, r.Body)
		}
		r.JSON(t, &got)
		if got != created {
			t.Fatalf("round %d: GET = %+v, want %+v", i, got, created)
		}
		if found := s.search(email1); !contains(found, created.UID) {
			t.Fatalf("round %d: search %s = %v, want %s", i, email1, found, created.UID)
		}

		r = s.Do(http.MethodPut, "/api/profile/"+created.UID, map[string]string{"username": "bob", "email": email2}, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("round %d: PUT = %d %s", i, r.Status, r.Body)
		}
		var changed profile
		r.JSON(t, &changed)
		if changed.Email != email2 || changed.Version != 2 {
			t.Fatalf("round %d: PUT answered %+v", i, changed)
		}
		if found := s.search(email2); !contains(found, created.UID) {
			t.Fatalf("round %d: search by new email = %v", i, found)
		}
		if found := s.search(email1); len(found) != 0 {
			t.Fatalf("round %d: search by old email = %v, want []", i, found)
		}

		r = s.Do(http.MethodDelete, "/api/profile/"+created.UID, nil, nil)
		if r.Status != http.StatusNoContent {
			t.Fatalf("round %d: DELETE = %d %s", i, r.Status, r.Body)
		}
		if r = s.Do(http.MethodGet, "/api/profile/"+created.UID, nil, nil); r.Status != http.StatusNotFound {
			t.Fatalf("round %d: GET after DELETE = %d %s", i, r.Status, r.Body)
		}
		if found := s.search(email2); len(found) != 0 {
			t.Fatalf("round %d: search after DELETE = %v, want []", i, found)
		}
	}
}

// Commands on a deleted profile are refused, and a delete never resurrects.
func TestWritesAfterDeleteGet404(t *testing.T) {
	s := StartSystem(t, Options{})
	var p profile
	s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "ann", "email": "ann@mail.com"}, nil).JSON(t, &p)
	if r := s.Do(http.MethodDelete, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE = %d", r.Status)
	}
	if r := s.Do(http.MethodPut, "/api/profile/"+p.UID, map[string]string{"username": "ann", "email": "x@mail.com"}, nil); r.Status != http.StatusNotFound {
		t.Fatalf("PUT after DELETE = %d %s", r.Status, r.Body)
	}
	if r := s.Do(http.MethodDelete, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusNotFound {
		t.Fatalf("second DELETE = %d %s", r.Status, r.Body)
	}
	if r := s.Do(http.MethodGet, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusNotFound {
		t.Fatalf("GET = %d", r.Status)
	}
}

// Prefer: respond-async answers 202 at once; minVersion then reads the write.
func TestRespondAsyncAndMinVersion(t *testing.T) {
	s := StartSystem(t, Options{})
	r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "cy", "email": "cy@mail.com"},
		map[string]string{"Prefer": "respond-async"})
	if r.Status != http.StatusAccepted || r.Header.Get("Preference-Applied") != "respond-async" {
		t.Fatalf("async POST = %d %v %s", r.Status, r.Header, r.Body)
	}
	var acc struct {
		UID     string `json:"uid"`
		Version int64  `json:"version"`
	}
	r.JSON(t, &acc)
	r = s.Do(http.MethodGet, fmt.Sprintf("/api/profile/%s?minVersion=%d", acc.UID, acc.Version), nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET with minVersion = %d %s", r.Status, r.Body)
	}
	var p profile
	r.JSON(t, &p)
	if p.Version != acc.Version || p.Username != "cy" {
		t.Fatalf("GET = %+v", p)
	}
}
