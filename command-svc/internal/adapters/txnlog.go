package adapters

import (
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

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/topology"
)

// ErrNotWriter is returned (wrapped) by Append when this instance holds no
// writer for the profile's partition: it is not its owner, or it was fenced
// off because another instance took the partition over.
var ErrNotWriter = errors.New("this instance is not the writer of the partition")

// ErrAppendTimeout is returned (wrapped) by Append and WriteClaim when the
// event log did not take the records within the append timeout (the
// cluster has too few in-sync replicas, or its transaction coordinator is
// unreachable). A transaction still open at the deadline is aborted
// instead of committed, so the records were not written, unless the
// commit itself had begun: its outcome is then unknown to the caller (see
// TxnEventLog.Late).
var ErrAppendTimeout = errors.New("the event log did not accept the append in time")

// LateCommits is told about a transaction that committed after its caller
// had given up with ErrAppendTimeout, while the partition is still locked,
// so that the in-memory state matches the log before the partition's next
// append. command-svc's state.Store implements it.
type LateCommits interface {
	Apply(e events.Event) error
	PutClaim(email string, c events.Claim)
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
	Get(uid string) events.Profile
}

// DefaultAppendTimeout is TxnEventLog.AppendTimeout's zero value.
const DefaultAppendTimeout = 5 * time.Second

var txnBatch = promauto.NewHistogram(prometheus.HistogramOpts{
	Name:    "profiles_command_txn_appends",
	Help:    "Appends (commands and claims) per transaction on the event log: the group commit's batch size.",
	Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
})

var appends = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "profiles_command_appends_total",
	Help: "Transactional appends to the event log, by result: ok, fenced (another instance took the partition over), timeout (not accepted within APPEND_TIMEOUT; not written) or failed.",
}, []string{"result"})

// TxnEventLog appends events with one transactional producer per owned
// partition, whose transactional.id names the partition. When a new owner
// of a partition starts its producer, Kafka bumps the id's epoch: the
// previous owner's producer is fenced, and every append it still attempts
// (after a pause longer than its session, say) is rejected by the broker.
// The events of one command are appended in one transaction, all or none.
//
// It uses sarama directly because watermill's Kafka publisher has no
// transactions. Assigned must run before the partition's state is caught
// up (kafkax.GroupOptions.Assigned does), so that whatever the old owner
// appended before it was fenced is in the log the new owner reads.
type TxnEventLog struct {
	Config   topology.Config
	ClientID string
	// TxnPrefix names the transactional ids: <TxnPrefix>-<partition>. All
	// instances of one service must share it.
	TxnPrefix string
	Source    string
	Log       *slog.Logger
	// AppendTimeout bounds one append (0 means DefaultAppendTimeout).
	AppendTimeout time.Duration
	// Late, if set, learns of commits that finished after their caller
	// gave up.
	Late LateCommits
	// Fenced, if set, is called (in a goroutine of its own) when Kafka
	// fenced this instance's producer of partition p, which this instance
	// still held as the partition's writer. Kafka fences a producer when
	// another instance started one for the same transactional id, but also
	// after its own coordinator failed over mid-transaction (a broker
	// frozen and thawed). command-svc rejoins its group there (see
	// kafkax.Group.Rejoin): the next assignment either names another owner
	// or gives this instance a fresh producer and catches it up first.
	// Until then the partition's appends fail with ErrNotWriter.
	Fenced func(p int32)
	// KEK seals the data key that a ProfileCreated gets, written to the
	// keys topic in the event's transaction; Keys gives the keys of
	// existing profiles, and Codec seals the events (see SealEvents).
	// With a nil KEK, events are written in clear and no keys (unit tests
	// only).
	KEK   *pii.KEK
	Codec *pii.Codec
	Keys  DataKeys
	// Profiles tells a profile from before encryption (never Sealed, no
	// key) from one whose key is not read yet (see keyOf). Needed with
	// a KEK.
	Profiles Profiles

	mu        sync.Mutex
	producers map[int32]*txnProducer
}

