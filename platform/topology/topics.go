package topology

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"

	"profiles/platform/kafkax"
)

// ErrTopicMismatch is returned (wrapped) by EnsureTopics when a topic exists
// with a partition count or policy that the services cannot run on.
var ErrTopicMismatch = errors.New("topic does not match the required layout")

// TopicSpec is the required layout of one topic.
type TopicSpec struct {
	Name       string
	Partitions int32
	// Required configs are checked on an existing topic and set on a new one.
	Required map[string]string
	// Extra configs are only set when the topic is created.
	Extra map[string]string
}

// Specs returns the layout of the profiles topics:
//   - the event log deletes nothing, ever (retention.ms=-1, retention.bytes=-1);
//   - the snapshot topic is compacted, so it keeps the latest value of each
//     profile and a delete (a tombstone) eventually removes the key;
//   - the email index is compacted the same way, one key per (email, uid);
//   - the email claims are compacted, one key per email;
//   - the data keys are compacted, one key per profile, and a deleted
//     profile's key is a tombstone; max.compaction.lag.ms bounds how long
//     the sealed key survives its tombstone on disk (the shredding window);
//   - dead letters are kept forever, for inspection;
//   - the control topic is compacted and has one partition, so that it is
//     read in order.
//
// The snapshot and email index topics are those of generation 1 here;
// GenerationSpecs gives them for any generation, and BaseSpecs gives the
// others.
func (c Config) Specs() []TopicSpec {
	return []TopicSpec{
		{Name: c.EventsTopic, Partitions: c.Partitions, Required: map[string]string{
			"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1",
		}},
		{Name: c.SnapshotsTopic, Partitions: c.Partitions, Required: map[string]string{
			"cleanup.policy": "compact",
		}, Extra: c.SnapshotsTopicConfig},
		{Name: c.EmailIndexTopic, Partitions: c.Partitions, Required: map[string]string{
			"cleanup.policy": "compact",
		}, Extra: c.SnapshotsTopicConfig},
		{Name: c.ClaimsTopic, Partitions: c.Partitions, Required: map[string]string{
			"cleanup.policy": "compact",
		}},
		{Name: c.KeysTopic, Partitions: c.Partitions, Required: map[string]string{
			"cleanup.policy": "compact",
		}, Extra: map[string]string{
			// A sealed key is compacted away within the hour after its
			// tombstone. The tombstone itself is kept (a hundred years):
			// it is the only proof that the key is gone rather than not
			// read yet (see Keyring), and it holds no personal data.
			"max.compaction.lag.ms": "3600000", "delete.retention.ms": "3153600000000",
		}},
		{Name: c.DeadLetterTopic, Partitions: c.Partitions, Required: map[string]string{
			"cleanup.policy": "delete", "retention.ms": "-1",
		}},
		{Name: c.ControlTopic, Partitions: 1, Required: map[string]string{
			"cleanup.policy": "compact",
		}},
	}
}

// BaseSpecs returns the topics that do not belong to a snapshot
// generation: the event log, the claims, the data keys, the dead letters and
// the control topic.
func (c Config) BaseSpecs() []TopicSpec {
	var out []TopicSpec
	for _, s := range c.Specs() {
		if s.Name != c.SnapshotsTopic && s.Name != c.EmailIndexTopic {
			out = append(out, s)
		}
	}
	return out
}

// GenerationSpecs returns the layout of the snapshot and email index topics
// of generation n: the same as generation 1's, under their own names.
func (c Config) GenerationSpecs(n int) []TopicSpec {
	g := c.ForGeneration(n)
	var out []TopicSpec
	for _, s := range c.Specs() {
		switch s.Name {
		case c.SnapshotsTopic:
			s.Name = g.SnapshotsTopic
		case c.EmailIndexTopic:
			s.Name = g.EmailIndexTopic
		default:
			continue
		}
		out = append(out, s)
	}
	return out
}

// EnsureTopics creates the missing topics of c.Specs and verifies the ones
// that exist. It refuses (ErrTopicMismatch) a topic whose partition count or
// required configs differ, because keys would then live on other partitions
// than the services expect. It is safe to run from several processes at
// once. The replication factor of a new topic is c.ReplicationFactor, or
// min(3, brokers) when that is 0; with 3 replicas, min.insync.replicas is 2.
//
// A broker that cannot be reached (kafkax.Unreachable: one that died, and
// that the metadata names until the controller fences it) is asked again
// until ctx ends, since the admin sends each request to one broker only.
//
// It ensures the base topics (BaseSpecs); the topics of a snapshot
// generation are ensured by EnsureGeneration, by the services that follow
// the generation, so that a generation that was dropped is not recreated.
func EnsureTopics(ctx context.Context, c Config, clientID string) error {
	return CreateTopics(ctx, c, clientID, c.BaseSpecs())
}

// EnsureGeneration is EnsureTopics for the topics of generation n.
func EnsureGeneration(ctx context.Context, c Config, clientID string, n int) error {
	return CreateTopics(ctx, c, clientID, c.GenerationSpecs(n))
}

