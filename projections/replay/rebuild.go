package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/topology"
	"profiles/projections/projection"
)

// ErrGenerationExists is returned by RebuildSnapshots when the topics of
// the requested generation exist already; drop the generation first.
var ErrGenerationExists = errors.New("the generation's topics exist already")

// Env is what every replay step needs.
type Env struct {
	Kafka  topology.Config
	Client sarama.Client
	// ProjectorGroup is the base consumer group of the projector
	// (PROJECTOR_GROUP); each generation has its own, see
	// topology.GenerationGroup.
	ProjectorGroup string
	// Out receives progress lines and summaries.
	Out io.Writer
	// Every is the progress line interval; 0 means two seconds.
	Every time.Duration
	Log   *slog.Logger
	// Token is a bearer token with the scope profiles:admin, sent to the
	// query-svc instances by RebuildViews (AUTH_TOKEN); empty: none (they
	// run with AUTH_MODE=off).
	Token string
	// Codec opens the events and snapshots read and seals the snapshots
	// written.
	Codec *pii.Codec
}

func (e Env) every() time.Duration {
	if e.Every <= 0 {
		return 2 * time.Second
	}
	return e.Every
}

// RebuildResult is the summary of RebuildSnapshots.
type RebuildResult struct {
	Build topology.Build
	// Poison counts events that could not be decoded or applied (the live
	// projector dead-letters them; replay skips them the same way).
	Poison, Duplicates int64
	Deleted            int64
	// Records written to the new snapshot and email index topics.
	Records int64
	// ReadTook is the time spent reading and folding the log, WriteTook the
	// time spent writing the new topics.
	ReadTook, WriteTook time.Duration
}

// EventsPerSecond is the fold rate: events read from the log per second of
// reading.
func (r RebuildResult) EventsPerSecond() float64 {
	if r.ReadTook <= 0 {
		return 0
	}
	return float64(r.Build.Events) / r.ReadTook.Seconds()
}

// RebuildSnapshots folds the event log, up to its end when it starts (the
// cutoff), into generation n (0: one after every generation built so far):
// it creates the generation's topics, writes one snapshot per profile (a
// tombstone for a deleted one) and one email index record per live
// profile, sets the generation's projector group to continue from the
// cutoff, and records the build in the control topic. The live generation
// is not touched.
func RebuildSnapshots(ctx context.Context, env Env, n int) (RebuildResult, error) {
	ctl, err := topology.LoadControl(ctx, env.Client, env.Kafka.ControlTopic)
	if err != nil {
		return RebuildResult{}, fmt.Errorf("read the control topic: %w", err)
	}
	if n == 0 {
		n = ctl.CurrentGeneration() + 1
		for built := range ctl.Builds {
			n = max(n, built+1)
		}
	}
	if n < 2 || n == ctl.CurrentGeneration() {
		return RebuildResult{}, fmt.Errorf("cannot rebuild generation %d: it is live or the original", n)
	}
	gen := env.Kafka.ForGeneration(n)
	if err := env.Client.RefreshMetadata(); err != nil {
		return RebuildResult{}, err
	}
	existing, err := env.Client.Topics()
	if err != nil {
		return RebuildResult{}, err
	}
	if slices.Contains(existing, gen.SnapshotsTopic) || slices.Contains(existing, gen.EmailIndexTopic) {
		return RebuildResult{}, fmt.Errorf("%w: %s or %s (replay drop --generation %d)", ErrGenerationExists, gen.SnapshotsTopic, gen.EmailIndexTopic, n)
	}
	if err := topology.CreateTopics(ctx, env.Kafka, "replay", env.Kafka.GenerationSpecs(n)); err != nil {
		return RebuildResult{}, err
	}

	// The cutoff, and the size of the work for the progress line.
	parts, err := env.Client.Partitions(env.Kafka.EventsTopic)
	if err != nil {
		return RebuildResult{}, err
	}
	cutoff, oldest := map[int32]int64{}, map[int32]int64{}
	var total int64
	for _, p := range parts {
		if cutoff[p], err = env.Client.GetOffset(env.Kafka.EventsTopic, p, sarama.OffsetNewest); err != nil {
			return RebuildResult{}, err
		}
		if oldest[p], err = env.Client.GetOffset(env.Kafka.EventsTopic, p, sarama.OffsetOldest); err != nil {
			return RebuildResult{}, err
		}
		total += cutoff[p] - oldest[p]
	}

	res := RebuildResult{Build: topology.Build{
		Generation: n, Snapshots: gen.SnapshotsTopic, EmailIndex: gen.EmailIndexTopic,
		Cutoff: cutoff, Folded: map[int32]int64{},
	}}
	fmt.Fprintf(env.Out, "replay: folding %s up to its end (%d offsets, events and transaction markers, in %d partitions) into generation %d (%s, %s)\n",
		env.Kafka.EventsTopic, total, len(parts), n, gen.SnapshotsTopic, gen.EmailIndexTopic)

	states, stats, err := fold(ctx, env, parts, cutoff, oldest, total)
	if err != nil {
		return res, err
	}
	res.ReadTook = stats.took
	res.Build.Events, res.Poison, res.Duplicates = stats.events, stats.poison, stats.duplicates
	for p, st := range states {
		res.Build.Folded[p] = st.folded
		res.Build.Profiles += int64(len(st.profiles))
	}

	start := time.Now()
	if res.Records, res.Deleted, err = write(ctx, env, gen, states); err != nil {
		return res, err
	}
	res.WriteTook = time.Since(start)

	if err := commitOffsets(env, topology.GenerationGroup(env.ProjectorGroup, n), cutoff); err != nil {
		return res, err
	}
	res.Build.BuiltAt = time.Now().UTC()
	w, err := topology.NewControlWriter(env.Kafka, "replay")
	if err != nil {
		return res, err
	}
	defer w.Close()
	if err := w.PutBuild(n, &res.Build); err != nil {
		return res, err
	}
	fmt.Fprintf(env.Out, "replay: generation %d built: %d events folded in %s (%.0f events/s), %d profiles (%d deleted), %d poison, %d duplicates; %d records written in %s\n",
		n, res.Build.Events, res.ReadTook.Round(time.Millisecond), res.EventsPerSecond(), res.Build.Profiles, res.Deleted,
		res.Poison, res.Duplicates, res.Records, res.WriteTook.Round(time.Millisecond))
	return res, nil
}

