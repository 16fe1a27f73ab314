package replay

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/topology"
)

// VerifyReport is the result of Verify.
type VerifyReport struct {
	Live, Candidate int
	// LiveProfiles and CandidateProfiles count the live (not deleted)
	// profiles of each generation's snapshot topic.
	LiveProfiles, CandidateProfiles int
	// Equal keys hold the same version and checksum (or are deleted in
	// both); NewerInLive keys were changed by events after the cutoff,
	// which the candidate's projector folds once it runs.
	Equal, NewerInLive int
	// Differences are keys that disagree: the same version with another
	// checksum, a candidate ahead of the live generation, or a profile
	// live in one generation only. DiffCount counts them all; Differences
	// lists the first few.
	DiffCount   int
	Differences []Difference
	// IndexEqual, IndexNewerInLive and IndexDiffs are the same for the
	// email index topics.
	IndexEqual, IndexNewerInLive, IndexDiffs int
}

// OK reports whether the candidate matches the live generation.
func (r VerifyReport) OK() bool { return r.DiffCount == 0 && r.IndexDiffs == 0 }

// Difference is one disagreeing key.
type Difference struct {
	Topic, Key string
	Live, New  string // "v3 sha256:ab12…", "deleted v4" or "absent"
}

// entry is one key of a compacted topic, reduced to what is compared.
type entry struct {
	version int64
	live    bool
	sum     [sha256.Size]byte
}

func (e entry) String() string {
	switch {
	case e.live:
		return fmt.Sprintf("v%d sha256:%x", e.version, e.sum[:6])
	case e.version > 0:
		return fmt.Sprintf("deleted v%d", e.version)
	default:
		return "absent"
	}
}

