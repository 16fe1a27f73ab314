package kafkax

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// heldProducer is a real transactional producer whose SendMessages sends
// its records (they are in the open transaction) and then waits on hold
// before it returns: a broker that holds the answer.
type heldProducer struct {
	sarama.SyncProducer
	hold <-chan struct{}
}

func (h heldProducer) SendMessages(msgs []*sarama.ProducerMessage) error {
	err := h.SyncProducer.SendMessages(msgs)
	<-h.hold
	return err
}

// On real Kafka: a transaction that runs for StuckAfter is given up, the
// replacement producer fences it, and none of the records it had sent is
// ever read by a read_committed reader, even after the old producer goes
// on and tries to commit. What the caller writes again is read once.
func TestTxnWriterNothingOfAReplacedTransactionIsRead(t *testing.T) {
	kcfg := testKafka(t)
	topic := fmt.Sprintf("kafkax-txnwriter-%06d", rand.IntN(1e6))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := createTopics(ctx, kcfg, testTopic{Name: topic, Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	started := 0
	w := NewTxnWriter(TxnWriterOptions{Brokers: kcfg.Brokers, Producer: func() *sarama.Config { return kcfg.ProducerSarama("kafkax-test") },
		TransactionalID: topic + "-txn",
		StuckAfter:      time.Second, Topic: topic,
		NewProducer: func(seeds []string, conf *sarama.Config) (sarama.SyncProducer, error) {
			p, err := sarama.NewSyncProducer(seeds, conf)
			if err != nil {
				return nil, err
			}
			started++
			if started == 1 {
				return heldProducer{SyncProducer: p, hold: hold}, nil
			}
			return p, nil
		}})
	defer w.Close()

	write := func(v string) error {
		return w.SendMessages([]*sarama.ProducerMessage{{Topic: topic, Key: sarama.StringEncoder("k"), Value: sarama.StringEncoder(v)}})
	}
	if err := write("held"); !errors.Is(err, ErrWriterReplaced) {
		t.Fatalf("the held write returned %v, want ErrWriterReplaced", err)
	}
	if err := write("again"); err != nil {
		t.Fatal(err)
	}
	close(hold) // the old producer now tries to commit: it is fenced

	client, err := sarama.NewClient(kcfg.Brokers, kcfg.Sarama("kafkax-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var got []string
	for deadline := time.Now().Add(20 * time.Second); ; {
		got = nil
		if _, err := CommittedRecords(client, topic, 0, 0, func(_ int64, _, v []byte) { got = append(got, string(v)) }); err != nil {
			t.Fatal(err)
		}
		if len(got) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // room for the old producer's commit attempt
	got = nil
	if _, err := CommittedRecords(client, topic, 0, 0, func(_ int64, _, v []byte) { got = append(got, string(v)) }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[again]" {
		t.Errorf("read_committed reads %v, want only [again]", got)
	}
	if started != 2 {
		t.Errorf("%d producers started, want 2", started)
	}
}
