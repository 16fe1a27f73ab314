package adapters

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/command-svc/internal/app"
	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/topology"
)

// ErrNotWriter is returned (wrapped) by Append when this instance holds no
// writer for the profile's partition: it is not its owner, or it was fenced
// off because another instance took the partition over.
var ErrNotWriter = app.ErrNotWriter

// ErrAppendTimeout is returned (wrapped) by Append and WriteClaim when the
// event log did not take the records within the append timeout (the
// cluster has too few in-sync replicas, or its transaction coordinator is
// unreachable). A transaction still open at the deadline is aborted
// instead of committed, so the records were not written, unless the
// commit itself had begun: its outcome is then unknown to the caller (see
// TxnEventLog.Late).
var ErrAppendTimeout = errors.New("the event log did not accept the append in time")

// ErrOutcomeUnknown is returned (wrapped) by Append and WriteClaim when the
// transaction's commit had begun and it is not known whether it
// committed: the caller gave up during the commit (with ErrAppendTimeout
// as well), or the commit failed without a refusal (the producer broke,
// or a replacement fenced it mid-commit). It is never ErrNotWriter, so
// the routing layer does not send the command again; the client's retry
// with the same Idempotency-Key is answered as the first attempt was.
var ErrOutcomeUnknown = errors.New("the commit had begun and its outcome is not known")

// LateCommits is told about a transaction that committed after its caller
// had given up with ErrAppendTimeout, while the partition is still locked,
// so that the in-memory state matches the log before the partition's next
// append. command-svc's state.Store implements it.
type LateCommits interface {
	Apply(e events.Event) error
	PutClaim(email string, c events.Claim) error
}

// DataKeys is the keyring command-svc encrypts with (pii.Keyring).
type DataKeys interface {
	// DataKey waits for uid's key (see pii.Keyring.DataKey).
	DataKey(uid string) (*pii.DataKey, error)
	// Known returns uid's key without waiting, if it is known.
	Known(uid string) (*pii.DataKey, bool)
	Put(uid string, dk *pii.DataKey)
	Forget(uid string)
}

// Profiles gives the current state of a profile (command-svc's state).
type Profiles interface {
	Get(uid string) (events.Profile, error)
}

// DefaultAppendTimeout is TxnEventLog.AppendTimeout's zero value.
const DefaultAppendTimeout = 5 * time.Second

// DefaultCommitInterval is TxnEventLog.CommitInterval's zero value.
const DefaultCommitInterval = 2 * time.Millisecond

// DefaultTxnTimeout is TxnEventLog.TxnTimeout's zero value.
const DefaultTxnTimeout = 10 * time.Second

var txnBatch = promauto.NewHistogram(prometheus.HistogramOpts{
	Name:    "profiles_command_txn_appends",
	Help:    "Appends (commands and claims) per transaction on the event log: the group commit's batch size.",
	Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024},
})

var txnSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
	Name:    "profiles_command_txn_seconds",
	Help:    "Duration of one transaction on the event log, from BeginTxn to the end of CommitTxn (or AbortTxn).",
	Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
})

var appends = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "profiles_command_appends_total",
	Help: "Transactional appends to the event log, by result: ok, fenced (the group moved on, or another producer took this instance's transactional id), stale (the state it was decided on changed, or the partition is no longer served), timeout (not accepted within APPEND_TIMEOUT; not written) or failed.",
}, []string{"result"})

