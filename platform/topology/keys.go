package topology

import (
	"bytes"

	"github.com/IBM/sarama"
)

// IndexKey returns the record key of an index entry: the partition part
// (for example a normalized email), a 0 byte, then the entry's own id (a
// uid). Compaction keeps one record per entry, and the producer of
// Config.ProducerSarama places the record by the partition part alone, so
// every entry of one email lives on kafkax.Partition(email, n) next to
// each other.
func IndexKey(partitionPart, id string) string { return partitionPart + "\x00" + id }

// SplitIndexKey reverses IndexKey.
func SplitIndexKey(key []byte) (partitionPart, id string, ok bool) {
	before, after, found := bytes.Cut(key, []byte{0})
	return string(before), string(after), found
}

// keyPrefixPartitioner is murmur2 (Java-compatible) over the part of the
// key before its first 0 byte. A key without a 0 byte, such as a uid, is
// placed exactly as the Java client places it.
type keyPrefixPartitioner struct{ murmur2 sarama.Partitioner }

func newKeyPrefixPartitioner(topic string) sarama.Partitioner {
	return keyPrefixPartitioner{murmur2: sarama.NewMurmur2Partitioner(topic)}
}

func (k keyPrefixPartitioner) Partition(msg *sarama.ProducerMessage, n int32) (int32, error) {
	if msg.Key == nil {
		return k.murmur2.Partition(msg, n)
	}
	key, err := msg.Key.Encode()
	if err != nil {
		return -1, err
	}
	if i := bytes.IndexByte(key, 0); i >= 0 {
		key = key[:i]
	}
	return k.murmur2.Partition(&sarama.ProducerMessage{Key: sarama.ByteEncoder(key)}, n)
}

func (keyPrefixPartitioner) RequiresConsistency() bool { return true }
