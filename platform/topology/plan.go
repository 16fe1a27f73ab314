package topology

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// TopicPlan is one topic as a platform team creates it: what Specs
// requires, with the configs the services would set on creation, and the
// replication factor (0: the services' default, min(3, brokers)).
type TopicPlan struct {
	Name              string            `json:"name"`
	Partitions        int32             `json:"partitions"`
	ReplicationFactor int16             `json:"replicationFactor"`
	Configs           map[string]string `json:"configs"`
}

// Plan returns specs as topics to create: each topic's required and extra
// configs together, with the replication factor rf.
func Plan(specs []TopicSpec, rf int16) []TopicPlan {
	out := make([]TopicPlan, 0, len(specs))
	for _, s := range specs {
		cfg := map[string]string{}
		maps.Copy(cfg, s.Extra)
		maps.Copy(cfg, s.Required)
		out = append(out, TopicPlan{Name: s.Name, Partitions: s.Partitions, ReplicationFactor: rf, Configs: cfg})
	}
	return out
}

// WriteCreateCommands writes plan as kafka-topics.sh commands, one per
// topic, configs in key order, to be run against $KAFKA_BROKERS. A
// replication factor of 0 is written as 3, the services' default on a
// cluster of three brokers or more.
func WriteCreateCommands(w io.Writer, plan []TopicPlan) error {
	if _, err := fmt.Fprintln(w, "# The topics of the profiles services (TOPICS_CREATE=false: create them first)."); err != nil {
		return err
	}
	for _, t := range plan {
		rf := t.ReplicationFactor
		if rf == 0 {
			rf = 3
		}
		var b strings.Builder
		fmt.Fprintf(&b, "kafka-topics.sh --bootstrap-server \"$KAFKA_BROKERS\" --create --topic %s --partitions %d --replication-factor %d", t.Name, t.Partitions, rf)
		for _, k := range slices.Sorted(maps.Keys(t.Configs)) {
			fmt.Fprintf(&b, " --config %s=%s", k, t.Configs[k])
		}
		if _, err := fmt.Fprintln(w, b.String()); err != nil {
			return err
		}
	}
	return nil
}
