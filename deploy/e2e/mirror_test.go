package e2e

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// startTargetCluster starts a second single-node Kafka cluster (the "other
// region") on free ports, stopped when the test ends, and returns its
// bootstrap address.
func startTargetCluster(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "target-kafka")
	port, controller := freePort(t), freePort(t)
	script := filepath.Join(repoRoot, "deploy", "kafka.sh")
	out, err := exec.Command(script, "start", "--fresh", "--data", dir, "--port", fmt.Sprint(port), "--controller-port", fmt.Sprint(controller),
		"--extra", "offsets.topic.num.partitions=2", "transaction.state.log.num.partitions=2").CombinedOutput()
	if err != nil {
		t.Fatalf("start the target cluster: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command(script, "stop", "--data", dir).Run() })
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// startReplicator registers and starts a replicator instance with env.
func (s *System) startReplicator(env map[string]string) string {
	s.t.Helper()
	name := fmt.Sprintf("replicator-%d", len(s.Instances("replicator")))
	s.add("replicator", name)
	for k, v := range env {
		s.SetEnv(name, k, v)
	}
	s.Start(name)
	s.WaitReady(name)
	return name
}

// compactedState returns the latest value of every key of topic, without
// the keys whose latest record is a tombstone.
func compactedState(t *testing.T, c sarama.Client, topic string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, r := range ReadTopic(t, c, topic, nil) {
		if r.Value == nil {
			delete(out, string(r.Key))
		} else {
			out[string(r.Key)] = r.Value
		}
	}
	return out
}

// partitionLogs returns, per partition, the key and value of every record.
func partitionLogs(t *testing.T, c sarama.Client, topic string) map[int32][]string {
	t.Helper()
	out := map[int32][]string{}
	for _, r := range ReadTopic(t, c, topic, nil) {
		out[r.Partition] = append(out[r.Partition], string(r.Key)+"="+string(r.Value))
	}
	return out
}

func sameState(a, b map[string][]byte) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d keys vs %d", len(a), len(b))
	}
	for k, v := range a {
		if !bytes.Equal(b[k], v) {
			return fmt.Sprintf("key %s: %q vs %q", k, v, b[k])
		}
	}
	return ""
}

// checkMirror waits until the target cluster's compacted snapshot state
// equals ours key for key, then checks that its copy of the event log
// equals ours record for record, partition by partition (no gap, nothing
// twice).
func checkMirror(t *testing.T, s *System, target string) {
	t.Helper()
	source := KafkaReadCommitted(t)
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V4_0_0_0
	cfg.Consumer.IsolationLevel = sarama.ReadCommitted
	tc, err := sarama.NewClient([]string{target}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()

	snapshots, events := s.env["SNAPSHOTS_TOPIC"], s.env["EVENTS_TOPIC"]
	want := compactedState(t, source, snapshots)
	deadline := time.Now().Add(90 * time.Second)
	for {
		diff := sameState(want, compactedState(t, tc, snapshots))
		if diff == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mirrored snapshot state differs: %s", diff)
		}
		time.Sleep(time.Second)
		want = compactedState(t, source, snapshots)
	}
	t.Logf("mirror: snapshot state equal, %d live profiles", len(want))

	srcLog, dstLog := partitionLogs(t, source, events), partitionLogs(t, tc, events)
	total := 0
	for p, recs := range srcLog {
		total += len(recs)
		if got := dstLog[p]; strings.Join(got, "\n") != strings.Join(recs, "\n") {
			t.Fatalf("event log partition %d: %d records mirrored, %d in the source, or in another order", p, len(got), len(recs))
		}
	}
	t.Logf("mirror: event log equal, %d events", total)
}
