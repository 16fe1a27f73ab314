package kafkax

import "github.com/IBM/sarama"

// Partition returns the partition of key in a topic with n partitions, the
// same one the Java client's default partitioner, Kafka Streams and kcat
// choose: murmur2(key) & 0x7fffffff % n.
func Partition(key string, n int32) int32 {
	p, err := sarama.NewMurmur2Partitioner("").Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(key)}, n)
	if err != nil { // only a failing key encoder errs, and StringEncoder never fails
		panic(err)
	}
	return p
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
