package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"profiles/platform/testenv"
)

// schemathesisChecks are the checks that express the requirement: no 5xx,
// and no response (status, Content-Type, headers, body) outside the document.
var schemathesisChecks = []string{
	"not_a_server_error",
	"status_code_conformance",
	"content_type_conformance",
	"response_headers_conformance",
	"response_schema_conformance",
}

// A property-based run of schemathesis (deploy/schemathesis.sh installs it)
// against the OpenAPI document and the whole running system: it must find
// no 5xx and no response that the document does not describe.
//
// One 5xx is the documented answer to a well-formed request, and is let
// through, narrowly: 503 `version-not-yet-visible` to a GET whose minVersion
// the view has not reached within MAX_WAIT. Generated versions and uids are
// mostly ones that do not exist (yet), and the service cannot tell "not yet"
// from "never": a write acknowledged with 202 may still be on its way to the
// view, and read-your-writes relies on the wait. Every response is read back
// from the HAR report, so any other 5xx still fails the test.
func TestSchemathesisFindsNoServerErrorsAndNoResponseOutsideTheDocument(t *testing.T) {
	exe := os.Getenv("PROFILES_SCHEMATHESIS")
	if exe == "" {
		testenv.Missing(t, "PROFILES_SCHEMATHESIS is not set (schemathesis); run `deploy/schemathesis.sh install` and export PROFILES_SCHEMATHESIS=$(deploy/schemathesis.sh path), or `make test`")
	}
	if _, err := os.Stat(exe); err != nil {
		t.Fatalf("PROFILES_SCHEMATHESIS=%s: %v (run `deploy/schemathesis.sh install`)", exe, err)
	}

	// A minVersion the view never reaches waits MAX_WAIT (10s by default)
	// before its 503; 1s keeps the run short. It also bounds command-svc's
	// read-your-writes waits, so a write whose view lags more than 1s
	// answers 202, as the document allows (the seeding below waits then).
	s := StartSystem(t, Options{Env: map[string]string{"MAX_WAIT": "1s"}})

	// Seed profiles so that generated uids and emails hit real data: live
	// ones, one changed (a longer history), one deleted (404 on GET, a
	// history that ends with the delete).
	var uids, emails []string
	for i := range 5 {
		email := fmt.Sprintf("st-seed-%d@mail.com", i)
		r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": fmt.Sprintf("seed%d", i), "email": email}, nil)
		var p struct {
			UID string `json:"uid"`
		}
		r.JSON(t, &p)
		s.waitSeeded(r, http.StatusCreated, p.UID, 1)
		uids = append(uids, p.UID)
		emails = append(emails, email)
	}
	r := s.Do(http.MethodPut, "/api/profile/"+uids[1], map[string]string{"username": "seed1-renamed", "email": "st-seed-1b@mail.com"}, nil)
	s.waitSeeded(r, http.StatusOK, uids[1], 2)
	emails = append(emails, "st-seed-1b@mail.com")
	r = s.Do(http.MethodDelete, "/api/profile/"+uids[4], nil, nil)
	s.waitSeeded(r, http.StatusNoContent, uids[4], 2)

	// schemathesis runs in dir, so that its cache (.schemathesis/) and
	// reports stay out of the work tree.
	dir := t.TempDir()
	config := filepath.Join(dir, "schemathesis.toml")
	if err := os.WriteFile(config, []byte(schemathesisConfig(uids, emails)), 0o644); err != nil {
		t.Fatal(err)
	}
	report, har := filepath.Join(dir, "report.json"), filepath.Join(dir, "calls.har")
	args := []string{
		"--config-file", config,
		"--no-color",
		"run", filepath.Join(repoRoot, "deploy", "openapi", "openapi.yaml"),
		"--url", s.URL,
		"--checks", strings.Join(schemathesisChecks, ","),
		"--max-examples", "50",
		"--seed", "20251125",
		// One worker: with two, schemathesis 4.32.5 on CPython 3.11
		// sometimes fails with a Runtime Error (a KeyError in its source
		// cache), a race of its worker threads (CPython gh-106905).
		"--workers", "1",
		"--request-timeout", "20",
		"--generation-database", "none",
		"--report", "json,har",
		"--report-dir", dir,
		"--report-json-path", report,
		"--report-har-path", har,
	}
	// --max-time would not bound the run but fill it: fuzzing and stateful
	// testing repeat until it is spent. The examples bound it; this only
	// stops a run that hangs.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Dir = dir
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t.Logf("running: %s %s", exe, strings.Join(args, " "))
	start := time.Now()
	runErr := cmd.Run()
	seconds := time.Since(start).Seconds()

	var rep stReport
	if err := readJSONFile(report, &rep); err != nil {
		t.Fatalf("schemathesis wrote no readable report (%v; exit: %v):\n%s", err, runErr, out.String())
	}
	var calls harFile
	if err := readJSONFile(har, &calls); err != nil {
		t.Fatalf("schemathesis wrote no readable HAR report (%v; exit: %v):\n%s", err, runErr, out.String())
	}
	ops := 0
	if rep.Operations != nil {
		ops = rep.Operations.Tested
	}
	nErrors := 0
	for _, e := range rep.Errors {
		nErrors += e.Count
	}
	notYet, unexpected := 0, []string{}
	for _, e := range calls.Log.Entries {
		switch st := e.Response.Status; {
		case st < 500:
		case versionNotYetVisible(e):
			notYet++
		default:
			unexpected = append(unexpected, fmt.Sprintf("%s %s -> %d %s", e.Request.Method, clip(e.Request.URL), st, clip(e.Response.Content.Text)))
		}
	}
	failures := rep.TestCases.WithFailures + len(unexpected)
	t.Logf("schemathesis: %d cases over %d operations, %d failures (%d API calls, %d errors, %d documented 503 version-not-yet-visible; schemathesis %s, seed %s, %.1fs, stop: %s)",
		rep.TestCases.Generated, ops, failures, len(calls.Log.Entries), nErrors, notYet, rep.Version, seedString(rep.Seed), seconds, rep.StopReason)

	recordHostileInput(fmt.Sprintf("schemathesis %s against deploy/openapi/openapi.yaml (checks: no 5xx, status codes, content types, headers and bodies as documented; seed %s): %d cases over %d operations, %d API calls, %d failures, in %.0f s. %d answers were the documented 503 `version-not-yet-visible` to a GET whose `minVersion` no write has reached; every other answer was below 500.",
		rep.Version, seedString(rep.Seed), rep.TestCases.Generated, ops, len(calls.Log.Entries), failures, seconds, notYet))

	ok := runErr == nil && rep.ExitCode == 0 && rep.Complete && failures == 0 && len(rep.Failures) == 0 && nErrors == 0
	if rep.TestCases.Generated == 0 || ops == 0 {
		t.Errorf("schemathesis tested nothing (%d cases over %d operations)", rep.TestCases.Generated, ops)
		ok = false
	}
	if !ok {
		for _, f := range rep.Failures {
			t.Errorf("failure: %s (%d times, in %s)", f.Title, f.Count, strings.Join(f.Operations, ", "))
		}
		for _, e := range rep.Errors {
			t.Errorf("error: %s (%d times)", e.Title, e.Count)
		}
		for _, u := range unexpected {
			t.Errorf("server error: %s", u)
		}
		t.Errorf("schemathesis did not pass (exit: %v, report exit code %d, complete %v):\n%s", runErr, rep.ExitCode, rep.Complete, out.String())
	} else if testing.Verbose() {
		t.Logf("schemathesis output:\n%s", out.String())
	}
}

