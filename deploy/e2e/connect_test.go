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
	"strings"
	"syscall"
	"testing"
	"time"

	"profiles/platform/testenv"
)

// connectLibs returns the jars of the Kafka distribution deploy/kafka.sh
// fetched (the broker's), which include Kafka Connect's runtime, its
// JsonConverter and the FileStreamSink connector.
func connectLibs(t *testing.T) string {
	t.Helper()
	version := os.Getenv("KAFKA_VERSION")
	if version == "" {
		version = "4.1.1" // deploy/kafka.sh's default
	}
	libs := filepath.Join(repoRoot, ".cache", "kafka", version, "libs")
	for _, jar := range []string{"connect-runtime", "connect-json", "connect-file"} {
		if !fileExists(filepath.Join(libs, jar+"-"+version+".jar")) {
			testenv.Missing(t, "%s has no %s jar; deploy/kafka.sh fetch brings it", libs, jar)
		}
	}
	return libs
}

// connectWorker is a Kafka Connect standalone worker run by a test.
type connectWorker struct {
	dir  string // its data dir, under .data/
	file string // the FileStreamSink's output
	cmd  *exec.Cmd
	done chan struct{}
}

// startConnect runs a standalone Kafka Connect worker against the test
// broker, with one FileStreamSink connector that writes every value of
// topic to a file, read with the JsonConverter (schemas.enable=false), as
// a downstream system would read the clear topic. Its data dir is under
// .data/ (kept if the test fails); it is stopped by PID when the test ends.
func startConnect(t *testing.T, s *System, topic string) *connectWorker {
	t.Helper()
	java, err := exec.LookPath("java")
	if err != nil {
		testenv.Missing(t, "java is not on PATH (Kafka Connect needs Java 17 or newer)")
	}
	libs := connectLibs(t)
	dir := filepath.Join(repoRoot, ".data", fmt.Sprintf("test-connect-%06d", rand.IntN(1e6)))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w := &connectWorker{dir: dir, file: filepath.Join(dir, "sink.txt"), done: make(chan struct{})}
	port := freePort(t)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	worker := write("worker.properties", fmt.Sprintf(`bootstrap.servers=%s
listeners=http://127.0.0.1:%d
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
value.converter.schemas.enable=false
offset.storage.file.filename=%s
offset.flush.interval.ms=1000
# The clear topic is written in transactions: read only committed records.
consumer.isolation.level=read_committed
consumer.auto.offset.reset=earliest
`, s.Brokers, port, filepath.Join(dir, "connect.offsets")))
	connector := write("clear-sink.properties", fmt.Sprintf(`name=%s-clear-sink
connector.class=org.apache.kafka.connect.file.FileStreamSinkConnector
tasks.max=1
topics=%s
file=%s
`, s.name, topic, w.file))
	log4j := write("log4j2.properties", `status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
`)
	logFile, err := os.Create(filepath.Join(dir, "connect.log"))
	if err != nil {
		t.Fatal(err)
	}
	w.cmd = exec.Command(java, "-Xms64m", "-Xmx256m", "-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile="+log4j, "-cp", filepath.Join(libs, "*"),
		"org.apache.kafka.connect.cli.ConnectStandalone", worker, connector)
	w.cmd.Stdout, w.cmd.Stderr = logFile, logFile
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = w.cmd.Wait(); logFile.Close(); close(w.done) }()
	t.Logf("Kafka Connect standalone: pid %d, REST on 127.0.0.1:%d, data in %s", w.cmd.Process.Pid, port, dir)
	t.Cleanup(func() {
		w.stop(t)
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "connect.log"))
			t.Logf("Kafka Connect's log (kept in %s):\n%s", dir, tail(log, 8000))
			return
		}
		_ = os.RemoveAll(dir)
	})
	return w
}

