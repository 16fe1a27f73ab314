package events_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"profiles/events"
)

var update = flag.Bool("update", false, "rewrite the fixtures of the current schema version (testdata/schema-v<SchemaVersion>/); older versions' fixtures are never rewritten")

// fixtures lists the event fixtures of every schema version, and the
// golden state each must fold to under today's code. An older version's
// golden is written by hand: it states what an old record must mean now,
// independently of the upcasters under test.
var fixtures = []struct {
	version int
	golden  string
}{
	// Version 1, upcast: schema-v1/state.golden.json plus displayName, the
	// username at the create.
	{1, "state.v2.golden.json"},
	// Version 2, upcast to 3 unchanged (its fields in clear):
	// schema-v2/state.golden.json, copied by hand.
	{2, "state.v3.golden.json"},
	// The current version, written by its own encoder.
	{3, "state.golden.json"},
}

func fixtureDir(version int) string {
	return filepath.Join("testdata", fmt.Sprintf("schema-v%d", version))
}

// goldenProfile is a golden file's form of events.Profile: its JSON fields,
// and Deleted too.
type goldenProfile struct {
	events.Profile
	Deleted bool `json:"deleted"`
}

func toGolden(state map[string]events.Profile) map[string]goldenProfile {
	out := map[string]goldenProfile{}
	for uid, p := range state {
		out[uid] = goldenProfile{Profile: p, Deleted: p.Deleted}
	}
	return out
}