// TxnEventLog appends events and email claims with one transactional
// producer per instance and consumer group session, whose transactions
// span every partition the instance owns: the appends that arrive while a
// transaction runs, or within CommitInterval of the first one, share the
// next transaction (group commit), up to maxBatchRecords records.
//
// Fencing follows Kafka Streams' exactly-once v2 (KIP-447). Every
// transaction commits an offset for the consumer group with the metadata
// of the session it was opened in (generation and member id). The group
// coordinator rejects that commit once the group has moved to a later
// generation or expelled this member, and the transaction then aborts:
// a deposed or paused instance can never append. A new owner of a
// partition catches up to the partition's high watermark as read after
// its assignment, reading committed records only (kafkax.Group), so it
// waits for any transaction of a previous owner that was already in the
// log, and none can commit after that point. The transactional id is
// <TxnPrefix>-<ClientID>, the same across restarts of one instance, so a
// restart aborts what its previous process left open.
//
// Each append is checked again right before its transaction begins: its
// partitions must still be served by this instance (Serving), and the
// profile's version and the email's claim sequence must still be the ones
// it was decided on. So an append decided on a state that a later session
// has moved on from is refused (ErrNotWriter), never written.
//
// It uses sarama directly because watermill's Kafka publisher has no
// transactions.
type TxnEventLog struct {
	Config topology.Config
	// ClientID names this instance: its Kafka client id and, with
	// TxnPrefix, its transactional id.
	ClientID string
	// TxnPrefix starts the transactional id: <TxnPrefix>-<ClientID>.
	TxnPrefix string
	// Group is the consumer group whose sessions fence the transactions.
	Group  string
	Source string
	Log    *slog.Logger
	// AppendTimeout bounds one append (0 means DefaultAppendTimeout).
	AppendTimeout time.Duration
	// CommitInterval is how long a transaction waits, after its first
	// append, for more (0 means DefaultCommitInterval; negative, not at
	// all: a transaction takes what has queued while the previous ran).
	CommitInterval time.Duration
	// TxnTimeout is the producer's transaction.timeout.ms (0 means
	// DefaultTxnTimeout): how long the transaction coordinator lets a
	// transaction of a frozen instance block its partitions' readers
	// before aborting it.
	TxnTimeout time.Duration
	// StuckAfter is how long a transaction may run before the producer is
	// replaced (0 means the append timeout): see replaceIfStuck. One that
	// waits on a broker the cluster has fenced is replaced sooner (see
	// replaceHeld).
	StuckAfter time.Duration
	// Late, if set, learns of commits that finished after their caller
	// gave up.
	Late LateCommits
	// Fenced, if set, is called (in a goroutine of its own) when Kafka
	// refused a transaction of the current session's producer for good:
	// the group moved on or expelled this member, or another producer
	// took the transactional id. command-svc rejoins its group there (see
	// kafkax.Group.Rejoin). Until the next session, appends fail with
	// ErrNotWriter.
	Fenced func(reason string)
	// Serving reports whether this instance serves partition p now (owns
	// it and has caught up). Nil means every partition of the session.
	Serving func(p int32) bool
	// KEK seals the data key that a ProfileCreated gets, written to the
	// keys topic in the event's transaction; Keys gives the keys of
	// existing profiles, and Codec seals the events (see SealEvents).
	// With a nil KEK, events are written in clear and no keys (unit tests
	// only).
	KEK   *pii.KEK
	Codec *pii.Codec
	Keys  DataKeys
	// Profiles tells a profile from before encryption (never Sealed, no
	// key) from one whose key is not read yet (see keyOf), and gives the
	// version an append is checked against. Needed with a KEK.
	Profiles Profiles
	// ClaimSeqs, if set, gives the claim sequence a claim record is
	// checked against (command-svc's state.Store).
	ClaimSeqs interface {
		ClaimSeq(email string) (int64, error)
	}
	// NewProducer, if set, replaces kafkax.NewSyncProducer (tests). A
	// producer that is not a kafkax.SyncProducer is replaced only when its
	// transaction has run for StuckAfter (see kafkax.WatchStale).
	NewProducer func(seeds []string, conf *sarama.Config) (sarama.SyncProducer, error)

	mu  sync.Mutex
	cur *txnProducer // of the current session; nil between sessions
}

// txnProducer is the transactional producer of one session, and the
// goroutine that runs its transactions (see run), one at a time.
type txnProducer struct {
	log   *TxnEventLog
	sess  kafkax.Session
	owned map[int32]bool
	meta  *sarama.ConsumerGroupMetadata
	sarama.SyncProducer

	// began is when the transaction in flight began (UnixNano), 0 when
	// none is: set by run's goroutine, read by replaceIfStuck.
	began     atomic.Int64
	replacing atomic.Bool

	reqs    chan *txnRequest
	stop    chan struct{} // closed by closeWhenIdle
	stopped chan struct{} // closed when run has returned and the producer is closed
	once    sync.Once
}

func newTxnProducer(l *TxnEventLog, s kafkax.Session, prod sarama.SyncProducer) *txnProducer {
	t := &txnProducer{log: l, sess: s, owned: map[int32]bool{}, meta: s.GroupMetadata(l.Group), SyncProducer: prod,
		reqs: make(chan *txnRequest), stop: make(chan struct{}), stopped: make(chan struct{})}
	for _, p := range s.Partitions {
		t.owned[p] = true
	}
	go t.run()
	return t
}

// closeWhenIdle stops the producer once its transaction in flight, if any,
// is over (sarama panics on a transaction call after Close), without
// waiting for that. Appends that have not started fail with ErrNotWriter.
func (t *txnProducer) closeWhenIdle() {
	t.once.Do(func() { close(t.stop) })
}