// stop ends the worker by its PID: SIGTERM (Connect stops its tasks and
// flushes its offsets), then SIGKILL after 20 s.
func (w *connectWorker) stop(t *testing.T) {
	select {
	case <-w.done:
		return
	default:
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(20 * time.Second):
		t.Logf("Kafka Connect (pid %d) did not stop in 20 s; killing it", w.cmd.Process.Pid)
		_ = w.cmd.Process.Kill()
		<-w.done
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// sinkLines waits until the sink file has at least n lines, and returns
// them.
func (w *connectWorker) sinkLines(t *testing.T, n int, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	var lines []string
	for {
		b, _ := os.ReadFile(w.file)
		lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(b) == 0 {
			lines = nil
		}
		if len(lines) >= n {
			return lines
		}
		select {
		case <-w.done:
			t.Fatalf("Kafka Connect exited (%v) with %d of %d lines in its sink file", w.cmd.ProcessState, len(lines), n)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sink file has %d of %d lines after %s: %q", len(lines), n, within, lines)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// mapField matches one entry of a java.util.Map's toString: what
// FileStreamSink prints for a value the JsonConverter parsed into a map.
var mapField = regexp.MustCompile(`(\w+)=([^,}]*)`)

func parseSinkLine(line string) map[string]string {
	if !strings.HasPrefix(line, "{") || !strings.HasSuffix(line, "}") {
		return nil
	}
	out := map[string]string{}
	for _, m := range mapField.FindAllStringSubmatch(line, -1) {
		out[m[1]] = m[2]
	}
	return out
}

// The clear topic, read by the real Kafka Connect runtime: a standalone
// worker with the FileStreamSink connector and the JsonConverter
// (schemas.enable=false) receives the profiles in clear, a change as a
// newer value, and a delete as a tombstone (FileStreamSink prints "null"),
// while the event log stays sealed. After the configured erasure bound
// (max.compaction.lag.ms, 4 s here), with no other write, the replicator
// appends the tombstone once more (so that the segment rolls) and
// compaction removes every clear value of the deleted profile, and the
// old values of the changed one, from the topic: only the tombstones and
// the current profile are left.
func TestClearTopicFeedsKafkaConnectAndErasesWithinTheBound(t *testing.T) {
	needKafka(t)
	t0 := time.Now()
	// One partition: the sink file is then in the topic's order.
	s := StartSystem(t, Options{Partitions: 1})
	clear := s.name + ".clear"
	const bound = 4 * time.Second
	s.startReplicator(map[string]string{
		"SINK": "clear", "CLEAR_TOPIC": clear,
		"CHECKPOINT_TOPIC": s.name + ".clear-checkpoints", "TRANSACTIONAL_ID": s.name + ".clear",
		"CLEAR_MAX_COMPACTION_LAG": bound.String(), "CLEAR_DELETE_RETENTION": "1h",
	})
	w := startConnect(t, s, clear)

	post := func(username, email string) profile {
		t.Helper()
		r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": username, "email": email}, nil)
		if r.Status != http.StatusCreated {
			t.Fatalf("POST = %d %s", r.Status, r.Body)
		}
		var p profile
		r.JSON(t, &p)
		return p
	}
	ada := post("ada", "ada.lovelace@mail.com")
	bob := post("bob", "bob.gone@mail.com")
	// A change of the email alone: one event, version 2. (A PUT that
	// changes both fields appends two events; the projector may fold them
	// into one snapshot or two.)
	if r := s.Do(http.MethodPut, "/api/profile/"+ada.UID, map[string]string{"username": "ada", "email": "ada.byron@mail.com"}, map[string]string{"If-Match": `"1"`}); r.Status != http.StatusOK {
		t.Fatalf("PUT = %d %s", r.Status, r.Body)
	}
	want := []map[string]string{
		{"uid": ada.UID, "username": "ada", "email": "ada.lovelace@mail.com", "version": "1"},
		{"uid": bob.UID, "username": "bob", "email": "bob.gone@mail.com", "version": "1"},
		{"uid": ada.UID, "username": "ada", "email": "ada.byron@mail.com", "version": "2"},
		nil, // bob's delete
	}
	// Bob is deleted only once his profile reached the sink: a profile
	// deleted before the sink read its snapshot never shows in clear at
	// all (its data key is gone by then; the sink writes only the
	// tombstone).
	w.sinkLines(t, 3, 75*time.Second)
	if r := s.Do(http.MethodDelete, "/api/profile/"+bob.UID, nil, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s", r.Status, r.Body)
	}
	deletedAt := time.Now()
	lines := w.sinkLines(t, 4, 60*time.Second)
	t.Logf("sink file after %s:\n%s", time.Since(t0).Round(time.Millisecond), strings.Join(lines, "\n"))
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4", len(lines))
	}
	for i, exp := range want {
		if exp == nil {
			if lines[i] != "null" {
				t.Fatalf("line %d = %q, want the tombstone as FileStreamSink prints it: null", i+1, lines[i])
			}
			continue
		}
		got := parseSinkLine(lines[i])
		if got == nil {
			t.Fatalf("line %d = %q: not a value the JsonConverter parsed", i+1, lines[i])
		}
		for k, v := range exp {
			if got[k] != v {
				t.Fatalf("line %d = %q: %s = %q, want %q", i+1, lines[i], k, got[k], v)
			}
		}
		if got["createdAt"] == "" || got["displayName"] == "" {
			t.Fatalf("line %d = %q: no createdAt or displayName", i+1, lines[i])
		}
	}

	// The tombstone is keyed by the deleted profile, and the event log
	// still holds no personal data in clear.
	kc := KafkaReadCommitted(t)
	recs := ReadTopic(t, kc, clear, nil)
	if last := recs[len(recs)-1]; string(last.Key) != bob.UID || last.Value != nil {
		t.Fatalf("last record of the clear topic: key %q value %q, want bob's tombstone", last.Key, last.Value)
	}
	for _, r := range ReadTopic(t, kc, s.env["EVENTS_TOPIC"], nil) {
		for _, secret := range []string{"ada.lovelace@mail.com", "ada.byron@mail.com", "bob.gone@mail.com"} {
			if bytes.Contains(r.Value, []byte(secret)) {
				t.Fatalf("the event log holds %s in clear: %s", secret, r.Value)
			}
		}
	}

	// Erasure, with no other write to the partition: once the bound has
	// passed, the replicator appends the tombstone again, which rolls the
	// segment, and the cleaner must then remove the superseded values.
	deadline := deletedAt.Add(bound + 60*time.Second) // generous: a shared, loaded machine
	for {
		var left []string
		for _, r := range ReadTopic(t, kc, clear, nil) {
			if bytes.Contains(r.Value, []byte("bob.gone@mail.com")) || bytes.Contains(r.Value, []byte("ada.lovelace@mail.com")) {
				left = append(left, fmt.Sprintf("offset %d: %s", r.Offset, r.Value))
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after the delete the clear topic still holds superseded values:\n%s",
				time.Since(deletedAt).Round(time.Second), strings.Join(left, "\n"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The closing tombstone reached the sink too: a second "null".
	if lines := w.sinkLines(t, 5, 30*time.Second); lines[4] != "null" {
		t.Fatalf("line 5 = %q, want the closing tombstone", lines[4])
	}
	state := compactedState(t, kc, clear)
	if _, ok := state[bob.UID]; ok || !bytes.Contains(state[ada.UID], []byte("ada.byron@mail.com")) {
		t.Fatalf("clear topic state after compaction: %q", state)
	}
	t.Logf("superseded clear values compacted away %s after the delete (bound %s); test took %s",
		time.Since(deletedAt).Round(time.Millisecond), bound, time.Since(t0).Round(time.Millisecond))
}