// txnProducer is one partition's transactional producer, and the
// goroutine that runs its transactions (see run). A producer runs one
// transaction at a time, so appends to one partition are batched: the
// appends that arrive while a transaction runs share the next one (group
// commit). One append per transaction made a partition as fast as two
// round trips to the transaction coordinator, whatever the load.
type txnProducer struct {
	log *TxnEventLog
	p   int32
	sarama.SyncProducer

	reqs    chan *txnRequest
	stop    chan struct{} // closed by closeWhenIdle
	stopped chan struct{} // closed when run has returned and the producer is closed
	once    sync.Once
}

func newTxnProducer(l *TxnEventLog, p int32, prod sarama.SyncProducer) *txnProducer {
	t := &txnProducer{log: l, p: p, SyncProducer: prod,
		reqs: make(chan *txnRequest), stop: make(chan struct{}), stopped: make(chan struct{})}
	go t.run()
	return t
}

// closeWhenIdle stops the producer once its transaction in flight, if any,
// is over (sarama panics on a transaction call after Close), without
// waiting for that. Appends that have not started fail with ErrNotWriter.
func (t *txnProducer) closeWhenIdle() {
	t.once.Do(func() { close(t.stop) })
}

// Assigned starts a fresh producer for every owned partition, fencing its
// previous owner, and closes all earlier producers. A producer is never
// kept across assignments: a partition may have moved away and back in
// between (while this instance was paused, say), and the old producer's
// epoch is then fenced.
func (l *TxnEventLog) Assigned(parts []int32) {
	l.mu.Lock()
	old := l.producers
	l.producers = map[int32]*txnProducer{}
	l.mu.Unlock()
	for _, prod := range old {
		prod.closeWhenIdle()
	}

	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Only here, right after the assignment, may a producer be
			// started: starting one later could fence a newer owner.
			var (
				prod sarama.SyncProducer
				err  error
			)
			// The transaction coordinator may be unavailable for a while
			// (after brokers were down, say): keep trying for half a
			// minute; the session's heartbeats go on meanwhile.
			for attempt := range 30 {
				if prod, err = l.newProducer(p); err == nil {
					break
				}
				l.Log.Warn("cannot start the transactional producer yet", "partition", p, "attempt", attempt+1, "err", err)
				time.Sleep(time.Second)
			}
			if err != nil {
				l.Log.Error("no transactional producer; the partition's commands fail until the next assignment", "partition", p, "err", err)
				return
			}
			l.mu.Lock()
			l.producers[p] = newTxnProducer(l, p, prod)
			l.mu.Unlock()
		}()
	}
	wg.Wait()
}

func (l *TxnEventLog) newProducer(p int32) (sarama.SyncProducer, error) {
	sc := l.Config.ProducerSarama(fmt.Sprintf("%s-p%d", l.ClientID, p))
	sc.Producer.Transaction.ID = fmt.Sprintf("%s-%d", l.TxnPrefix, p)
	return sarama.NewSyncProducer(l.Config.Brokers, sc)
}

// Close closes every producer once its transaction in flight, if any, is
// over. It does not wait.
func (l *TxnEventLog) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, prod := range l.producers {
		prod.closeWhenIdle()
		delete(l.producers, p)
	}
}