// partitionState is the fold of one event log partition.
type partitionState struct {
	profiles map[string]events.Profile
	// folded is the offset after the last record read.
	folded int64
}

type foldStats struct {
	events, poison, duplicates int64
	took                       time.Duration
}

// fold reads every partition up to its cutoff and folds it in memory, one
// goroutine per partition (kafkax.Read), so no state is shared.
func fold(ctx context.Context, env Env, parts []int32, cutoff, oldest map[int32]int64, total int64) (map[int32]*partitionState, foldStats, error) {
	states := map[int32]*partitionState{}
	for _, p := range parts {
		states[p] = &partitionState{profiles: map[string]events.Profile{}, folded: oldest[p]}
	}
	var (
		mu    sync.Mutex
		stats foldStats
	)
	prog := NewProgress("replay: reading events", "events", total)
	stop := prog.Report(ctx, env.Out, env.every())
	err := kafkax.Read(ctx, env.Client, kafkax.ReadOptions{
		Topic: env.Kafka.EventsTopic, Partitions: parts, StopAtEnd: true, MaxBatch: 10000,
		Until: func(p int32) int64 { return cutoff[p] },
		Handle: func(_ context.Context, p int32, recs []*sarama.ConsumerMessage) error {
			st := states[p]
			var poison, dups int64
			for _, r := range recs {
				e, err := env.Codec.DecodeEvent(r.Value)
				if errors.Is(err, pii.ErrKeyUnavailable) {
					return err // the replay fails loudly rather than fold a gap
				}
				if err == nil {
					prev := st.profiles[e.UID]
					if events.IsDuplicate(prev, e) {
						dups++
						continue
					}
					var next events.Profile
					if next, err = events.Apply(prev, e); err == nil {
						st.profiles[e.UID] = next
						continue
					}
				}
				poison++
				env.Log.Warn("skipping a poison event", "partition", p, "offset", r.Offset, "err", err)
			}
			next := recs[len(recs)-1].Offset + 1
			prog.Advance(next - st.folded) // the records and the markers between them
			st.folded = next
			prog.Add(int64(len(recs)))
			mu.Lock()
			stats.events += int64(len(recs))
			stats.poison += poison
			stats.duplicates += dups
			mu.Unlock()
			return nil
		},
	})
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err == nil {
		// Every partition was read up to its cutoff: what lies between the
		// last record and the cutoff are transaction markers.
		for p, st := range states {
			prog.Advance(cutoff[p] - st.folded)
		}
	}
	stop(err)
	stats.took = prog.Elapsed()
	return states, stats, err
}

