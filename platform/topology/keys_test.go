package topology

import (
	"testing"

	"github.com/IBM/sarama"

	"profiles/platform/kafkax"
)

func TestIndexKeysArePlacedByTheirPartitionPart(t *testing.T) {
	p := newKeyPrefixPartitioner("t")
	for _, email := range []string{"bob1@mail.com", "a@b.c", ""} {
		key := IndexKey(email, "74292b21-0fbb-4f1d-a18f-fa80f947fa5d")
		got, err := p.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(key)}, 12)
		if err != nil || got != kafkax.Partition(email, 12) {
			t.Fatalf("%q placed on %d, want %d (%v)", key, got, kafkax.Partition(email, 12), err)
		}
		part, id, ok := SplitIndexKey([]byte(key))
		if !ok || part != email || id != "74292b21-0fbb-4f1d-a18f-fa80f947fa5d" {
			t.Fatalf("SplitIndexKey(%q) = %q %q %v", key, part, id, ok)
		}
	}
	// A plain uid key is placed as the Java client places it.
	got, _ := p.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder("hello")}, 100)
	if got != 29 {
		t.Fatalf("plain key on %d, want 29", got)
	}
}