// Assigned starts the producer of a new session and closes the previous
// one. Starting it (InitProducerId) aborts whatever transaction this
// instance's transactional id still has open, from the previous session
// or a previous process. A session without partitions gets no producer.
func (l *TxnEventLog) Assigned(s kafkax.Session) {
	l.mu.Lock()
	old := l.cur
	l.cur = nil
	l.mu.Unlock()
	if old != nil {
		old.closeWhenIdle()
	}
	if len(s.Partitions) == 0 {
		return
	}
	var (
		prod sarama.SyncProducer
		err  error
	)
	// The transaction coordinator may be unavailable for a while (after
	// brokers were down, say): keep trying for half a minute; the
	// session's heartbeats go on meanwhile.
	for attempt := range 30 {
		if prod, err = l.newProducer(l.Config.Brokers); err == nil {
			break
		}
		l.Log.Warn("cannot start the transactional producer yet", "generation", s.Generation, "attempt", attempt+1, "err", err)
		time.Sleep(time.Second)
	}
	if err != nil {
		l.Log.Error("no transactional producer; commands fail until the next assignment", "generation", s.Generation, "err", err)
		return
	}
	l.mu.Lock()
	l.cur = newTxnProducer(l, s, prod)
	l.mu.Unlock()
}

// TransactionalID is this instance's transactional id.
func (l *TxnEventLog) TransactionalID() string { return l.TxnPrefix + "-" + l.ClientID }

// producerConfig is the sarama config of this instance's transactional
// producer.
func (l *TxnEventLog) producerConfig() *sarama.Config {
	sc := l.Config.ProducerSarama(l.ClientID + "-txn")
	sc.Producer.Transaction.ID = l.TransactionalID()
	sc.Producer.Transaction.Timeout = l.TxnTimeout
	if sc.Producer.Transaction.Timeout <= 0 {
		sc.Producer.Transaction.Timeout = DefaultTxnTimeout
	}
	return sc
}

// newProducer starts a transactional producer bootstrapped from seeds. Its
// InitProducerId fences any earlier producer of this instance's
// transactional id and aborts its open transaction.
func (l *TxnEventLog) newProducer(seeds []string) (sarama.SyncProducer, error) {
	if l.NewProducer != nil {
		return l.NewProducer(seeds, l.producerConfig())
	}
	return kafkax.NewSyncProducer(seeds, l.producerConfig())
}

// replaceIfStuck replaces t, the producer of the current session, with a
// new one if its transaction in flight has run for StuckAfter: a request
// that a broker holds (a frozen broker, or a leader deposed without
// knowing it, which waits for replicas that no longer follow it until the
// request's timeout) would otherwise hold up every append of this
// instance, since all share the producer. See replace.
func (l *TxnEventLog) replaceIfStuck(t *txnProducer) {
	began := t.began.Load()
	if began == 0 || time.Since(time.Unix(0, began)) < l.stuckAfter() {
		return
	}
	l.replace(t, began, "a transaction has run too long; replacing the producer, which aborts it")
}

// replaceHeld replaces t if the transaction that began at began (its
// UnixNano) is still in flight: kafkax.WatchStale found that t's producer
// still knows a broker that the cluster has fenced, which holds its
// requests. It does not wait for StuckAfter: the fence is the proof.
func (l *TxnEventLog) replaceHeld(t *txnProducer, began int64, fenced []string) {
	if t.began.Load() != began {
		return
	}
	l.replace(t, began, "a transaction waits on a broker that the cluster has fenced; replacing the producer, which aborts it", "fenced", fenced)
}

func (l *TxnEventLog) stuckAfter() time.Duration {
	return cmp.Or(l.StuckAfter, l.AppendTimeout, DefaultAppendTimeout)
}

// replace starts a producer that replaces t, whose transaction began at
// began, unless t is being replaced already. The new producer's
// InitProducerId fences t (its transaction can no longer commit; the
// coordinator aborts it), and it is bootstrapped from the brokers that
// every answering broker lists as live (kafkax.ReplacementSeeds, which
// waits up to StuckAfter for the controller to fence a deposed broker),
// so that it learns the current leaders instead of a deposed broker's
// stale view. A producer that cannot start is tried again every second
// while the transaction is still in flight. t closes once its transaction
// is over; its appends that have not begun fail with ErrNotWriter (the
// routing layer sends them again, to the new producer).
func (l *TxnEventLog) replace(t *txnProducer, began int64, why string, attrs ...any) {
	if !t.replacing.CompareAndSwap(false, true) {
		return
	}
	after := l.stuckAfter()
	go func() {
		var prod sarama.SyncProducer
		for {
			seeds := kafkax.ReplacementSeeds(l.producerConfig(), l.Config.Brokers, l.Config.EventsTopic, after)
			ran := time.Since(time.Unix(0, began)).Round(time.Millisecond)
			l.Log.Warn(why, append([]any{"ran", ran, "generation", t.sess.Generation, "seeds", seeds}, attrs...)...)
			var err error
			if prod, err = l.newProducer(seeds); err == nil {
				break
			}
			// A coordinator that its broker still believes it is, after
			// the controller moved it away, answers every InitProducerId
			// CONCURRENT_TRANSACTIONS: the next attempt votes on the
			// brokers again and finds the coordinator anew.
			l.Log.Error("cannot start a producer to replace a stuck one; trying again in 1 s", "err", err)
			time.Sleep(time.Second)
			l.mu.Lock()
			current := l.cur == t
			l.mu.Unlock()
			if !current || t.began.Load() != began { // a new session, or the transaction ended
				t.replacing.Store(false) // the next transaction's watchdog may try again
				return
			}
		}
		l.mu.Lock()
		current := l.cur == t
		if current {
			l.cur = newTxnProducer(l, t.sess, prod)
		}
		l.mu.Unlock()
		if !current { // a new session replaced t meanwhile
			_ = prod.Close()
			return
		}
		producersReplaced.Inc()
		t.closeWhenIdle()
	}()
}