// Append writes es (all of one profile) in one transaction.
func (l *TxnEventLog) Append(ctx context.Context, es ...events.Event) error {
	if len(es) == 0 {
		return nil
	}
	p := kafkax.Partition(es[0].UID, l.Config.Partitions)
	l.mu.Lock()
	prod := l.producers[p]
	l.mu.Unlock()
	if prod == nil {
		return fmt.Errorf("%w: partition %d", ErrNotWriter, p)
	}
	var (
		msgs      []*sarama.ProducerMessage
		committed = func() {}
	)
	if l.KEK == nil {
		for _, e := range es {
			value, err := events.Encode(e)
			if err != nil {
				return err
			}
			msgs = append(msgs, eventMessage(l.Config.EventsTopic, l.Source, e, value))
		}
	} else {
		uid := es[0].UID
		var existing *pii.DataKey
		if _, create := es[0].Data.(events.ProfileCreated); !create {
			dk, err := l.keyOf(uid)
			if err != nil {
				return err
			}
			existing = dk // nil for a profile from before encryption: it gets a key now
		}
		var (
			newKey  *pii.DataKey
			deleted bool
			err     error
		)
		msgs, newKey, deleted, err = SealEvents(l.Codec, l.KEK, existing, l.Config.KeysTopic, l.Config.EventsTopic, l.Source, es)
		if err != nil {
			return err
		}
		committed = func() {
			switch {
			case deleted:
				l.Keys.Forget(uid)
			case newKey != nil:
				l.Keys.Put(uid, newKey)
			}
		}
	}
	late := func() {
		committed()
		for _, e := range es {
			if err := l.Late.Apply(e); err != nil {
				l.Log.Error("a late commit does not fold into the state", "uid", e.UID, "version", e.Version, "err", err)
			}
		}
	}
	if err := l.inTxn(ctx, p, prod, msgs, late); err != nil {
		return fmt.Errorf("append %d events of %s: %w", len(es), es[0].UID, err)
	}
	committed()
	return nil
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
	if l.Profiles != nil && !l.Profiles.Get(uid).Sealed {
		return nil, nil
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

// inTxn appends msgs in a transaction of partition p's producer, all or
// none, giving up with ErrAppendTimeout when the append timeout passes (or
// ctx ends). The transaction may carry other appends too (see
// txnProducer). sarama's SyncProducer cannot be interrupted, so the
// transaction runs on: an append withdrawn before its transaction began to
// commit is not written (that transaction is aborted and the others are
// sent again in a new one); one withdrawn later may still commit, and then
// late runs before the partition's next transaction, so that Late learns
// of it.
func (l *TxnEventLog) inTxn(ctx context.Context, p int32, prod *txnProducer, msgs []*sarama.ProducerMessage, late func()) error {
	timeout := l.AppendTimeout
	if timeout <= 0 {
		timeout = DefaultAppendTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req := &txnRequest{msgs: msgs, late: late, done: make(chan error, 1)}
	select {
	case prod.reqs <- req:
	case <-prod.stopped:
		return fmt.Errorf("%w: partition %d: its producer was closed (a new assignment)", ErrNotWriter, p)
	case <-ctx.Done():
		appends.WithLabelValues("timeout").Inc()
		return fmt.Errorf("%w (%s): partition %d is still busy with earlier appends", ErrAppendTimeout, timeout, p)
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
	}
	for {
		switch st := req.state.Load(); st {
		case reqQueued, reqSent:
			if req.state.CompareAndSwap(st, reqWithdrawn) {
				appends.WithLabelValues("timeout").Inc()
				return fmt.Errorf("%w (%s): partition %d", ErrAppendTimeout, timeout, p)
			}
		case reqCommitting:
			if req.state.CompareAndSwap(st, reqGaveUp) {
				appends.WithLabelValues("timeout").Inc()
				return fmt.Errorf("%w (%s): partition %d: the commit had begun and its outcome is not known yet", ErrAppendTimeout, timeout, p)
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
				t.log.Log.Warn("a transaction committed after its caller gave up; its command was answered 503 but is in the log", "partition", t.p)
				r.late()
			}
			return
		default: // withdrawn: its caller has its answer, and nothing was written
			return
		}
	}
}

// maxBatchRecords bounds the records of one transaction.
const maxBatchRecords = 500

// run takes appends in arrival order and runs them in transactions, as
// many as have arrived (up to maxBatchRecords records) in each, until
// closeWhenIdle or a fatal error.
func (t *txnProducer) run() {
	defer func() {
		_ = t.SyncProducer.Close()
		close(t.stopped)
	}()
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
	more:
		for n < maxBatchRecords {
			select {
			case r := <-t.reqs:
				batch = append(batch, r)
				n += len(r.msgs)
			default:
				break more
			}
		}
		select {
		case <-t.stop:
			// A new assignment replaced this producer while these waited.
			for _, r := range batch {
				if r.state.CompareAndSwap(reqQueued, reqDone) {
					r.done <- fmt.Errorf("%w: partition %d: its producer was closed (a new assignment)", ErrNotWriter, t.p)
				}
			}
			return
		default:
		}
		var fatal bool
		if carry, fatal = t.txn(batch); fatal {
			for _, r := range carry {
				t.answer(r, fmt.Errorf("%w: partition %d: its producer failed", ErrNotWriter, t.p))
			}
			return
		}
	}
}

// txn runs one transaction of the requests in batch that are still queued.
// It returns the requests to send again in a new transaction (those of a
// transaction aborted because one of its requests was withdrawn), and
// whether the producer is fenced or broken for good.
func (t *txnProducer) txn(batch []*txnRequest) (again []*txnRequest, fatal bool) {
	l, p := t.log, t.p
	var live []*txnRequest
	var msgs []*sarama.ProducerMessage
	for _, r := range batch {
		if r.state.CompareAndSwap(reqQueued, reqSent) {
			live = append(live, r)
			msgs = append(msgs, r.msgs...)
		}
	}
	if len(live) == 0 {
		return nil, false
	}
	txnBatch.Observe(float64(len(live)))
	fail := func(err error) (bool, error) {
		if fenced(err) || t.TxnStatus()&sarama.ProducerTxnFlagFatalError != 0 {
			appends.WithLabelValues("fenced").Add(float64(len(live)))
			l.Log.Warn("the partition's producer is fenced or failed fatally; closing it", "partition", p, "err", err)
			l.mu.Lock()
			current := l.producers[p] == t
			if current {
				delete(l.producers, p)
			}
			l.mu.Unlock()
			if current && l.Fenced != nil {
				go l.Fenced(p)
			}
			return true, fmt.Errorf("%w: partition %d: %v", ErrNotWriter, p, err)
		}
		appends.WithLabelValues("failed").Add(float64(len(live)))
		return false, err
	}
	if st := t.TxnStatus(); st&(sarama.ProducerTxnFlagInTransaction|sarama.ProducerTxnFlagAbortableError) != 0 && st&sarama.ProducerTxnFlagFatalError == 0 {
		// An earlier transaction was left open (its abort failed while the
		// coordinator was unreachable): abort it now, or BeginTxn fails.
		if err := t.AbortTxn(); err != nil {
			fatal, err := fail(fmt.Errorf("partition %d: cannot abort an earlier transaction: %w", p, err))
			for _, r := range live {
				t.answer(r, err)
			}
			return nil, fatal
		}
	}
	err := t.BeginTxn()
	if err == nil {
		err = t.SendMessages(msgs)
		if err != nil && t.TxnStatus()&sarama.ProducerTxnFlagAbortableError != 0 {
			_ = t.AbortTxn()
		}
	}
	if err != nil {
		fatal, err := fail(err)
		for _, r := range live {
			t.answer(r, err)
		}
		return nil, fatal
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
		if err := t.AbortTxn(); err != nil {
			l.Log.Warn("cannot abort a transaction with a withdrawn append; the coordinator aborts it at its timeout", "partition", p, "err", err)
			fatal, err := fail(err)
			for _, r := range live {
				t.answer(r, err)
			}
			return nil, fatal
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
	if err := t.CommitTxn(); err != nil {
		fatal, err := fail(err)
		for _, r := range live {
			t.answer(r, err)
		}
		return nil, fatal
	}
	appends.WithLabelValues("ok").Add(float64(len(live)))
	for _, r := range live {
		t.answer(r, nil)
	}
	return nil, false
}

func fenced(err error) bool {
	return errors.Is(err, sarama.ErrProducerFenced) || errors.Is(err, sarama.ErrInvalidProducerEpoch) ||
		errors.Is(err, sarama.ErrTransactionalIDAuthorizationFailed)
}

// WriteClaim writes a claim record for a normalized email (a tombstone when
// c is released), in a transaction of the producer of the email's
// partition: only its owner may write it, and a deposed owner is fenced.
func (l *TxnEventLog) WriteClaim(ctx context.Context, email string, c events.Claim) error {
	p := kafkax.Partition(email, l.Config.Partitions)
	l.mu.Lock()
	prod := l.producers[p]
	l.mu.Unlock()
	if prod == nil {
		return fmt.Errorf("%w: partition %d", ErrNotWriter, p)
	}
	value, err := events.EncodeClaim(c)
	if err != nil {
		return err
	}
	msg := &sarama.ProducerMessage{
		Topic: l.Config.ClaimsTopic, Key: sarama.StringEncoder(email),
		Headers: []sarama.RecordHeader{{Key: []byte(events.HeaderSeq), Value: []byte(fmt.Sprint(c.Seq))}},
	}
	if value != nil {
		msg.Value = sarama.ByteEncoder(value)
	}
	return l.inTxn(ctx, p, prod, []*sarama.ProducerMessage{msg}, func() { l.Late.PutClaim(email, c) })
}
