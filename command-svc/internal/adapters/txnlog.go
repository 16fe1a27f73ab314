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

// DefaultAppendTimeout is TxnEventLog.AppendTimeout's zero value.
const DefaultAppendTimeout = 5 * time.Second

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
	Config   kafkax.Config
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

	mu        sync.Mutex
	producers map[int32]*txnProducer
}

// txnProducer is one partition's transactional producer. A producer runs
// one transaction at a time, so appends to one partition are serialized;
// the lock is a channel so that a waiter can give up at its deadline.
type txnProducer struct {
	lock   chan struct{}
	closed bool // guarded by lock
	sarama.SyncProducer
}

func newTxnProducer(p sarama.SyncProducer) *txnProducer {
	return &txnProducer{lock: make(chan struct{}, 1), SyncProducer: p}
}

// closeWhenIdle closes the producer once no transaction runs on it (sarama
// panics on a transaction call after Close), without waiting for that.
func (t *txnProducer) closeWhenIdle() {
	go func() {
		t.lock <- struct{}{}
		defer func() { <-t.lock }()
		t.closeLocked()
	}()
}

// closeLocked closes the producer; the caller holds the lock.
func (t *txnProducer) closeLocked() {
	if !t.closed {
		t.closed = true
		_ = t.SyncProducer.Close()
	}
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
			l.producers[p] = newTxnProducer(prod)
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
	msgs := make([]*sarama.ProducerMessage, 0, len(es))
	for _, e := range es {
		value, err := events.Encode(e)
		if err != nil {
			return err
		}
		var headers []sarama.RecordHeader
		for k, v := range events.Headers(e, l.Source) {
			headers = append(headers, sarama.RecordHeader{Key: []byte(k), Value: []byte(v)})
		}
		msgs = append(msgs, &sarama.ProducerMessage{Topic: l.Config.EventsTopic, Key: sarama.StringEncoder(e.UID), Value: sarama.ByteEncoder(value), Headers: headers})
	}
	late := func() {
		for _, e := range es {
			if err := l.Late.Apply(e); err != nil {
				l.Log.Error("a late commit does not fold into the state", "uid", e.UID, "version", e.Version, "err", err)
			}
		}
	}
	if err := l.inTxn(ctx, p, prod, msgs, late); err != nil {
		return fmt.Errorf("append %d events of %s: %w", len(es), es[0].UID, err)
	}
	return nil
}

// inTxn sends msgs in one transaction of partition p's producer, giving
// up with ErrAppendTimeout when the append timeout passes (or ctx ends).
// sarama's SyncProducer cannot be interrupted, so the transaction runs on
// in the background, holding the partition's lock: it is aborted if it had
// not reached its commit by the deadline, and if its commit succeeds after
// the deadline, late runs (under the lock) and Late learns of it. The
// partition's next append waits for all that, up to its own deadline.
func (l *TxnEventLog) inTxn(ctx context.Context, p int32, prod *txnProducer, msgs []*sarama.ProducerMessage, late func()) error {
	timeout := l.AppendTimeout
	if timeout <= 0 {
		timeout = DefaultAppendTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case prod.lock <- struct{}{}:
	case <-ctx.Done():
		appends.WithLabelValues("timeout").Inc()
		return fmt.Errorf("%w (%s): partition %d is still busy with an earlier append", ErrAppendTimeout, timeout, p)
	}
	committing := make(chan struct{})
	done := make(chan error, 1)
	var gaveUp atomic.Bool
	go func() {
		defer func() { <-prod.lock }()
		err := l.txn(ctx, p, prod, msgs, committing)
		if err == nil && gaveUp.Load() && l.Late != nil {
			l.Log.Warn("a transaction committed after its caller gave up; its command was answered 503 but is in the log", "partition", p)
			late()
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	gaveUp.Store(true)
	select {
	case err := <-done:
		return err
	default:
	}
	appends.WithLabelValues("timeout").Inc()
	select {
	case <-committing:
		return fmt.Errorf("%w (%s): partition %d: the commit had begun and its outcome is not known yet", ErrAppendTimeout, timeout, p)
	default:
		return fmt.Errorf("%w (%s): partition %d", ErrAppendTimeout, timeout, p)
	}
}

// txn runs one transaction. It closes committing just before the commit,
// and aborts instead when ctx has ended by then: its caller has given up.
func (l *TxnEventLog) txn(ctx context.Context, p int32, prod *txnProducer, msgs []*sarama.ProducerMessage, committing chan struct{}) error {
	if prod.closed {
		return fmt.Errorf("%w: partition %d: its producer was closed (a new assignment)", ErrNotWriter, p)
	}
	if st := prod.TxnStatus(); st&(sarama.ProducerTxnFlagInTransaction|sarama.ProducerTxnFlagAbortableError) != 0 && st&sarama.ProducerTxnFlagFatalError == 0 {
		// An earlier transaction was left open (its abort failed while the
		// coordinator was unreachable): abort it now, or BeginTxn fails.
		if err := prod.AbortTxn(); err != nil {
			appends.WithLabelValues("failed").Inc()
			return fmt.Errorf("partition %d: cannot abort an earlier transaction: %w", p, err)
		}
	}
	err := prod.BeginTxn()
	if err == nil {
		err = prod.SendMessages(msgs)
		switch {
		case err == nil && ctx.Err() != nil:
			err = fmt.Errorf("%w: aborted after the deadline", ErrAppendTimeout)
			if aerr := prod.AbortTxn(); aerr != nil {
				l.Log.Warn("cannot abort a late transaction; the coordinator aborts it at its timeout", "partition", p, "err", aerr)
			}
		case err == nil:
			close(committing)
			err = prod.CommitTxn()
		case prod.TxnStatus()&sarama.ProducerTxnFlagAbortableError != 0:
			_ = prod.AbortTxn()
		}
	}
	if err == nil {
		appends.WithLabelValues("ok").Inc()
		return nil
	}
	if fenced(err) || prod.TxnStatus()&sarama.ProducerTxnFlagFatalError != 0 {
		appends.WithLabelValues("fenced").Inc()
		l.Log.Warn("the partition's producer is fenced or failed fatally; closing it", "partition", p, "err", err)
		l.mu.Lock()
		current := l.producers[p] == prod
		if current {
			delete(l.producers, p)
		}
		l.mu.Unlock()
		prod.closeLocked()
		if current && l.Fenced != nil {
			go l.Fenced(p)
		}
		return fmt.Errorf("%w: partition %d: %v", ErrNotWriter, p, err)
	}
	appends.WithLabelValues("failed").Inc()
	return err
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
