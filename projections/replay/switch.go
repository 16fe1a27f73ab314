package replay

import (
	"context"
	"errors"
	"fmt"

	"profiles/platform/topology"
)

// ErrNotVerified is returned by Switch for a generation that has no clean
// verification on record.
var ErrNotVerified = errors.New("generation not verified against the live one")

// Switch makes generation n current by writing it to the control topic.
// Every projector and query-svc instance follows that topic: the projectors
// stop folding into the old generation and continue n's from its cutoff,
// and each query-svc instance catches up with n in a consumer group of its
// own while it keeps answering from its view, then moves its routing over.
// n must have been built and, unless force is set, verified.
func Switch(ctx context.Context, env Env, n int, force bool) error {
	ctl, err := topology.LoadControl(ctx, env.Client, env.Kafka.ControlTopic)
	if err != nil {
		return err
	}
	if n == ctl.CurrentGeneration() {
		fmt.Fprintf(env.Out, "replay: generation %d is current already\n", n)
		return nil
	}
	if n > 1 {
		build, ok := ctl.Builds[n]
		if !ok {
			return fmt.Errorf("%w: %d", topology.ErrUnknownGeneration, n)
		}
		if build.VerifiedAt == nil && !force {
			return fmt.Errorf("%w: %d (run replay verify, or switch with -force)", ErrNotVerified, n)
		}
	}
	w, err := topology.NewControlWriter(env.Kafka, "replay")
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.SetCurrent(n); err != nil {
		return err
	}
	fmt.Fprintf(env.Out, "replay: switched from generation %d to %d; generation %d stays until `replay drop -generation %d`\n",
		ctl.CurrentGeneration(), n, ctl.CurrentGeneration(), ctl.CurrentGeneration())
	return nil
}
