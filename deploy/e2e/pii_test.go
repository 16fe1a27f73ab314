package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"profiles/events"

	"profiles/platform/kafkax"
	"profiles/platform/pii"
)

// A profile's create writes its sealed data key to the keys topic, on the
// partition of its events, and its delete tombstones it; the claims and
// email index topics are keyed by an HMAC of the email, never the email.
func TestDataKeysAreSealedAndShreddedAndEmailKeysAreHMACs(t *testing.T) {
	const partitions = 4
	s := StartSystem(t, Options{Partitions: partitions})
	kek, err := pii.ParseKEK(s.env["PII_KEK"])
	if err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("%08x", rand.Uint32())
	email := "Shred.Me." + tag + "@Mail.example"
	var p profile
	if r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "shred-" + tag, "email": email}, nil); r.Status != http.StatusCreated {
		t.Fatalf("POST: %d %s", r.Status, r.Body)
	} else {
		r.JSON(t, &p)
	}
	c := KafkaReadCommitted(t)
	keysOf := func() [][]byte {
		var out [][]byte
		for _, m := range ReadTopic(t, c, s.env["KEYS_TOPIC"], []int32{kafkax.Partition(p.UID, partitions)}) {
			if string(m.Key) == p.UID {
				out = append(out, m.Value)
			}
		}
		return out
	}
	keys := keysOf()
	if len(keys) != 1 || keys[0] == nil {
		t.Fatalf("keys topic holds %d records of %s, want one sealed key", len(keys), p.UID)
	}
	if _, err := kek.Open(p.UID, keys[0]); err != nil {
		t.Fatalf("the sealed key does not open with the system's KEK: %v", err)
	}
	if _, err := kek.Open("00000000-0000-4000-8000-000000000000", keys[0]); err == nil {
		t.Fatal("the sealed key opens under another uid")
	}

	hash := s.EmailKey(email)
	for _, topic := range []string{s.env["EMAIL_CLAIMS_TOPIC"], s.env["EMAIL_INDEX_TOPIC"]} {
		found := false
		for _, m := range ReadTopic(t, c, topic, nil) {
			if bytes.Contains(bytes.ToLower(m.Key), []byte(strings.ToLower(email))) {
				t.Fatalf("%s has a key with the email: %q", topic, m.Key)
			}
			found = found || bytes.HasPrefix(m.Key, []byte(hash))
		}
		if !found {
			t.Fatalf("%s has no record keyed by the email's HMAC", topic)
		}
	}

	if r := s.Do(http.MethodDelete, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", r.Status, r.Body)
	}
	keys = keysOf()
	if len(keys) != 2 || keys[1] != nil {
		t.Fatalf("after the delete the keys topic holds %d records of %s, the last %q; want the key and its tombstone", len(keys), p.UID, keys[len(keys)-1])
	}
}

