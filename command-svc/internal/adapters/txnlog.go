package adapters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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

var appends = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "profiles_command_appends_total",
	Help: "Transactional appends to the event log, by result: ok, fenced (another instance took the partition over) or failed.",
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

	mu        sync.Mutex
	producers map[int32]*txnProducer
}

// txnProducer is one partition's transactional producer. A producer runs
// one transaction at a time, so appends to one partition are serialized.
type txnProducer struct {
	sync.Mutex
	sarama.SyncProducer
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
		_ = prod.Close()
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
			for attempt := range 5 {
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
			l.producers[p] = &txnProducer{SyncProducer: prod}
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

// Close closes every producer.
func (l *TxnEventLog) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, prod := range l.producers {
		_ = prod.Close()
		delete(l.producers, p)
	}
}

// Append writes es (all of one profile) in one transaction.
func (l *TxnEventLog) Append(_ context.Context, es ...events.Event) error {
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
	if err := l.inTxn(p, prod, msgs); err != nil {
		return fmt.Errorf("append %d events of %s: %w", len(es), es[0].UID, err)
	}
	return nil
}

// inTxn sends msgs in one transaction of partition p's producer.
func (l *TxnEventLog) inTxn(p int32, prod *txnProducer, msgs []*sarama.ProducerMessage) error {
	prod.Lock()
	defer prod.Unlock()
	err := prod.BeginTxn()
	if err == nil {
		err = prod.SendMessages(msgs)
		if err == nil {
			err = prod.CommitTxn()
		} else if prod.TxnStatus()&sarama.ProducerTxnFlagAbortableError != 0 {
			_ = prod.AbortTxn()
		}
	}
	if err == nil {
		appends.WithLabelValues("ok").Inc()
		return nil
	}
	if fenced(err) || prod.TxnStatus()&sarama.ProducerTxnFlagFatalError != 0 {
		appends.WithLabelValues("fenced").Inc()
		l.Log.Warn("fenced: another instance writes this partition now", "partition", p, "err", err)
		l.mu.Lock()
		if l.producers[p] == prod {
			_ = prod.Close()
			delete(l.producers, p)
		}
		l.mu.Unlock()
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
func (l *TxnEventLog) WriteClaim(_ context.Context, email string, c events.Claim) error {
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
	return l.inTxn(p, prod, []*sarama.ProducerMessage{msg})
}
