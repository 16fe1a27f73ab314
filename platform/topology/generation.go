package topology

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/platform/kafkax"
)

var generationGauge = promauto.NewGauge(prometheus.GaugeOpts{
	Name: "profiles_snapshot_generation",
	Help: "The snapshot generation this process serves or writes (0 until it has started on one).",
})

// ServingGeneration records, for the profiles_snapshot_generation metric,
// that this process now serves (or writes) generation n.
// FollowGenerations calls it when a run calls ready; a run that takes over
// before that (query-svc moves its routing first) calls it itself.
func ServingGeneration(n int) { generationGauge.Set(float64(n)) }

// A snapshot generation is one complete set of derived topics: the snapshot
// topic and the email index topic. Generation 1 uses the configured names
// (profile-snapshots, profile-email-index); generation n > 1 appends ".vN"
// (profile-snapshots.v2). The replay CLI builds a new generation from the
// event log next to the live one, verifies it, and switches every reader to
// it by writing one record to the control topic. The old generation stays
// until it is dropped explicitly.
//
// Every consumer group that reads a generation's topics is per generation
// too (GenerationGroup), so the readers of the next generation catch up in
// groups of their own while the current ones keep serving, and take over
// only when they are ready.

// Control topic keys.
const (
	controlCurrent = "current-generation"
	controlBuild   = "generation/"
)

// ErrUnknownGeneration is returned for a generation that the control topic
// does not describe (it was never built, or it was dropped).
var ErrUnknownGeneration = errors.New("unknown snapshot generation")

// ForGeneration returns c with the snapshot and email index topics of
// generation n (n < 2 is generation 1, the configured names).
func (c Config) ForGeneration(n int) Config {
	if n >= 2 {
		c.SnapshotsTopic = GenerationName(c.SnapshotsTopic, n)
		c.EmailIndexTopic = GenerationName(c.EmailIndexTopic, n)
	}
	return c
}

// GenerationName returns the name of base (a topic or a consumer group) in
// generation n: base itself for generation 1, base.vN after that.
func GenerationName(base string, n int) string {
	if n < 2 {
		return base
	}
	return base + ".v" + strconv.Itoa(n)
}

// GenerationGroup is GenerationName for consumer groups.
func GenerationGroup(base string, n int) string { return GenerationName(base, n) }

// Build describes a generation that replay has built.
type Build struct {
	Generation int       `json:"generation"`
	Snapshots  string    `json:"snapshots"`
	EmailIndex string    `json:"emailIndex"`
	BuiltAt    time.Time `json:"builtAt"`
	// Cutoff is, per event log partition, the offset up to which (not
	// including) the generation was folded from the log. The projector of
	// the generation continues from there.
	Cutoff map[int32]int64 `json:"cutoff"`
	// Folded is, per partition, the offset after the last event record
	// before Cutoff (the cutoff minus any trailing transaction markers):
	// the live projector has reached the cutoff once it has committed this.
	Folded   map[int32]int64 `json:"folded"`
	Events   int64           `json:"events"`
	Profiles int64           `json:"profiles"`
	// VerifiedAt is set when a verification against the live generation
	// found no difference.
	VerifiedAt *time.Time `json:"verifiedAt,omitempty"`
}

// Control is the content of the control topic: the current generation and
// the generations that have been built. The zero value means generation 1
// and nothing built.
type Control struct {
	Current int
	Builds  map[int]Build
}

// CurrentGeneration returns the generation readers must use (1 if none was
// ever switched to).
func (c Control) CurrentGeneration() int { return max(1, c.Current) }

type currentRecord struct {
	Generation int       `json:"generation"`
	SwitchedAt time.Time `json:"switchedAt"`
}

func (c *Control) apply(key string, value []byte) {
	switch {
	case key == controlCurrent && value != nil:
		var r currentRecord
		if json.Unmarshal(value, &r) == nil && r.Generation >= 1 {
			c.Current = r.Generation
		}
	case strings.HasPrefix(key, controlBuild):
		n, err := strconv.Atoi(strings.TrimPrefix(key, controlBuild))
		if err != nil {
			return
		}
		if c.Builds == nil {
			c.Builds = map[int]Build{}
		}
		var b Build
		if value == nil || json.Unmarshal(value, &b) != nil {
			delete(c.Builds, n)
			return
		}
		c.Builds[n] = b
	}
}

// LoadControl reads the whole control topic.
func LoadControl(ctx context.Context, client sarama.Client, topic string) (Control, error) {
	var c Control
	err := kafkax.Read(ctx, client, kafkax.ReadOptions{
		Topic: topic, StopAtEnd: true,
		Handle: func(_ context.Context, _ int32, recs []*sarama.ConsumerMessage) error {
			for _, r := range recs {
				c.apply(string(r.Key), r.Value)
			}
			return nil
		},
	})
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return c, err
}

