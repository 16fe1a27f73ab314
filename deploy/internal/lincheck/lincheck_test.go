package lincheck

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// parse reads a history written one operation a line:
//
//	CLIENT CALL RET KIND UID [USERNAME] [email=E] [if=N] -> STATUS [vN] [USERNAME] [email=E]
//
// RET and STATUS are "?" for an operation whose outcome is unknown.
func parse(t *testing.T, text string) *History {
	t.Helper()
	h := NewHistory()
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		call, answer, ok := strings.Cut(line, "->")
		if !ok {
			t.Fatalf("no -> in %q", line)
		}
		f := strings.Fields(call)
		if len(f) < 5 {
			t.Fatalf("short call in %q", line)
		}
		client, _ := strconv.Atoi(strings.TrimPrefix(f[0], "c"))
		at, _ := strconv.ParseInt(f[1], 10, 64)
		ret, _ := strconv.ParseInt(f[2], 10, 64)
		in := Input{UID: f[4]}
		for k := Create; k <= Get; k++ {
			if k.String() == f[3] {
				in.Kind = k
			}
		}
		if in.Kind == 0 {
			t.Fatalf("unknown kind in %q", line)
		}
		for _, w := range f[5:] {
			if v, ok := strings.CutPrefix(w, "if="); ok {
				in.IfMatch, _ = strconv.ParseInt(v, 10, 64)
			} else if v, ok := strings.CutPrefix(w, "email="); ok {
				in.Email = v
			} else {
				in.Username = w
			}
		}
		var out Output
		a := strings.Fields(answer)
		if len(a) == 0 {
			t.Fatalf("no answer in %q", line)
		}
		if a[0] != "?" {
			out.Status, _ = strconv.Atoi(a[0])
			for _, w := range a[1:] {
				if v, ok := strings.CutPrefix(w, "v"); ok && len(v) > 0 && v[0] >= '0' && v[0] <= '9' {
					out.Version, _ = strconv.ParseInt(v, 10, 64)
				} else if v, ok := strings.CutPrefix(w, "email="); ok {
					out.Email = v
				} else {
					out.Username = w
				}
			}
		}
		h.Add(client, in, at, out, ret)
	}
	return h
}

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		name    string
		history string
		ok      bool
	}{
		{"sequential writes and reads", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 30 put u1 bob -> 200 v2 bob
			c1 40 50 get u1 -> 200 v2 bob
			c1 60 70 delete u1 -> 204
			c0 80 90 get u1 -> 404`, true},
		{"a stale read after an acknowledged write", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 30 put u1 bob -> 200 v2 bob
			c1 40 50 get u1 -> 200 v1 alice`, false},
		{"a read concurrent with a write may see either", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 60 put u1 bob -> 200 v2 bob
			c1 30 40 get u1 -> 200 v1 alice
			c2 35 45 get u1 -> 200 v2 bob`, true},
		{"but not go back once one read saw the new value", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 90 put u1 bob -> 200 v2 bob
			c1 30 40 get u1 -> 200 v2 bob
			c2 50 60 get u1 -> 200 v1 alice`, false},
		{"a write with an unknown outcome may take effect long after", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 ? put u1 bob -> ?
			c1 100 110 get u1 -> 200 v1 alice
			c1 500 510 get u1 -> 200 v2 bob`, true},
		{"or never", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 ? put u1 bob -> ?
			c1 500 510 get u1 -> 200 v1 alice`, true},
		{"but once seen it stays", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 ? put u1 bob -> ?
			c1 100 110 get u1 -> 200 v2 bob
			c1 500 510 get u1 -> 200 v1 alice`, false},
		{"a read cannot see a write before it was sent", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c1 20 30 get u1 -> 200 v2 bob
			c0 40 50 put u1 bob -> 200 v2 bob`, false},
		{"one of two writes with the same If-Match applies", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 40 put u1 bob if=1 -> 200 v2 bob
			c1 20 40 put u1 carol if=1 -> 412 v2
			c2 50 60 get u1 -> 200 v2 bob`, true},
		{"both applying is a lost update", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 40 put u1 bob if=1 -> 200 v2 bob
			c1 20 40 put u1 carol if=1 -> 200 v2 carol`, false},
		{"a 412 must name the current version", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c1 20 40 put u1 carol if=7 -> 412 v3`, false},
		{"a change to nothing keeps the version", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 30 put u1 alice -> 200 v1 alice
			c1 40 50 get u1 -> 200 v1 alice`, true},
		{"a PUT of both fields appends two events", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 30 put u1 bob email=b@x -> 200 v3 bob email=b@x
			c1 40 50 get u1 -> 200 v3 bob email=b@x`, true},
		{"but not three", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 30 put u1 bob email=b@x -> 200 v4 bob email=b@x`, false},
		{"a read must show the email too", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 30 put u1 alice email=b@x -> 200 v2 alice email=b@x
			c1 40 50 get u1 -> 200 v2 alice`, false},
		{"a version skipped is a write applied twice", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 30 put u1 bob -> 200 v3 bob`, false},
		{"nothing after a delete", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 30 delete u1 -> 204
			c1 40 50 put u1 bob -> 404
			c1 60 70 get u1 -> 200 v1 alice`, false},
		{"profiles are separate registers", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 0 10 create u2 xavier -> 201 v1 xavier
			c1 20 30 put u2 yann -> 200 v2 yann
			c2 40 50 get u1 -> 200 v1 alice
			c2 40 50 get u2 -> 200 v2 yann`, true},
		{"an answer the API never gives", `
			c0 0 10 create u1 alice -> 201 v1 alice
			c0 20 30 put u1 bob -> 400`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := parse(t, c.history).Check(5*time.Second, "")
			if err != nil {
				t.Fatal(err)
			}
			if res.Ok() != c.ok {
				t.Fatalf("Ok() = %v, want %v\n%s\n%s", res.Ok(), c.ok, res, res.Detail)
			}
		})
	}
}

