package kafkax

import "github.com/IBM/sarama"

// Partition returns the partition of key in a topic with n partitions, the
// same one the Java client's default partitioner, Kafka Streams and kcat
// choose: murmur2(key) & 0x7fffffff % n. It is pure, allocates nothing and
// agrees with sarama.NewMurmur2Partitioner, which ProducerSarama uses.
func Partition(key string, n int32) int32 {
	return (murmur2(key) & 0x7fffffff) % n
}

// murmur2 is Kafka's murmur2 hash (org.apache.kafka.common.utils.Utils.murmur2).
func murmur2(data string) int32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	n := len(data)
	h := seed ^ uint32(n)
	for i := 0; i+4 <= n; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := n &^ 3
	switch n % 4 {
	case 3:
		h ^= uint32(data[tail+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[tail+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[tail])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

// HeaderValue returns the value of the first header of r named key, or "".
func HeaderValue(r *sarama.ConsumerMessage, key string) string {
	for _, h := range r.Headers {
		if h != nil && string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}
