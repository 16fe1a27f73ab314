package e2e

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/IBM/sarama"

	"profiles/platform/kafkax"
	"profiles/platform/topology"
)

// Garbage, and an event of an unknown type, in the event log: the projector
// sets both aside in the dead-letter topic and keeps going, and later good
// events are applied.
func TestPoisonEventsGoToTheDeadLetterTopic(t *testing.T) {
	const partitions = 4
	s := StartSystem(t, Options{Partitions: partitions})
	var p profile
	s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "before", "email": "poison@mail.com"}, nil).JSON(t, &p)

	topic := s.env["EVENTS_TOPIC"]
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V4_0_0_0
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	prod, err := sarama.NewSyncProducer([]string{brokers}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	poison := map[int64]string{}
	for _, value := range []string{
		`{{{ not json`,
		`{"id":"x","type":"ProfileExploded","uid":"` + p.UID + `","version":2,"schemaVersion":1,"data":{}}`,
	} {
		_, off, err := prod.SendMessage(&sarama.ProducerMessage{
			Topic: topic, Partition: kafkax.Partition(p.UID, partitions),
			Key: sarama.StringEncoder(p.UID), Value: sarama.StringEncoder(value),
		})
		if err != nil {
			t.Fatal(err)
		}
		poison[off] = value
	}

	// A good event after the poison is applied and visible.
	r := s.Do(http.MethodPut, "/api/profile/"+p.UID, map[string]string{"username": "after", "email": "poison@mail.com"}, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("PUT after the poison = %d %s", r.Status, r.Body)
	}
	var got profile
	s.Do(http.MethodGet, "/api/profile/"+p.UID, nil, nil).JSON(t, &got)
	if got.Username != "after" || got.Version != 2 {
		t.Fatalf("after the poison: %+v", got)
	}

	// The dead-letter topic holds both, with where they came from and why.
	found := map[int64]bool{}
	for _, m := range deadLetters(t, s) {
		h := topology.FromConsumerMessage(m).Headers
		if h[topology.HeaderDLQTopic] != topic {
			continue
		}
		off, _ := strconv.ParseInt(h[topology.HeaderDLQOffset], 10, 64)
		if h[topology.HeaderDLQReason] == "" || h[topology.HeaderDLQConsumer] != "projector" || string(m.Value) != poison[off] {
			t.Fatalf("unexpected dead letter: headers %v value %q", h, m.Value)
		}
		found[off] = true
	}
	if len(found) != len(poison) {
		t.Fatalf("dead letters for offsets %v; want %v", found, poison)
	}
	if n := s.Metric("projector-0", `profiles_projector_events_total{result="poison"}`); n != 2 {
		t.Fatalf("projector counted %v poison events, want 2", n)
	}
}

// deadLetters returns every record of the system's dead-letter topic.
func deadLetters(t *testing.T, s *System) []*sarama.ConsumerMessage {
	t.Helper()
	return ReadTopic(t, Kafka(t), s.env["DEAD_LETTER_TOPIC"], nil)
}

// An undecodable snapshot: query-svc sets it aside and keeps its view going.
func TestPoisonSnapshotsGoToTheDeadLetterTopic(t *testing.T) {
	const partitions = 4
	s := StartSystem(t, Options{Partitions: partitions})
	var p profile
	s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "before", "email": "snap@mail.com"}, nil).JSON(t, &p)

	cfg := sarama.NewConfig()
	cfg.Version = sarama.V4_0_0_0
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	prod, err := sarama.NewSyncProducer([]string{brokers}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	topic := s.env["SNAPSHOTS_TOPIC"]
	_, off, err := prod.SendMessage(&sarama.ProducerMessage{
		Topic: topic, Partition: kafkax.Partition(p.UID, partitions),
		Key: sarama.StringEncoder(p.UID), Value: sarama.StringEncoder(`<profile>not json</profile>`),
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Do(http.MethodPut, "/api/profile/"+p.UID, map[string]string{"username": "after", "email": "snap@mail.com"}, nil); r.Status != http.StatusOK {
		t.Fatalf("PUT after the poison = %d %s", r.Status, r.Body)
	}
	var got profile
	s.Do(http.MethodGet, "/api/profile/"+p.UID, nil, nil).JSON(t, &got)
	if got.Username != "after" {
		t.Fatalf("the view stalled: %+v", got)
	}
	for _, m := range deadLetters(t, s) {
		h := topology.FromConsumerMessage(m).Headers
		if h[topology.HeaderDLQTopic] == topic && h[topology.HeaderDLQOffset] == strconv.FormatInt(off, 10) && h[topology.HeaderDLQConsumer] == "query-svc" {
			return
		}
	}
	t.Fatal("the poison snapshot is not in the dead-letter topic")
}
