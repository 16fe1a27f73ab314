package replay

import (
	"context"
	"errors"
	"fmt"

	"github.com/IBM/sarama"

	"profiles/platform/topology"
)

// ErrCurrent is returned by Drop for the current generation.
var ErrCurrent = errors.New("cannot drop the current generation")

// Drop deletes generation n's snapshot and email index topics and the
// projector's consumer group of n, and forgets its build. The current
// generation cannot be dropped. Groups still in use (members that have not
// left yet) are reported and kept.
func Drop(ctx context.Context, env Env, n int, groups ...string) error {
	ctl, err := topology.LoadControl(ctx, env.Client, env.Kafka.ControlTopic)
	if err != nil {
		return err
	}
	if n == ctl.CurrentGeneration() {
		return fmt.Errorf("%w (%d)", ErrCurrent, n)
	}
	admin, err := sarama.NewClusterAdminFromClient(env.Client) // not closed: it would close the client
	if err != nil {
		return err
	}
	gen := env.Kafka.ForGeneration(n)
	for _, topic := range []string{gen.SnapshotsTopic, gen.EmailIndexTopic} {
		err := admin.DeleteTopic(topic)
		switch {
		case errors.Is(err, sarama.ErrUnknownTopicOrPartition):
			fmt.Fprintf(env.Out, "replay: %s does not exist\n", topic)
		case err != nil:
			return fmt.Errorf("delete %s: %w", topic, err)
		default:
			fmt.Fprintf(env.Out, "replay: deleted %s\n", topic)
		}
	}
	for _, base := range append([]string{env.ProjectorGroup}, groups...) {
		group := topology.GenerationGroup(base, n)
		if err := admin.DeleteConsumerGroup(group); err != nil && !errors.Is(err, sarama.ErrGroupIDNotFound) {
			fmt.Fprintf(env.Out, "replay: consumer group %s kept: %v\n", group, err)
		}
	}
	w, err := topology.NewControlWriter(env.Kafka, "replay")
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.PutBuild(n, nil); err != nil {
		return err
	}
	fmt.Fprintf(env.Out, "replay: generation %d dropped\n", n)
	return nil
}