// CreateTopics is EnsureTopics for the given specs.
func CreateTopics(ctx context.Context, c Config, clientID string, specs []TopicSpec) error {
	admin, err := kafkax.NewAdmin(ctx, c.Config, clientID)
	if err != nil {
		return err
	}
	defer admin.Close()

	if c.CheckOnly {
		for _, spec := range specs {
			if err := untilReachable(ctx, func() error { return verifyTopic(admin, spec) }); err != nil {
				if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
					return fmt.Errorf("topic %s does not exist, and TOPICS_CREATE=false: create it with %d partitions and %v: %w", spec.Name, spec.Partitions, spec.Required, err)
				}
				return fmt.Errorf("TOPICS_CREATE=false: %w", err)
			}
		}
		return nil
	}
	rf := c.ReplicationFactor
	if rf == 0 {
		var brokers []*sarama.Broker
		err := untilReachable(ctx, func() (err error) {
			brokers, _, err = admin.DescribeCluster()
			return err
		})
		if err != nil {
			return fmt.Errorf("describe cluster: %w", err)
		}
		rf = int16(min(3, len(brokers)))
	}
	for _, spec := range specs {
		if err := untilReachable(ctx, func() error { return ensureTopic(admin, spec, rf) }); err != nil {
			return err
		}
	}
	return nil
}

// untilReachable runs op until it returns an error that is not
// kafkax.Unreachable, or ctx ends (then it returns op's last error).
func untilReachable(ctx context.Context, op func() error) error {
	for {
		err := op()
		if err == nil || !kafkax.Unreachable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func ensureTopic(admin sarama.ClusterAdmin, spec TopicSpec, rf int16) error {
	configs := map[string]*string{}
	for k, v := range spec.Extra {
		configs[k] = &v
	}
	for k, v := range spec.Required {
		configs[k] = &v
	}
	if rf >= 3 {
		two := "2"
		configs["min.insync.replicas"] = &two
	}
	err := admin.CreateTopic(spec.Name, &sarama.TopicDetail{
		NumPartitions: spec.Partitions, ReplicationFactor: rf, ConfigEntries: configs,
	}, false)
	if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", spec.Name, err)
	}
	// A topic just created (here or by another service) takes a moment to
	// show up in metadata with leaders for every partition.
	for attempt := 0; ; attempt++ {
		err = verifyTopic(admin, spec)
		var kerr sarama.KError
		if err == nil || errors.Is(err, ErrTopicMismatch) || attempt == 60 || !errors.As(err, &kerr) {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func verifyTopic(admin sarama.ClusterAdmin, spec TopicSpec) error {
	metas, err := admin.DescribeTopics([]string{spec.Name})
	if err != nil {
		return fmt.Errorf("describe topic %s: %w", spec.Name, err)
	}
	if len(metas) != 1 {
		return fmt.Errorf("describe topic %s: %d answers", spec.Name, len(metas))
	}
	if !errors.Is(metas[0].Err, sarama.ErrNoError) {
		return fmt.Errorf("describe topic %s: %w", spec.Name, metas[0].Err)
	}
	for _, pm := range metas[0].Partitions {
		if !errors.Is(pm.Err, sarama.ErrNoError) {
			return fmt.Errorf("topic %s partition %d: %w", spec.Name, pm.ID, pm.Err)
		}
	}
	if got := int32(len(metas[0].Partitions)); got != spec.Partitions {
		return fmt.Errorf("%w: %s has %d partitions, want %d", ErrTopicMismatch, spec.Name, got, spec.Partitions)
	}
	results, err := admin.DescribeConfigs([]*sarama.ConfigResource{{Type: sarama.TopicResource, Name: spec.Name}}, sarama.DescribeConfigsOptions{})
	if err != nil {
		return fmt.Errorf("describe configs of %s: %w", spec.Name, err)
	}
	have := map[string]string{}
	for _, r := range results {
		if !errors.Is(r.ErrorCode, sarama.ErrNoError) {
			return fmt.Errorf("describe configs of %s: %w: %s", spec.Name, r.ErrorCode, r.ErrorMsg)
		}
		for _, e := range r.Configs {
			have[e.Name] = e.Value
		}
	}
	for k, want := range spec.Required {
		if have[k] != want {
			return fmt.Errorf("%w: %s has %s=%q, want %q", ErrTopicMismatch, spec.Name, k, have[k], want)
		}
	}
	return nil
}

// Connect is how a binary starts on Kafka: it ensures the base topics
// (waiting up to kafkax.ConnectTimeout for the broker, so that a service
// may start before it) and returns a client for clientID. The caller owns
// the client and closes it.
func Connect(ctx context.Context, c Config, clientID string) (sarama.Client, error) {
	startCtx, cancel := context.WithTimeout(ctx, kafkax.ConnectTimeout)
	defer cancel()
	if err := EnsureTopics(startCtx, c, clientID); err != nil {
		return nil, err
	}
	return kafkax.Connect(ctx, c.Config, clientID)
}