// write produces the folded state into the generation's topics with an
// asynchronous, idempotent producer (acks=all), so that many records are
// in flight at once, and waits until every one is acknowledged.
func write(ctx context.Context, env Env, gen topology.Config, states map[int32]*partitionState) (records, deleted int64, err error) {
	cfg := env.Kafka.ProducerSarama("replay")
	cfg.Producer.Flush.Bytes = 512 << 10
	cfg.Producer.Flush.Frequency = 5 * time.Millisecond
	cfg.Producer.Compression = sarama.CompressionLZ4
	producer, err := sarama.NewAsyncProducer(env.Kafka.Brokers, cfg)
	if err != nil {
		return 0, 0, fmt.Errorf("producer: %w", err)
	}
	prog := NewProgress("replay: writing generation", "records", 0)
	stop := prog.Report(ctx, env.Out, env.every())
	defer func() { stop(err) }()

	var (
		wg       sync.WaitGroup
		firstErr error
		once     sync.Once
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range producer.Successes() {
			prog.Add(1)
		}
	}()
	go func() {
		defer wg.Done()
		for perr := range producer.Errors() {
			once.Do(func() { firstErr = perr.Err })
		}
	}()
	send := func(m *sarama.ProducerMessage) bool {
		select {
		case producer.Input() <- m:
			records++
			return true
		case <-ctx.Done():
			return false
		}
	}
	codec := env.Codec
	target := projection.Target{Snapshots: gen.SnapshotsTopic, EmailIndex: gen.EmailIndexTopic}
send:
	for _, st := range states {
		for _, prof := range st.profiles {
			// The folded final state, as if written from nothing in one step.
			recs, err := projection.Step(codec, target, events.Profile{}, prof, nil)
			if err != nil {
				once.Do(func() { firstErr = err })
				break send
			}
			headers := projection.RecordHeaders(recs[0].Headers) // one map for every record of the step
			for _, r := range recs {
				if r.Value == nil && r.Topic == gen.SnapshotsTopic {
					deleted++
				}
				if !send(r.Message(headers)) {
					break send
				}
			}
		}
	}
	producer.AsyncClose()
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return records, deleted, fmt.Errorf("write generation %s: %w", gen.SnapshotsTopic, firstErr)
	}
	return records, deleted, nil
}

// commitOffsets sets the committed offsets of group on the event log, so
// that the generation's projector continues from the cutoff. The group has
// no members yet, so a plain offset commit is allowed.
func commitOffsets(env Env, group string, offsets map[int32]int64) error {
	om, err := sarama.NewOffsetManagerFromClient(group, env.Client)
	if err != nil {
		return err
	}
	defer om.Close()
	for p, off := range offsets {
		pom, err := om.ManagePartition(env.Kafka.EventsTopic, p)
		if err != nil {
			return err
		}
		pom.MarkOffset(off, "")
		defer pom.Close()
	}
	om.Commit()
	// Commit reports nothing; read the offsets back to be sure. (The admin
	// is not closed: that would close the shared client.)
	admin, err := sarama.NewClusterAdminFromClient(env.Client)
	if err != nil {
		return err
	}
	parts := make([]int32, 0, len(offsets))
	for p := range offsets {
		parts = append(parts, p)
	}
	got, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{env.Kafka.EventsTopic: parts})
	if err != nil {
		return err
	}
	for p, off := range offsets {
		b := got.GetBlock(env.Kafka.EventsTopic, p)
		if b == nil || b.Offset != off {
			return fmt.Errorf("committing offset %d of %s/%d for group %s did not take", off, env.Kafka.EventsTopic, p, group)
		}
	}
	return nil
}
