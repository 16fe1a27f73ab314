package kafkax

import "testing"

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