var producersReplaced = promauto.NewCounter(prometheus.CounterOpts{
	Name: "profiles_command_producers_replaced_total",
	Help: "Transactional producers replaced because a transaction had run for the append timeout, or waited on a broker that the cluster had fenced (a broker held its requests).",
})

// Close closes the producer once its transaction in flight, if any, is
// over. It does not wait.
func (l *TxnEventLog) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur != nil {
		l.cur.closeWhenIdle()
		l.cur = nil
	}
}

// writes reports whether this session's producer may write partition p
// now.
func (t *txnProducer) writes(p int32) error {
	if !t.owned[p] || (t.log.Serving != nil && !t.log.Serving(p)) {
		return fmt.Errorf("%w: partition %d", ErrNotWriter, p)
	}
	return nil
}

// Append writes es (all of one profile) and claims in one transaction.
//
// It is traced as one producer span, "send <topic>" (the event log's, or
// the claims topic's for claims alone), from the call to the commit or
// the failure, and every record carries its trace context in its headers
// (kafkax.InjectTrace), so that whoever reads an event continues the
// trace of the request that wrote it.
func (l *TxnEventLog) Append(ctx context.Context, claims []app.ClaimRecord, es ...events.Event) (err error) {
	if len(es) == 0 && len(claims) == 0 {
		return nil
	}
	topic, p, n := l.Config.ClaimsTopic, int32(-1), len(claims)
	if len(es) > 0 {
		topic, p, n = l.Config.EventsTopic, kafkax.Partition(es[0].UID, l.Config.Partitions), len(es)
	} else {
		p = kafkax.Partition(claims[0].Email, l.Config.Partitions)
	}
	ctx, span := kafkax.StartSend(ctx, topic, p, n)
	defer func() { kafkax.EndSpan(span, err) }()
	l.mu.Lock()
	prod := l.cur
	l.mu.Unlock()
	if prod == nil {
		return fmt.Errorf("%w: no producer (between sessions)", ErrNotWriter)
	}
	var (
		msgs      []*sarama.ProducerMessage
		checks    []func() error
		committed = func() {}
	)
	if len(es) > 0 {
		uid := es[0].UID
		p := kafkax.Partition(uid, l.Config.Partitions)
		if err := prod.writes(p); err != nil {
			return err
		}
		want := es[0].Version - 1
		checks = append(checks, func() error {
			if err := prod.writes(p); err != nil {
				return err
			}
			if l.Profiles != nil {
				cur, err := l.Profiles.Get(uid)
				if err != nil {
					return err
				}
				if cur.Version != want {
					return fmt.Errorf("%w: %s is at version %d, not %d, since the command was decided", ErrNotWriter, uid, cur.Version, want)
				}
			}
			return nil
		})
		var err error
		if msgs, committed, err = l.eventMessages(es); err != nil {
			return err
		}
	}
	for _, c := range claims {
		q := kafkax.Partition(c.Email, l.Config.Partitions)
		if err := prod.writes(q); err != nil {
			return err
		}
		checks = append(checks, func() error {
			if err := prod.writes(q); err != nil {
				return err
			}
			if l.ClaimSeqs != nil {
				seq, err := l.ClaimSeqs.ClaimSeq(c.Email)
				if err != nil {
					return err
				}
				if seq != c.Claim.Seq-1 {
					return fmt.Errorf("%w: a claim is at sequence %d, not %d, since the command was decided", ErrNotWriter, seq, c.Claim.Seq-1)
				}
			}
			return nil
		})
		msg, err := claimMessage(l.Config.ClaimsTopic, c)
		if err != nil {
			return err
		}
		msgs = append(msgs, msg)
	}
	late := func() {
		committed()
		if l.Late == nil {
			return
		}
		for _, e := range es {
			if err := l.Late.Apply(e); err != nil {
				l.Log.Error("a late commit does not fold into the state", "uid", e.UID, "version", e.Version, "err", err)
			}
		}
		for _, c := range claims {
			if err := l.Late.PutClaim(c.Email, c.Claim); err != nil {
				l.Log.Error("a late commit of a claim does not fold into the state", "err", err)
			}
		}
	}
	check := func() error {
		for _, c := range checks {
			if err := c(); err != nil {
				return err
			}
		}
		return nil
	}
	kafkax.InjectTrace(ctx, msgs)
	if err := l.inTxn(ctx, prod, msgs, check, late); err != nil {
		if len(es) > 0 {
			return fmt.Errorf("append %d events of %s: %w", len(es), es[0].UID, err)
		}
		return fmt.Errorf("append %d claims: %w", len(claims), err)
	}
	committed()
	return nil
}