// waitSeeded checks the answer to a seeding write: want, or 202 (the view did
// not catch up within MAX_WAIT, as may happen right after the start), then
// waits until readers see uid at version.
func (s *System) waitSeeded(r Response, want int, uid string, version int64) {
	s.t.Helper()
	if r.Status == want {
		return
	}
	if r.Status != http.StatusAccepted {
		s.t.Fatalf("seed write of %s: %d %s, want %d or 202", uid, r.Status, r.Body, want)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		g := s.Do(http.MethodGet, fmt.Sprintf("/api/profile/%s?minVersion=%d", uid, version), nil, nil)
		if g.Status == http.StatusOK || g.Status == http.StatusNotFound {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("seed write of %s version %d not visible after 30s: %d %s", uid, version, g.Status, g.Body)
		}
	}
}

// schemathesisConfig is the schemathesis.toml of the run.
func schemathesisConfig(uids, emails []string) string {
	var b strings.Builder
	// Half of the generated uids and emails are seeded ones.
	fmt.Fprintf(&b, "[dictionaries.seeded-uids]\nvalues = %s\n\n", tomlStrings(uids))
	fmt.Fprintf(&b, "[dictionaries.seeded-emails]\nvalues = %s\n\n", tomlStrings(emails))
	b.WriteString(`[parameters]
"path.uid" = { dictionary = "seeded-uids", probability = 0.5 }
"query.uid" = { dictionary = "seeded-uids", probability = 0.5 }
"query.email" = { dictionary = "seeded-emails", probability = 0.5 }

# The reads answer 503 version-not-yet-visible to a minVersion not reached
# in time; the test checks in the HAR report that every 5xx is that one.
[[operations]]
include-operation-id = ["getProfile", "getProfileHistory", "searchProfiles"]
checks.not_a_server_error.expected-statuses = ["2XX", "3XX", "4XX", "503"]

# A change stream stays open: read its first event (ready) and hang up.
[[operations]]
include-operation-id = "streamChanges"
max-stream-events = 1
request-timeout = 5
`)
	return b.String()
}