func TestCheckReportsTheProfileAndVisualizes(t *testing.T) {
	h := parse(t, `
		c0 0 10 create u1 alice -> 201 v1 alice
		c0 0 10 create u2 xavier -> 201 v1 xavier
		c0 20 30 put u1 bob -> 200 v2 bob
		c1 40 50 get u1 -> 200 v1 alice
		c1 40 ? put u2 yann -> ?
		c1 60 70 get u2 -> 200 v2 yann`)
	html := filepath.Join(t.TempDir(), "history.html")
	res, err := h.Check(5*time.Second, html)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ok() || len(res.Illegal) != 1 || res.Illegal[0] != "u1" {
		t.Fatalf("want u1 illegal, got %s", res)
	}
	if res.Ops != 6 || res.Unknown != 1 || res.Profiles != 2 || res.ByKind["get 200"] != 2 {
		t.Fatalf("counts: %+v", res)
	}
	if !strings.Contains(res.Detail, "get() -> 200 alice@v1") || strings.Contains(res.Detail, "u2") {
		t.Fatalf("detail:\n%s", res.Detail)
	}
	if !strings.Contains(res.String(), "NOT linearizable (1 profiles: u1)") {
		t.Fatal(res.String())
	}
	if fi, err := os.Stat(html); err != nil || fi.Size() == 0 {
		t.Fatalf("visualization not written: %v", err)
	}
}

func TestOutcome(t *testing.T) {
	body := []byte(`{"uid":"u1","username":"bob","email":"b@x","version":4}`)
	for _, c := range []struct {
		kind   Kind
		status int
		body   []byte
		etag   string
		err    error
		want   Output
	}{
		{Put, 200, body, `"4"`, nil, Output{Status: 200, Version: 4, Username: "bob", Email: "b@x"}},
		{Put, 412, []byte(`{}`), `"9"`, nil, Output{Status: 412, Version: 9}},
		{Put, 202, body, `"4"`, nil, Output{}},
		{Put, 503, nil, "", nil, Output{}},
		{Delete, 0, nil, "", errors.New("timeout"), Output{}},
		{Delete, 204, nil, "", nil, Output{Status: 204}},
		{Get, 404, []byte(`{}`), "", nil, Output{Status: 404}},
		{Get, 502, nil, "", nil, Output{}},
	} {
		t.Run(fmt.Sprintf("%s %d", c.kind, c.status), func(t *testing.T) {
			if got := Outcome(c.status, c.body, c.etag, c.err); got != c.want {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}