// eventMessages returns the records of es (all of one profile), sealed
// when there is a KEK, and what to do once they are committed (remember
// a new data key, or forget a deleted one). Every event record but the
// last carries kafkax.HeaderContinues: readers fold the command whole.
func (l *TxnEventLog) eventMessages(es []events.Event) (msgs []*sarama.ProducerMessage, committed func(), err error) {
	defer func() { markContinues(msgs, l.Config.EventsTopic) }()
	committed = func() {}
	if l.KEK == nil {
		for _, e := range es {
			value, err := events.Encode(e)
			if err != nil {
				return nil, nil, err
			}
			msgs = append(msgs, eventMessage(l.Config.EventsTopic, l.Source, e, value))
		}
		return msgs, committed, nil
	}
	uid := es[0].UID
	var existing *pii.DataKey
	if _, create := es[0].Data.(events.ProfileCreated); !create {
		dk, err := l.keyOf(uid)
		if err != nil {
			return nil, nil, err
		}
		existing = dk // nil for a profile from before encryption: it gets a key now
	}
	msgs, newKey, deleted, err := SealEvents(l.Codec, l.KEK, existing, l.Config.KeysTopic, l.Config.EventsTopic, l.Source, es)
	if err != nil {
		return nil, nil, err
	}
	return msgs, func() {
		switch {
		case deleted:
			l.Keys.Forget(uid)
		case newKey != nil:
			l.Keys.Put(uid, newKey)
		}
	}, nil
}

// markContinues sets kafkax.HeaderContinues on every record of topic in
// msgs but the last.
func markContinues(msgs []*sarama.ProducerMessage, topic string) {
	last := -1
	for i, m := range msgs {
		if m.Topic == topic {
			if last >= 0 {
				msgs[last].Headers = append(msgs[last].Headers, sarama.RecordHeader{Key: []byte(kafkax.HeaderContinues), Value: []byte("1")})
			}
			last = i
		}
	}
}

// claimMessage is the record of a claim (a tombstone when it is released).
func claimMessage(topic string, c app.ClaimRecord) (*sarama.ProducerMessage, error) {
	value, err := events.EncodeClaim(c.Claim)
	if err != nil {
		return nil, err
	}
	msg := &sarama.ProducerMessage{
		Topic: topic, Key: sarama.StringEncoder(c.Email),
		Headers: []sarama.RecordHeader{{Key: []byte(events.HeaderSeq), Value: []byte(fmt.Sprint(c.Claim.Seq))}},
	}
	if value != nil {
		msg.Value = sarama.ByteEncoder(value)
	}
	return msg, nil
}

// keyOf returns the data key of the existing profile uid, or nil for a
// profile from before encryption, which gets a key with this append.
//
// A missing key is never taken for "none": a second key would make the
// profile's earlier events unreadable (its record replaces the first one
// in the compacted keys topic). So a profile that is Sealed in the state
// (folded from sealed events) waits for its key, and only a profile that
// is not, and whose key the keyring does not know, counts as one from
// before encryption. A profile created by this process is not Sealed in
// the state (its events were not decoded), but its key was Put at commit.
func (l *TxnEventLog) keyOf(uid string) (*pii.DataKey, error) {
	if dk, ok := l.Keys.Known(uid); ok {
		if dk == nil {
			return nil, fmt.Errorf("data key of %s: %w", uid, pii.ErrNoKey)
		}
		return dk, nil
	}
	if l.Profiles != nil {
		cur, err := l.Profiles.Get(uid)
		if err != nil {
			return nil, err
		}
		if !cur.Sealed {
			return nil, nil
		}
	}
	dk, err := l.Keys.DataKey(uid)
	if err != nil {
		return nil, fmt.Errorf("data key of %s: %w", uid, err)
	}
	return dk, nil
}

func eventMessage(topic, source string, e events.Event, value []byte) *sarama.ProducerMessage {
	var headers []sarama.RecordHeader
	for k, v := range events.Headers(e, source) {
		headers = append(headers, sarama.RecordHeader{Key: []byte(k), Value: []byte(v)})
	}
	return &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(e.UID), Value: sarama.ByteEncoder(value), Headers: headers}
}

