package kafkax

import (
	"fmt"
	"testing"

	"github.com/IBM/sarama"
)

// The expected partitions were computed with the Java client (kafka-clients
// 4.1.1): Utils.toPositive(Utils.murmur2(key.getBytes(UTF_8))) % n.
func TestPartitionMatchesJavaClient(t *testing.T) {
	tests := []struct {
		key  string
		n    int32
		want int32
	}{
		{"", 12, 9},
		{"a", 12, 4},
		{"hello", 100, 29},
		{"74292b21-0fbb-4f1d-a18f-fa80f947fa5d", 12, 6},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if got := Partition(tt.key, tt.n); got != tt.want {
				t.Fatalf("Partition(%q, %d) = %d, want %d", tt.key, tt.n, got, tt.want)
			}
		})
	}
}

// Partition (our own murmur2) places every key exactly where sarama's
// murmur2 partitioner, which the producers use, places it.
func TestPartitionAgreesWithSaramasPartitioner(t *testing.T) {
	for i := range 2000 {
		key := string(make([]byte, i%40)) + fmt.Sprintf("k%d-\xff\x80é", i*7919)
		for _, n := range []int32{1, 4, 6, 12, 100} {
			want, err := sarama.NewMurmur2Partitioner("").Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(key)}, n)
			if err != nil {
				t.Fatal(err)
			}
			if got := Partition(key, n); got != want {
				t.Fatalf("Partition(%q, %d) = %d, sarama says %d", key, n, got, want)
			}
		}
	}
}

func BenchmarkPartition(b *testing.B) {
	for b.Loop() {
		Partition("74292b21-0fbb-4f1d-a18f-fa80f947fa5d", 12)
	}
}