// Forgetting: after a DELETE, the profile's email and username appear
// nowhere readable. Every topic of the system, read raw with Kafka's own
// console consumer (keys, values and headers, aborted transactions
// included), holds only ciphertext and tombstones for the profile; a
// replay of the event log and the history show its events as erased.
func TestForgettingLeavesOnlyCiphertextAndTombstones(t *testing.T) {
	const partitions = 4
	s := StartSystem(t, Options{Partitions: partitions})
	tag := fmt.Sprintf("%08x", rand.Uint32())
	created := map[string]string{"username": "Forget-Me-" + tag, "displayName": "Display " + tag + " Name", "email": "Forget.Me." + tag + "@Mail.example"}
	changed := map[string]string{"username": "Forgotten-" + tag, "email": "Gone." + tag + "@Mail.example"}
	var secrets []string
	for _, m := range []map[string]string{created, changed} {
		for _, v := range m {
			secrets = append(secrets, v, strings.ToLower(v))
		}
	}
	var p profile
	if r := s.Do(http.MethodPost, "/api/profile", created, nil); r.Status != http.StatusCreated {
		t.Fatalf("POST: %d %s", r.Status, r.Body)
	} else {
		r.JSON(t, &p)
	}
	if r := s.Do(http.MethodPut, "/api/profile/"+p.UID, changed, nil); r.Status != http.StatusOK {
		t.Fatalf("PUT: %d %s", r.Status, r.Body)
	}
	// Before the delete, the history is readable (the keys are there).
	if r := s.Do(http.MethodGet, "/api/profile/"+p.UID+"/history?minVersion=3", nil, nil); r.Status != http.StatusOK || !strings.Contains(string(r.Body), changed["email"]) {
		t.Fatalf("history before the delete: %d %s", r.Status, r.Body)
	}
	if r := s.Do(http.MethodDelete, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", r.Status, r.Body)
	}
	if r := s.Do(http.MethodGet, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusNotFound {
		t.Fatalf("GET after the delete: %d %s", r.Status, r.Body)
	}

	// History: every event is still listed, erased.
	r := s.Do(http.MethodGet, "/api/profile/"+p.UID+"/history?minVersion=4", nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("history: %d %s", r.Status, r.Body)
	}
	noSecrets(t, "the history", string(r.Body), secrets)
	var h historyBody
	r.JSON(t, &h)
	if len(h.Events) != 4 {
		t.Fatalf("history has %d events, want 4: %s", len(h.Events), r.Body)
	}
	for _, e := range h.Events[:3] {
		if len(e.Changes) != 0 || !strings.Contains(string(r.Body), `"erased":true`) {
			t.Fatalf("history entry %d is not erased: %s", e.Version, r.Body)
		}
	}

	// Replay: rebuild the snapshots from the event log.
	out := s.Replay("snapshots")
	noSecrets(t, "the replay's output", out, secrets)
	if !strings.Contains(out, "generation 2 built") {
		t.Fatalf("unexpected replay summary:\n%s", out)
	}

	// Every topic of the system, raw.
	c := Kafka(t)
	if err := c.RefreshMetadata(); err != nil {
		t.Fatal(err)
	}
	all, err := c.Topics()
	if err != nil {
		t.Fatal(err)
	}
	records := 0
	var topics []string
	for _, topic := range all {
		if strings.HasPrefix(topic, s.name+".") {
			topics = append(topics, topic)
			records += len(ReadTopic(t, c, topic, nil))
		}
	}
	if len(topics) < 9 { // the base topics and two generations of snapshots and index
		t.Fatalf("only %d topics of the system: %v", len(topics), topics)
	}
	raw := consoleConsume(t, s.Brokers, regexp.QuoteMeta(s.name)+`\..*`)
	noSecrets(t, "the raw topics", raw, secrets)
	if got := processed(t, raw); got < records {
		t.Fatalf("the console consumer read %d records of %d in %v", got, records, topics)
	}
	if !strings.Contains(raw, p.UID) || !strings.Contains(raw, `"pii":"`+events.SealedPII+`"`) {
		t.Fatalf("the raw topics hold no sealed record of %s:\n%s", p.UID, raw)
	}
	t.Logf("%d records of %d topics read raw: no trace of the profile's personal data", records, len(topics))
}

// consoleConsume reads every topic matching the regular expression from
// its beginning with Kafka's console consumer, printing partitions,
// offsets, headers, keys and values, until nothing came for 10 seconds.
func consoleConsume(t *testing.T, brokers, include string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot, "deploy", "kafka.sh"), "tool", "org.apache.kafka.tools.consumer.ConsoleConsumer",
		"--bootstrap-server", strings.Split(brokers, ",")[0], "--include", include, "--from-beginning", "--timeout-ms", "10000",
		"--property", "print.key=true", "--property", "print.headers=true", "--property", "print.partition=true",
		"--property", "print.offset=true", "--property", "print.value=true")
	out, _ := cmd.CombinedOutput() // it ends with a TimeoutException by design
	return string(out)
}

// processed returns the count the console consumer printed at its end.
func processed(t *testing.T, out string) int {
	t.Helper()
	m := regexp.MustCompile(`Processed a total of (\d+) messages`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the console consumer did not finish:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func noSecrets(t *testing.T, where, text string, secrets []string) {
	t.Helper()
	for _, sec := range secrets {
		if i := strings.Index(text, sec); i >= 0 {
			t.Fatalf("%s holds %q: …%s…", where, sec, text[max(0, i-200):min(len(text), i+len(sec)+200)])
		}
	}
}

// The log scan of every e2e test (System.checkLogs) finds what it looks
// for; it needs no Kafka.
func TestLogScanFindsPersonalDataAndTokens(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("command-svc-0.log", `{"msg":"http request","path":"/api/profile"}`+"\n"+`{"msg":"oops","err":"claim of bob.leak@mail.example"}`+"\n")
	write("query-svc-0.log", `{"msg":"auth","token":"eyJhbGciOiJSUzI1NiJ9.secret"}`+"\n")
	write("notes.txt", "bob.leak@mail.example\n") // not a service log
	leaks, files := findInLogs(dir, []string{"bob.leak@mail.example", "eyJhbGciOiJSUzI1NiJ9.secret", "never-logged-name"})
	if files != 2 || len(leaks) != 2 || !strings.HasPrefix(leaks[0], "command-svc-0.log:2 ") || !strings.HasPrefix(leaks[1], "query-svc-0.log:1 ") {
		t.Fatalf("findInLogs = %q in %d files", leaks, files)
	}
	s := &System{}
	s.remember([]byte(`{"username":"short","displayName":"A Display Name","email":" Bob@Mail.Example "}`), map[string]string{"Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.secret"})
	for _, want := range []string{"A Display Name", "Bob@Mail.Example", "bob@mail.example", "eyJhbGciOiJSUzI1NiJ9.secret"} {
		if !s.secrets[want] {
			t.Errorf("remember missed %q: %v", want, s.secrets)
		}
	}
	if s.secrets["short"] {
		t.Error("remember registered a username shorter than 8 characters")
	}
}