// WatchGeneration follows the control topic until ctx ends. It calls
// changed with the current generation once it has read the whole topic,
// and again every time the current generation changes. changed runs on
// the watcher's goroutine, one call at a time.
func WatchGeneration(ctx context.Context, client sarama.Client, topic string, changed func(n int)) error {
	var (
		mu     sync.Mutex
		c      Control
		last   int
		caught bool
	)
	report := func() {
		if n := c.CurrentGeneration(); caught && n != last {
			last = n
			changed(n)
		}
	}
	return kafkax.Read(ctx, client, kafkax.ReadOptions{
		Topic: topic,
		Handle: func(_ context.Context, _ int32, recs []*sarama.ConsumerMessage) error {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range recs {
				c.apply(string(r.Key), r.Value)
			}
			report()
			return nil
		},
		CaughtUp: func(int32) {
			mu.Lock()
			defer mu.Unlock()
			caught = true
			report()
		},
	})
}

// ControlWriter writes the control topic. Only the replay CLI writes it.
type ControlWriter struct {
	producer sarama.SyncProducer
	topic    string
}

// NewControlWriter returns a writer of c.ControlTopic; Close it.
func NewControlWriter(c Config, clientID string) (*ControlWriter, error) {
	p, err := sarama.NewSyncProducer(c.Brokers, c.ProducerSarama(clientID))
	if err != nil {
		return nil, fmt.Errorf("control topic producer: %w", err)
	}
	return &ControlWriter{producer: p, topic: c.ControlTopic}, nil
}

// Close closes the producer.
func (w *ControlWriter) Close() error { return w.producer.Close() }

// PutBuild records (or, with a nil build, forgets) generation n's build.
func (w *ControlWriter) PutBuild(n int, b *Build) error {
	var value sarama.Encoder
	if b != nil {
		v, err := json.Marshal(b)
		if err != nil {
			return err
		}
		value = sarama.ByteEncoder(v)
	}
	return w.put(controlBuild+strconv.Itoa(n), value)
}

// SetCurrent makes generation n the one every reader uses.
func (w *ControlWriter) SetCurrent(n int) error {
	v, err := json.Marshal(currentRecord{Generation: n, SwitchedAt: time.Now().UTC()})
	if err != nil {
		return err
	}
	return w.put(controlCurrent, sarama.ByteEncoder(v))
}

func (w *ControlWriter) put(key string, value sarama.Encoder) error {
	_, _, err := w.producer.SendMessage(&sarama.ProducerMessage{Topic: w.topic, Key: sarama.StringEncoder(key), Value: value})
	if err != nil {
		return fmt.Errorf("write %s to %s: %w", key, w.topic, err)
	}
	return nil
}

// GenerationRun runs a service's work on the topics of generation n until
// ctx ends. It calls ready once it can take over from the runs of earlier
// generations (at once, or after catching up); FollowGenerations then
// cancels those. A run that returns while its ctx is still live ends
// FollowGenerations with its error.
type GenerationRun func(ctx context.Context, n int, ready func()) error

// FollowGenerations runs run for the current generation, and at every
// switch starts it for the new generation next to the old one, which it
// cancels when the new one is ready. It returns when ctx ends (nil), or
// with the first error of a run or of the control topic reader; in that
// case it cancels every run and waits for them first.
func FollowGenerations(ctx context.Context, client sarama.Client, topic string, log *slog.Logger, run GenerationRun) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type running struct {
		n      int
		cancel context.CancelFunc
	}
	var (
		mu   sync.Mutex
		runs []*running
		wg   sync.WaitGroup
		errc = make(chan error, 2)
	)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	start := func(n int) {
		rctx, rcancel := context.WithCancel(ctx)
		r := &running{n: n, cancel: rcancel}
		mu.Lock()
		runs = append(runs, r)
		mu.Unlock()
		log.Info("starting on snapshot generation", "generation", n)
		var once sync.Once
		ready := func() {
			once.Do(func() {
				ServingGeneration(n)
				mu.Lock()
				defer mu.Unlock()
				for i, old := range runs {
					if old == r {
						for _, o := range runs[:i] {
							log.Info("generation taken over; stopping the old one", "old", o.n, "new", n)
							o.cancel()
						}
						runs = runs[i:]
						return
					}
				}
			})
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := run(rctx, n, ready)
			if rctx.Err() == nil {
				if err == nil {
					err = fmt.Errorf("generation %d: run ended", n)
				}
				fail(err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := WatchGeneration(ctx, client, topic, start); err != nil && ctx.Err() == nil {
			fail(fmt.Errorf("control topic %s: %w", topic, err))
		}
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	wg.Wait()
	return err
}
