package kafkax

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// ListOffsets answers, for two topics at once, what GetOffset answers one
// partition at a time; read_committed stops before an open transaction.
func TestListOffsetsMatchesGetOffsetAndHonoursIsolation(t *testing.T) {
	kcfg := testKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := fmt.Sprintf("kafkax-offsets-a-%06d", rand.IntN(1e6)), fmt.Sprintf("kafkax-offsets-b-%06d", rand.IntN(1e6))
	if err := createTopics(ctx, kcfg, testTopic{Name: a, Partitions: 3}, testTopic{Name: b, Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	cfg := kcfg.ProducerSarama("kafkax-test")
	cfg.Producer.Transaction.ID = a + "-txn"
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	producer, err := sarama.NewSyncProducer(kcfg.Brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	// Partition p of a gets p+1 committed records; b/1 one committed record
	// and then an open transaction.
	send := func(topic string, p int32, n int) {
		for range n {
			if _, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Partition: p, Value: sarama.StringEncoder("x")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := producer.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	for p := range int32(3) {
		send(a, p, int(p)+1)
	}
	send(b, 1, 1)
	if err := producer.CommitTxn(); err != nil {
		t.Fatal(err)
	}
	if err := producer.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	send(b, 1, 1)
	defer producer.AbortTxn()

	client, err := Connect(ctx, kcfg, "kafkax-test")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	parts := map[string][]int32{a: {0, 1, 2}, b: {0, 1}}
	for _, at := range []int64{sarama.OffsetOldest, sarama.OffsetNewest} {
		got, err := ListOffsets(client, at, sarama.ReadUncommitted, parts)
		if err != nil {
			t.Fatal(err)
		}
		for topic, ps := range parts {
			for _, p := range ps {
				want, err := client.GetOffset(topic, p, at)
				if err != nil {
					t.Fatal(err)
				}
				if got[topic][p] != want {
					t.Errorf("ListOffsets(%d) %s/%d = %d; GetOffset says %d", at, topic, p, got[topic][p], want)
				}
			}
		}
	}
	stable, err := ListOffsets(client, sarama.OffsetNewest, sarama.ReadCommitted, map[string][]int32{b: {1}})
	if err != nil {
		t.Fatal(err)
	}
	high, _ := client.GetOffset(b, 1, sarama.OffsetNewest)
	// b/1: record, commit marker, then the open transaction's record.
	if stable[b][1] != 2 || high != 3 {
		t.Errorf("b/1: last stable offset %d, high-water mark %d; want 2 and 3", stable[b][1], high)
	}
}

// ClusterID is the id the test broker's storage was formatted with, the
// same from every client.
func TestClusterIDIsTheFormattedOne(t *testing.T) {
	kcfg := testKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ids []string
	for range 2 {
		client, err := Connect(ctx, kcfg, "kafkax-test")
		if err != nil {
			t.Fatal(err)
		}
		id, err := ClusterID(client)
		client.Close()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if ids[0] == "" || ids[0] != ids[1] {
		t.Fatalf("cluster ids %q", ids)
	}
	if data := os.Getenv("PROFILES_TEST_KAFKA_DATA"); data != "" {
		meta, err := os.ReadFile(filepath.Join(data, "logs", "meta.properties"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(meta), "cluster.id="+ids[0]) {
			t.Fatalf("cluster id %q is not the one in meta.properties:\n%s", ids[0], meta)
		}
	}
}