func marshalGolden(t *testing.T, g map[string]goldenProfile) []byte {
	t.Helper()
	b, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// readGolden parses a golden file into its canonical form (see marshalGolden).
func readGolden(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var g map[string]goldenProfile
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return marshalGolden(t, g)
}

// readLines returns the lines of an events.jsonl file.
func readLines(t testing.TB, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var lines [][]byte
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, append([]byte(nil), sc.Bytes()...))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// foldLog decodes every line with Decode and folds it with Apply.
func foldLog(t *testing.T, lines [][]byte) map[string]events.Profile {
	t.Helper()
	state := map[string]events.Profile{}
	for i, line := range lines {
		e, err := events.Decode(line)
		if err != nil {
			t.Fatalf("line %d: Decode: %v", i+1, err)
		}
		if e.SchemaVersion != events.SchemaVersion {
			t.Fatalf("line %d: decoded at schema version %d, want %d", i+1, e.SchemaVersion, events.SchemaVersion)
		}
		if state[e.UID], err = events.Apply(state[e.UID], e); err != nil {
			t.Fatalf("line %d: Apply: %v", i+1, err)
		}
	}
	return state
}

// TestFixturesFold decodes the fixtures of every schema version with
// today's Decode, folds them with Apply, and compares the state with the
// version's golden.
func TestFixturesFold(t *testing.T) {
	if *update {
		writeCurrentFixtures(t)
	}
	if got := fixtures[len(fixtures)-1].version; got != events.SchemaVersion {
		t.Fatalf("the newest fixtures are of version %d, SchemaVersion is %d: write testdata/schema-v%d/ with -update and list it here", got, events.SchemaVersion, events.SchemaVersion)
	}
	for _, fx := range fixtures {
		t.Run(fmt.Sprintf("v%d", fx.version), func(t *testing.T) {
			dir := fixtureDir(fx.version)
			lines := readLines(t, filepath.Join(dir, "events.jsonl"))
			if len(lines) == 0 {
				t.Fatal("no fixture events")
			}
			for i, line := range lines {
				var head struct {
					SchemaVersion int `json:"schemaVersion"`
				}
				if err := json.Unmarshal(line, &head); err != nil || head.SchemaVersion != fx.version {
					t.Fatalf("line %d is not a version %d record (%d, %v)", i+1, fx.version, head.SchemaVersion, err)
				}
			}
			got := marshalGolden(t, toGolden(foldLog(t, lines)))
			want := readGolden(t, filepath.Join(dir, fx.golden))
			if !bytes.Equal(got, want) {
				t.Fatalf("%s folds to\n%s\nwant (%s)\n%s", dir, got, fx.golden, want)
			}
		})
	}
}

// TestFixturesV1KeepTheirState checks that the version 1 fixtures fold, apart
// from the new displayName, to exactly the state version 1 folded them to.
func TestFixturesV1KeepTheirState(t *testing.T) {
	state := foldLog(t, readLines(t, filepath.Join(fixtureDir(1), "events.jsonl")))
	for uid, p := range state {
		if !p.Deleted && p.DisplayName == "" {
			t.Errorf("%s: live profile without displayName", uid)
		}
		p.DisplayName = ""
		state[uid] = p
	}
	got := marshalGolden(t, toGolden(state))
	want := readGolden(t, filepath.Join(fixtureDir(1), "state.golden.json"))
	if !bytes.Equal(got, want) {
		t.Fatalf("without displayName, schema-v1 folds to\n%s\nwant\n%s", got, want)
	}
}

// TestFixturesCurrentRoundTrip checks that the current version's fixtures
// are what today's encoder writes: Encode(Decode(line)) is the line.
func TestFixturesCurrentRoundTrip(t *testing.T) {
	for i, line := range readLines(t, filepath.Join(fixtureDir(events.SchemaVersion), "events.jsonl")) {
		e, err := events.Decode(line)
		if err != nil {
			t.Fatalf("line %d: Decode: %v", i+1, err)
		}
		b, err := events.Encode(e)
		if err != nil {
			t.Fatalf("line %d: Encode: %v", i+1, err)
		}
		if !bytes.Equal(b, line) {
			t.Fatalf("line %d does not round-trip:\n got %s\nwant %s", i+1, b, line)
		}
	}
}

// writeCurrentFixtures writes testdata/schema-v<SchemaVersion>/ with the
// current encoder and Apply (go test -run TestFixturesFold -update).
func writeCurrentFixtures(t *testing.T) {
	const (
		erin  = "1e2d3c4b-5a69-4788-9a0b-c1d2e3f4a5b6"
		frank = "2f3e4d5c-6b7a-4899-8a1b-d2e3f4a5b6c7"
		grace = "3a4b5c6d-7e8f-4a0b-9c1d-e2f3a4b5c6d7"
		heidi = "4b5c6d7e-8f9a-4b1c-8d2e-f3a4b5c6d7e8"
	)
	t0 := time.Date(2026, 6, 28, 18, 30, 0, 271828000, time.UTC)
	steps := []struct {
		uid  string
		data events.Payload
	}{
		{erin, events.ProfileCreated{Username: "erin", DisplayName: "Erin O'Brien", Email: "Erin@Example.COM"}},
		{frank, events.ProfileCreated{Username: "frank", DisplayName: "frank", Email: "frank@mail.com"}},
		{frank, events.EmailChanged{Email: "Frank.Two@Mail.com"}},
		{grace, events.ProfileCreated{Username: "grace", DisplayName: "Grâce 🚀", Email: "grace@example.org"}},
		{erin, events.UsernameChanged{Username: "erin.ob"}},
		{heidi, events.ProfileCreated{Username: "heidi", DisplayName: "Heidi", Email: "HEIDI@mail.com"}},
		{grace, events.EmailChanged{Email: "GRACE@Example.org"}},
		{heidi, events.UsernameChanged{Username: "heidi2"}},
		{frank, events.UsernameChanged{Username: "franky"}},
		{heidi, events.ProfileDeleted{}},
		{erin, events.EmailChanged{Email: "erin@example.com"}},
	}
	state := map[string]events.Profile{}
	var log bytes.Buffer
	for i, s := range steps {
		e := events.New(fmt.Sprintf("evt-v%d-%02d", events.SchemaVersion, i+1), state[s.uid], s.uid, s.data, t0.Add(time.Duration(i)*1250*time.Millisecond))
		var err error
		if state[s.uid], err = events.Apply(state[s.uid], e); err != nil {
			t.Fatal(err)
		}
		b, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		log.Write(b)
		log.WriteByte('\n')
	}
	dir := fixtureDir(events.SchemaVersion)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"events.jsonl":      log.Bytes(),
		"state.golden.json": marshalGolden(t, toGolden(state)),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote %s", dir)
}