// SealEvents returns the records of one append of es (all of one profile)
// to be written in one transaction: the events, their personal fields
// encrypted with the profile's data key by codec, and the keys topic
// records.
//
//   - existing is the profile's data key; when it is nil (a create, or a
//     profile from before encryption) a new key is made, and its record,
//     sealed by kek, is part of the transaction. newKey returns it.
//   - A ProfileDeleted writes the tombstone of the profile's key
//     (deleted), which crypto-shreds every event sealed with it. The
//     delete itself carries no personal data.
//
// Key records are keyed by uid, so they land on the partition of the
// profile's events.
func SealEvents(codec *pii.Codec, kek *pii.KEK, existing *pii.DataKey, keysTopic, eventsTopic, source string, es []events.Event) (msgs []*sarama.ProducerMessage, newKey *pii.DataKey, deleted bool, err error) {
	if len(es) == 0 {
		return nil, nil, false, nil
	}
	uid := es[0].UID
	keyMsg := func(value sarama.Encoder, version int64) *sarama.ProducerMessage {
		return &sarama.ProducerMessage{Topic: keysTopic, Key: sarama.StringEncoder(uid), Value: value,
			Headers: []sarama.RecordHeader{{Key: []byte(events.HeaderVersion), Value: []byte(fmt.Sprint(version))}}}
	}
	dk := existing
	for _, e := range es {
		if e.UID != uid {
			return nil, nil, false, fmt.Errorf("%w: one append holds events of %s and %s", events.ErrInvalidEvent, uid, e.UID)
		}
		var value []byte
		if _, del := e.Data.(events.ProfileDeleted); del {
			if value, err = events.Encode(e); err != nil {
				return nil, nil, false, err
			}
			msgs = append(msgs, eventMessage(eventsTopic, source, e, value), keyMsg(nil, e.Version))
			deleted = true
			continue
		}
		if dk == nil {
			var raw []byte
			if dk, raw, err = kek.NewDataKey(uid); err != nil {
				return nil, nil, false, fmt.Errorf("new data key of %s: %w", uid, err)
			}
			sealed, err := kek.Seal(uid, raw)
			clear(raw)
			if err != nil {
				return nil, nil, false, fmt.Errorf("seal data key of %s: %w", uid, err)
			}
			newKey = dk
			msgs = append(msgs, keyMsg(sarama.ByteEncoder(sealed), e.Version))
		}
		if value, err = codec.EncodeEvent(e, dk); err != nil {
			return nil, nil, false, err
		}
		msgs = append(msgs, eventMessage(eventsTopic, source, e, value))
	}
	return msgs, newKey, deleted, nil
}

