package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/IBM/sarama"
)

// A platform team that creates the topics itself runs what `replay
// topics` prints (kafka-topics.sh commands, here Kafka's own TopicCommand
// through deploy/kafka.sh tool), and the services, with
// TOPICS_CREATE=false, start on those topics, create none of their own,
// and serve.
func TestTopicsAsReplayTopicsPrintsThemServeWithoutCreating(t *testing.T) {
	needKafka(t)
	prefix := fmt.Sprintf("e2e-topics-%06d", rand.IntN(1e6))
	env := map[string]string{
		"EVENTS_TOPIC": prefix + ".events", "SNAPSHOTS_TOPIC": prefix + ".snapshots", "EMAIL_INDEX_TOPIC": prefix + ".email-index",
		"EMAIL_CLAIMS_TOPIC": prefix + ".email-claims", "DEAD_LETTER_TOPIC": prefix + ".dead-letters", "CONTROL_TOPIC": prefix + ".control",
		"KEYS_TOPIC": prefix + ".profile-keys", "TOPIC_PARTITIONS": "4", "TOPIC_REPLICATION": "1", "TOPICS_CREATE": "false",
	}

	cmd := exec.Command(filepath.Join(binDir, "replay"), "topics")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "KAFKA_BROKERS=127.0.0.1:1"} // no broker, no key
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("replay topics: %v\n%s", err, stderr.String())
	}
	var want []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.HasPrefix(line, "kafka-topics.sh ") {
			t.Fatalf("replay topics printed %q, want kafka-topics.sh commands", line)
		}
		f := strings.Fields(line)
		want = append(want, f[slices.Index(f, "--topic")+1])
	}
	if len(want) != 7 {
		t.Fatalf("replay topics printed %d topics, want 7:\n%s", len(want), out)
	}
	script := "set -e\nkafka-topics.sh() { \"$KAFKA_SH\" tool org.apache.kafka.tools.TopicCommand \"$@\"; }\n" + string(out)
	sh := exec.Command("bash", "-c", script)
	sh.Env = append(os.Environ(), "KAFKA_SH="+filepath.Join(repoRoot, "deploy", "kafka.sh"), "KAFKA_BROKERS="+brokers)
	if b, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("running what replay topics printed: %v\n%s", err, b)
	}

	s := StartSystem(t, Options{Env: env})
	r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "plat", "email": "plat@mail.com"}, nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("POST on the platform's topics = %d %s", r.Status, r.Body)
	}
	var p profile
	r.JSON(t, &p)
	if g := s.Do(http.MethodGet, "/api/profile/"+p.UID, nil, nil); g.Status != http.StatusOK {
		t.Fatalf("GET = %d %s", g.Status, g.Body)
	}

	admin, err := sarama.NewClusterAdmin(strings.Split(brokers, ","), sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	topics, err := admin.ListTopics()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for name, d := range topics {
		if strings.HasPrefix(name, prefix+".") {
			got = append(got, name)
			if name != env["CONTROL_TOPIC"] && d.NumPartitions != 4 {
				t.Errorf("%s has %d partitions, want 4", name, d.NumPartitions)
			}
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("topics of the system: %v, want exactly those replay topics printed: %v", got, want)
	}
}