// versionNotYetVisible reports whether a call is a GET with a minVersion
// above 0 answered 503 version-not-yet-visible.
func versionNotYetVisible(e harEntry) bool {
	if e.Request.Method != http.MethodGet || e.Response.Status != http.StatusServiceUnavailable {
		return false
	}
	u, err := url.Parse(e.Request.URL)
	if err != nil {
		return false
	}
	if v, err := strconv.ParseInt(u.Query().Get("minVersion"), 10, 64); err != nil || v <= 0 {
		return false
	}
	var p struct {
		Type string `json:"type"`
	}
	return json.Unmarshal([]byte(e.Response.Content.Text), &p) == nil && p.Type == "urn:profiles:problem:version-not-yet-visible"
}

// stReport is the part of schemathesis's JSON run report (--report json)
// that the test reads.
type stReport struct {
	Version    string `json:"schemathesis_version"`
	Seed       *int64 `json:"seed"`
	Complete   bool   `json:"complete"`
	StopReason string `json:"stop_reason"`
	ExitCode   int    `json:"exit_code"`
	Operations *struct {
		Selected int `json:"selected"`
		Tested   int `json:"tested"`
	} `json:"operations"`
	TestCases struct {
		Generated    int `json:"generated"`
		WithFailures int `json:"with_failures"`
	} `json:"test_cases"`
	Failures []struct {
		Title      string   `json:"title"`
		Count      int      `json:"count"`
		Operations []string `json:"operations"`
	} `json:"failures"`
	Errors []struct {
		Title string `json:"title"`
		Count int    `json:"count"`
	} `json:"errors"`
}

// harFile is the part of a HAR report (--report har): every API call.
type harFile struct {
	Log struct {
		Entries []harEntry `json:"entries"`
	} `json:"log"`
}

type harEntry struct {
	Request struct {
		Method string `json:"method"`
		URL    string `json:"url"`
	} `json:"request"`
	Response struct {
		Status  int `json:"status"`
		Content struct {
			Text string `json:"text"`
		} `json:"content"`
	} `json:"response"`
}

func readJSONFile(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// tomlStrings formats ss as a TOML array of basic strings.
func tomlStrings(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s) // the seeds are plain ASCII: Go and TOML quoting agree
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// clip shortens s to at most 300 bytes for a message.
func clip(s string) string {
	if len(s) <= 300 {
		return s
	}
	return s[:300] + fmt.Sprintf("... (%d bytes)", len(s))
}

func seedString(seed *int64) string {
	if seed == nil {
		return "none"
	}
	return strconv.FormatInt(*seed, 10)
}