// Verify compares generation n with the live one, key by key, on the
// snapshot topics and on the email index topics. It first waits (up to
// wait) until the live projector has folded the log up to n's cutoff, so
// that both describe at least the same events. A profile is compared by
// its version and a SHA-256 of its canonical JSON (decoded and encoded
// again, so that the byte layout of older writers does not matter). A
// clean result is recorded in the control topic; Switch requires it.
func Verify(ctx context.Context, env Env, n int, wait time.Duration) (VerifyReport, error) {
	var rep VerifyReport
	ctl, err := topology.LoadControl(ctx, env.Client, env.Kafka.ControlTopic)
	if err != nil {
		return rep, err
	}
	build, ok := ctl.Builds[n]
	if !ok {
		return rep, fmt.Errorf("%w: %d", topology.ErrUnknownGeneration, n)
	}
	rep.Live, rep.Candidate = ctl.CurrentGeneration(), n
	if n == rep.Live {
		return rep, fmt.Errorf("generation %d is the live one: nothing to compare it with", n)
	}
	if err := waitForProjector(ctx, env, topology.GenerationGroup(env.ProjectorGroup, rep.Live), build.Folded, wait); err != nil {
		return rep, err
	}
	live, cand := env.Kafka.ForGeneration(rep.Live), env.Kafka.ForGeneration(n)

	var liveSnaps, candSnaps, liveIndex, candIndex map[string]entry
	var g errGroup
	g.Go(func() (err error) { liveSnaps, err = readCompacted(ctx, env, live.SnapshotsTopic, false); return })
	g.Go(func() (err error) { candSnaps, err = readCompacted(ctx, env, cand.SnapshotsTopic, false); return })
	g.Go(func() (err error) { liveIndex, err = readCompacted(ctx, env, live.EmailIndexTopic, true); return })
	g.Go(func() (err error) { candIndex, err = readCompacted(ctx, env, cand.EmailIndexTopic, true); return })
	if err := g.Wait(); err != nil {
		return rep, err
	}
	rep.LiveProfiles, rep.CandidateProfiles = countLive(liveSnaps), countLive(candSnaps)
	tally := func(topic string, equal, newer, diffs *int) func(string, int, entry, entry) {
		return func(key string, verdict int, l, c entry) {
			switch verdict {
			case same:
				*equal++
			case newerInLive:
				*newer++
			default:
				*diffs++
				if len(rep.Differences) < 20 {
					rep.Differences = append(rep.Differences, Difference{Topic: topic, Key: key, Live: l.String(), New: c.String()})
				}
			}
		}
	}
	compare(liveSnaps, candSnaps, tally(cand.SnapshotsTopic, &rep.Equal, &rep.NewerInLive, &rep.DiffCount))
	compare(liveIndex, candIndex, tally(cand.EmailIndexTopic, &rep.IndexEqual, &rep.IndexNewerInLive, &rep.IndexDiffs))
	fmt.Fprintf(env.Out, "replay: verify generation %d against live generation %d: %d live profiles vs %d; %d keys equal, %d newer in live (changed after the cutoff), %d different; email index: %d equal, %d newer in live, %d different\n",
		n, rep.Live, rep.LiveProfiles, rep.CandidateProfiles, rep.Equal, rep.NewerInLive, rep.DiffCount, rep.IndexEqual, rep.IndexNewerInLive, rep.IndexDiffs)
	for _, d := range rep.Differences {
		fmt.Fprintf(env.Out, "  differs: %s key %q: live %s, new %s\n", d.Topic, d.Key, d.Live, d.New)
	}
	if rep.OK() {
		now := time.Now().UTC()
		build.VerifiedAt = &now
		w, err := topology.NewControlWriter(env.Kafka, "replay")
		if err != nil {
			return rep, err
		}
		defer w.Close()
		if err := w.PutBuild(n, &build); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func countLive(m map[string]entry) int {
	n := 0
	for _, e := range m {
		if e.live {
			n++
		}
	}
	return n
}

const (
	same = iota
	newerInLive
	different
)

// compare calls f for every key of either map with its verdict. Keys that
// are not live on either side (deleted, or compacted away) are the same
// whatever versions their tombstones carry.
func compare(live, cand map[string]entry, f func(key string, verdict int, l, c entry)) {
	keys := make([]string, 0, len(live)+len(cand))
	for k := range live {
		keys = append(keys, k)
	}
	for k := range cand {
		if _, ok := live[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		l, c := live[k], cand[k]
		switch {
		case !l.live && !c.live:
			f(k, same, l, c)
		case l.version == c.version && l.live == c.live && l.sum == c.sum:
			f(k, same, l, c)
		case l.version > c.version:
			f(k, newerInLive, l, c)
		default:
			f(k, different, l, c)
		}
	}
}

// readCompacted reads a snapshot or email index topic to its end and keeps
// the latest record of every key. Undecodable records count as different
// from anything (their checksum is of the raw bytes, at version 0).
func readCompacted(ctx context.Context, env Env, topic string, index bool) (map[string]entry, error) {
	var mu sync.Mutex
	out := map[string]entry{}
	err := kafkax.Read(ctx, env.Client, kafkax.ReadOptions{
		Topic: topic, StopAtEnd: true, MaxBatch: 10000,
		Handle: func(_ context.Context, _ int32, recs []*sarama.ConsumerMessage) error {
			local := make(map[string]entry, len(recs))
			for _, r := range recs {
				uid := string(r.Key)
				if index {
					if _, u, ok := topology.SplitIndexKey(r.Key); ok {
						uid = u
					}
				}
				prof, err := env.Codec.DecodeSnapshot(uid, r.Value, kafkax.HeaderValue(r, events.HeaderVersion))
				if errors.Is(err, pii.ErrKeyUnavailable) {
					return err
				}
				if err != nil {
					local[string(r.Key)] = entry{live: true, sum: sha256.Sum256(r.Value)}
					continue
				}
				e := entry{version: prof.Version, live: !prof.Deleted}
				if e.live {
					canon, _ := json.Marshal(prof)
					e.sum = sha256.Sum256(canon)
				}
				local[string(r.Key)] = e
			}
			mu.Lock()
			for k, e := range local {
				out[k] = e
			}
			mu.Unlock()
			return nil
		},
	})
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return out, err
}

// waitForProjector waits until group has committed at least want on the
// event log, printing progress.
func waitForProjector(ctx context.Context, env Env, group string, want map[int32]int64, wait time.Duration) error {
	admin, err := sarama.NewClusterAdminFromClient(env.Client) // not closed: it would close the client
	if err != nil {
		return err
	}
	parts := make([]int32, 0, len(want))
	for p := range want {
		parts = append(parts, p)
	}
	deadline := time.Now().Add(wait)
	lastLine := time.Time{}
	for {
		got, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{env.Kafka.EventsTopic: parts})
		if err != nil {
			return err
		}
		var behind int64
		for p, off := range want {
			b := got.GetBlock(env.Kafka.EventsTopic, p)
			switch {
			case b == nil || b.Offset < 0:
				behind += off
			case b.Offset < off:
				behind += off - b.Offset
			}
		}
		if behind == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the live projector (group %s) is still %d events short of the cutoff after %s", group, behind, wait)
		}
		if time.Since(lastLine) >= env.every() {
			fmt.Fprintf(env.Out, "replay: waiting for the live projector (group %s) to reach the cutoff: %d events to go\n", group, behind)
			lastLine = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// errGroup runs functions concurrently and returns the first error.
type errGroup struct {
	wg   sync.WaitGroup
	once sync.Once
	err  error
}

func (g *errGroup) Go(f func() error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := f(); err != nil {
			g.once.Do(func() { g.err = err })
		}
	}()
}

func (g *errGroup) Wait() error { g.wg.Wait(); return g.err }
