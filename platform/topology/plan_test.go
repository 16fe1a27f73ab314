package topology

import (
	"strings"
	"testing"
)

// A plan carries every required and extra config of a spec, and prints as
// one kafka-topics.sh command per topic, configs in key order, with the
// services' default replication factor when none is set.
func TestPlanAndCreateCommands(t *testing.T) {
	c := Config{EventsTopic: "ev", SnapshotsTopic: "sn", EmailIndexTopic: "ix", ClaimsTopic: "cl", DeadLetterTopic: "dl",
		ControlTopic: "co", KeysTopic: "ke", Partitions: 6, SnapshotsTopicConfig: map[string]string{"segment.ms": "60000"}}
	plan := Plan(c.Specs(), 0)
	if len(plan) != 7 {
		t.Fatalf("%d topics, want 7", len(plan))
	}
	var b strings.Builder
	if err := WriteCreateCommands(&b, plan); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`kafka-topics.sh --bootstrap-server "$KAFKA_BROKERS" --create --topic ev --partitions 6 --replication-factor 3 --config cleanup.policy=delete --config retention.bytes=-1 --config retention.ms=-1` + "\n",
		`--topic sn --partitions 6 --replication-factor 3 --config cleanup.policy=compact --config segment.ms=60000` + "\n",
		`--topic ke --partitions 6 --replication-factor 3 --config cleanup.policy=compact --config delete.retention.ms=3153600000000 --config max.compaction.lag.ms=3600000` + "\n",
		`--topic co --partitions 1 --replication-factor 3 --config cleanup.policy=compact` + "\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the commands lack %q:\n%s", want, b.String())
		}
	}
	if p := Plan(c.GenerationSpecs(2), 1); len(p) != 2 || p[0].ReplicationFactor != 1 || !strings.HasSuffix(p[0].Name, ".v2") {
		t.Fatalf("generation 2's plan: %+v", p)
	}
}