// inTxn appends msgs in a transaction of prod, all or none, giving up
// with ErrAppendTimeout when the append timeout passes (or ctx ends). The
// transaction may carry other appends too (see TxnEventLog). check runs
// right before the transaction begins; its error is the append's. sarama's
// SyncProducer cannot be interrupted, so the transaction runs on: an
// append withdrawn before its transaction began to commit is not written
// (that transaction is aborted and the others are sent again in a new
// one); one withdrawn later may still commit, and then late runs before
// the next transaction, so that Late learns of it.
func (l *TxnEventLog) inTxn(ctx context.Context, prod *txnProducer, msgs []*sarama.ProducerMessage, check func() error, late func()) error {
	timeout := l.AppendTimeout
	if timeout <= 0 {
		timeout = DefaultAppendTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req := &txnRequest{msgs: msgs, check: check, late: late, done: make(chan error, 1)}
	select {
	case prod.reqs <- req:
	case <-prod.stop:
		return fmt.Errorf("%w: its producer was closed (a new session, or it was replaced)", ErrNotWriter)
	case <-ctx.Done():
		l.replaceIfStuck(prod)
		appends.WithLabelValues("timeout").Inc()
		return fmt.Errorf("%w (%s): the producer is still busy with earlier appends", ErrAppendTimeout, timeout)
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		l.replaceIfStuck(prod)
	}
	for {
		switch st := req.state.Load(); st {
		case reqQueued, reqSent:
			if req.state.CompareAndSwap(st, reqWithdrawn) {
				appends.WithLabelValues("timeout").Inc()
				return fmt.Errorf("%w (%s)", ErrAppendTimeout, timeout)
			}
		case reqCommitting:
			if req.state.CompareAndSwap(st, reqGaveUp) {
				appends.WithLabelValues("timeout").Inc()
				return fmt.Errorf("%w (%s): %w", ErrAppendTimeout, timeout, ErrOutcomeUnknown)
			}
		default: // reqDone: the answer is on its way
			return <-req.done
		}
	}
}

// The states of a txnRequest. The caller moves a request from queued or
// sent to withdrawn, and from committing to gaveUp; the producer's
// goroutine makes every other move.
const (
	reqQueued     int32 = iota // waiting for a transaction
	reqSent                    // in an open transaction
	reqCommitting              // its transaction is committing
	reqWithdrawn               // its caller gave up before the commit: never written
	reqGaveUp                  // its caller gave up during the commit: outcome unknown to it
	reqDone                    // answered on done
)

// txnRequest is one append waiting for, or in, a transaction.
type txnRequest struct {
	msgs  []*sarama.ProducerMessage
	check func() error
	late  func()
	state atomic.Int32
	done  chan error // gets the outcome, unless the caller withdrew or gave up
}

// answer settles a request that was sent or committing with err. A request
// whose caller gave up during a commit that succeeded is a late commit.
func (t *txnProducer) answer(r *txnRequest, err error) {
	for {
		switch st := r.state.Load(); st {
		case reqSent, reqCommitting, reqQueued:
			if r.state.CompareAndSwap(st, reqDone) {
				r.done <- err
				return
			}
		case reqGaveUp:
			if err == nil && t.log.Late != nil {
				t.log.Log.Warn("a transaction committed after its caller gave up; its command was answered 503 but is in the log")
				r.late()
			}
			return
		default: // withdrawn: its caller has its answer, and nothing was written
			return
		}
	}
}

// maxBatchRecords bounds the records of one transaction.
const maxBatchRecords = 2000

// run takes appends in arrival order and runs them in transactions, as
// many as arrive (up to maxBatchRecords records) while the previous one
// runs or within the commit interval of the first, until closeWhenIdle or
// a fatal error.
func (t *txnProducer) run() {
	defer func() {
		_ = t.SyncProducer.Close()
		close(t.stopped)
	}()
	interval := t.log.CommitInterval
	if interval == 0 {
		interval = DefaultCommitInterval
	}
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	var carry []*txnRequest // sent again after an abort for a withdrawn one
	for {
		batch := carry
		carry = nil
		if len(batch) == 0 {
			select {
			case r := <-t.reqs:
				batch = append(batch, r)
			case <-t.stop:
				return
			}
		}
		n := 0
		for _, r := range batch {
			n += len(r.msgs)
		}
		batch = kafkax.Gather(batch, n, t.reqs, t.stop, interval, linger, func(r *txnRequest) int { return len(r.msgs) }, maxBatchRecords)
		select {
		case <-t.stop:
			// A new session replaced this producer while these waited.
			for _, r := range batch {
				if r.state.CompareAndSwap(reqQueued, reqDone) {
					r.done <- fmt.Errorf("%w: its producer was closed (a new session)", ErrNotWriter)
				}
			}
			return
		default:
		}
		var fatal bool
		if carry, fatal = t.txn(batch); fatal {
			for _, r := range carry {
				t.answer(r, fmt.Errorf("%w: its producer failed", ErrNotWriter))
			}
			return
		}
	}
}

// txn runs one transaction of the requests in batch that are still queued
// and still pass their check. It returns the requests to send again in a
// new transaction (those of a transaction aborted because one of its
// requests was withdrawn), and whether the producer is fenced or broken
// for good.
func (t *txnProducer) txn(batch []*txnRequest) (again []*txnRequest, fatal bool) {
	l := t.log
	steps := kafkax.StartTxnSteps()
	var live []*txnRequest
	var msgs []*sarama.ProducerMessage
	for _, r := range batch {
		if !r.state.CompareAndSwap(reqQueued, reqSent) {
			continue
		}
		if err := r.check(); err != nil {
			appends.WithLabelValues("stale").Inc()
			t.answer(r, err)
			continue
		}
		live = append(live, r)
		msgs = append(msgs, r.msgs...)
	}
	if len(live) == 0 {
		return nil, false
	}
	txnBatch.Observe(float64(len(live)))
	steps.Mark("checks")
	began := time.Now()
	t.began.Store(began.UnixNano())
	// A transaction that runs for StuckAfter is replaced even when no
	// append gives up on it: an append that queued just as it began gives
	// up a moment before it has run that long.
	watchdog := time.AfterFunc(l.stuckAfter(), func() { l.replaceIfStuck(t) })
	stale := kafkax.WatchStale(t.SyncProducer, kafkax.StaleOptions{Seeds: l.Config.Brokers, Conf: l.producerConfig, Topic: l.Config.EventsTopic},
		func(fenced []string) { l.replaceHeld(t, began.UnixNano(), fenced) })
	defer func() {
		watchdog.Stop()
		stale()
		t.began.Store(0)
		txnSeconds.Observe(time.Since(began).Seconds())
		steps.LogIfSlow(l.Log, "appends", len(live), "records", len(msgs), "generation", t.sess.Generation)
	}()
	fail := func(err error) (bool, error) {
		if kafkax.Unusable(err, t.TxnStatus()) {
			appends.WithLabelValues("fenced").Add(float64(len(live)))
			l.Log.Warn("the session's producer is fenced or failed for good; closing it", "generation", t.sess.Generation, "status", t.TxnStatus().String(), "err", err)
			if t.TxnStatus()&sarama.ProducerTxnFlagAbortableError != 0 {
				_ = t.AbortTxn()
			}
			// A producer being replaced was fenced by its replacement,
			// which takes over the session: no rejoin.
			l.mu.Lock()
			current := l.cur == t && !t.replacing.Load()
			if current {
				l.cur = nil
			}
			l.mu.Unlock()
			if current && l.Fenced != nil {
				go l.Fenced(fmt.Sprintf("a transaction of generation %d was refused: %v", t.sess.Generation, err))
			}
			if errors.As(err, new(commitUnknown)) {
				return true, fmt.Errorf("%w: the producer failed for good during it: %w", ErrOutcomeUnknown, err)
			}
			return true, fmt.Errorf("%w: %v", ErrNotWriter, err)
		}
		appends.WithLabelValues("failed").Add(float64(len(live)))
		return false, err
	}
	failAll := func(err error) ([]*txnRequest, bool) {
		fatal, err := fail(err)
		for _, r := range live {
			t.answer(r, err)
		}
		return nil, fatal
	}
	if st := t.TxnStatus(); st&(sarama.ProducerTxnFlagInTransaction|sarama.ProducerTxnFlagAbortableError) != 0 && st&sarama.ProducerTxnFlagFatalError == 0 {
		// An earlier transaction was left open (its abort failed while the
		// coordinator was unreachable): abort it now, or BeginTxn fails.
		err := t.AbortTxn()
		steps.Mark("abort earlier")
		if err != nil {
			return failAll(fmt.Errorf("cannot abort an earlier transaction: %w", err))
		}
	}
	err := t.BeginTxn()
	steps.Mark("begin")
	if err == nil {
		err = t.SendMessages(msgs)
		steps.Mark("send")
		if err == nil {
			// The offset that fences this transaction: the group
			// coordinator takes it only from a member of the session's
			// generation, and the commit fails without it.
			err = t.AddOffsetsToTxnWithGroupMetadata(map[string][]*sarama.PartitionOffsetMetadata{
				l.Config.KeysTopic: {{Partition: 0, Offset: 0}},
			}, t.meta)
			steps.Mark("offsets")
		}
		if err != nil && t.TxnStatus()&sarama.ProducerTxnFlagAbortableError != 0 && !kafkax.Fenced(err) {
			_ = t.AbortTxn()
		}
	}
	if err != nil {
		return failAll(err)
	}
	// Commit only if no caller has withdrawn: a withdrawn append must not
	// be written. Otherwise abort, and send the others again.
	withdrawn := false
	for _, r := range live {
		if !r.state.CompareAndSwap(reqSent, reqCommitting) {
			withdrawn = true
		}
	}
	if withdrawn {
		err := t.AbortTxn()
		steps.Mark("abort")
		if err != nil {
			l.Log.Warn("cannot abort a transaction with a withdrawn append; the coordinator aborts it at its timeout", "err", err)
			return failAll(err)
		}
		for _, r := range live {
			// Back to queued, unless its caller withdrew (it has its
			// answer) or gave up during this non-commit (nothing was
			// written; it was told the outcome is unknown).
			if r.state.CompareAndSwap(reqCommitting, reqQueued) || r.state.CompareAndSwap(reqSent, reqQueued) {
				again = append(again, r)
			}
		}
		return again, false
	}
	err = t.CommitTxn()
	steps.Mark("commit")
	if err != nil {
		if t.TxnStatus()&sarama.ProducerTxnFlagAbortableError != 0 && !kafkax.Fenced(err) {
			_ = t.AbortTxn()
		}
		if !kafkax.Fenced(err) {
			// Not a refusal: the commit may have happened (ErrNotWriter
			// would let the routing layer send the command again).
			err = commitUnknown{err}
		}
		return failAll(err)
	}
	appends.WithLabelValues("ok").Add(float64(len(live)))
	for _, r := range live {
		t.answer(r, nil)
	}
	return nil, false
}

// commitUnknown is a CommitTxn failure that is no refusal: the
// transaction may have committed.
type commitUnknown struct{ error }

func (c commitUnknown) Unwrap() error { return c.error }

// WriteClaim writes a claim record for a normalized email (a tombstone when
// c is released) in a transaction: only the owner of the email's
// partition may write it, and a deposed owner is fenced.
func (l *TxnEventLog) WriteClaim(ctx context.Context, email string, c events.Claim) error {
	return l.Append(ctx, []app.ClaimRecord{{Email: email, Claim: c}})
}
