package kafkax

import (
	"errors"
	"fmt"

	"github.com/IBM/sarama"
)

// ListOffsets returns the offset at (sarama.OffsetOldest or
// sarama.OffsetNewest) of every partition in parts, keyed by topic, with
// the given isolation: newest read_committed is the last stable offset,
// newest read_uncommitted the high-water mark.
//
// It sends one ListOffsets request per leader broker, where
// sarama.Client.GetOffset sends one per partition, one after the other, and
// cannot ask for read_committed. On a connection that also carries fetch
// long polls each request can wait behind one, so a member that caught up
// dozens of partitions one GetOffset at a time took seconds to start (make
// bench: query-svc restart).
//
// Like GetOffset, it refreshes the topics' metadata and tries once more
// when the first attempt fails (a leader moved, a broker restarted).
func ListOffsets(client sarama.Client, at int64, iso sarama.IsolationLevel, parts map[string][]int32) (map[string]map[int32]int64, error) {
	out, err := listOffsets(client, at, iso, parts)
	if err == nil {
		return out, nil
	}
	topics := make([]string, 0, len(parts))
	for topic := range parts {
		topics = append(topics, topic)
	}
	if rerr := client.RefreshMetadata(topics...); rerr != nil {
		return nil, err
	}
	return listOffsets(client, at, iso, parts)
}

func listOffsets(client sarama.Client, at int64, iso sarama.IsolationLevel, parts map[string][]int32) (map[string]map[int32]int64, error) {
	type ask struct {
		req  *sarama.OffsetRequest
		tops map[string][]int32
	}
	asks := map[*sarama.Broker]*ask{}
	for topic, ps := range parts {
		for _, p := range ps {
			leader, err := client.Leader(topic, p)
			if err != nil {
				return nil, err
			}
			a := asks[leader]
			if a == nil {
				a = &ask{req: sarama.NewOffsetRequest(client.Config().Version), tops: map[string][]int32{}}
				a.req.IsolationLevel = iso
				asks[leader] = a
			}
			a.req.AddBlock(topic, p, at, 1)
			a.tops[topic] = append(a.tops[topic], p)
		}
	}
	out := make(map[string]map[int32]int64, len(parts))
	for topic := range parts {
		out[topic] = map[int32]int64{}
	}
	for broker, a := range asks {
		resp, err := broker.GetAvailableOffsets(a.req)
		if err != nil {
			_ = broker.Close()
			return nil, err
		}
		for topic, ps := range a.tops {
			for _, p := range ps {
				block := resp.GetBlock(topic, p)
				switch {
				case block == nil:
					return nil, sarama.ErrIncompleteResponse
				case !errors.Is(block.Err, sarama.ErrNoError):
					return nil, block.Err
				}
				out[topic][p] = block.Offset
			}
		}
	}
	return out, nil
}

// CommittedStart returns a GroupOptions.Start that starts every partition
// at the offset group has committed for it, and at sarama.OffsetOldest
// where it has none: the usual consumer group behaviour, for a Group
// whose caller keeps no offsets of its own (the Group commits the offset
// after each handled batch, within a second). Each call asks the group
// coordinator (OffsetFetch) for its one partition.
func CommittedStart(client sarama.Client, group string) func(topic string, p int32) (int64, error) {
	return func(topic string, p int32) (int64, error) {
		// The admin is not closed: that would close the shared client.
		admin, err := sarama.NewClusterAdminFromClient(client)
		if err != nil {
			return 0, err
		}
		got, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {p}})
		if err != nil {
			return 0, fmt.Errorf("committed offset of %s/%d for group %s: %w", topic, p, group, err)
		}
		if got.Err != sarama.ErrNoError {
			return 0, fmt.Errorf("committed offset of %s/%d for group %s: %w", topic, p, group, got.Err)
		}
		b := got.GetBlock(topic, p)
		if b == nil || b.Offset < 0 {
			return sarama.OffsetOldest, nil
		}
		if b.Err != sarama.ErrNoError {
			return 0, fmt.Errorf("committed offset of %s/%d for group %s: %w", topic, p, group, b.Err)
		}
		return b.Offset, nil
	}
}

// ClusterID returns the id of the cluster client talks to (the id that
// kafka-storage format gave it), from a Metadata request to one broker. A
// store built from Kafka records it, to tell a cluster from another that
// happens to have the same topics. A broker that cannot be reached (one
// that died, which the metadata names until the controller fences it) is
// passed over for the next.
func ClusterID(client sarama.Client) (string, error) {
	tried := map[int32]bool{}
	var errs []error
	for b := client.LeastLoadedBroker(); b != nil; b = nextBroker(client, tried) {
		tried[b.ID()] = true
		_ = b.Open(client.Config()) // a broker not connected yet; an error shows in the request
		resp, err := b.GetMetadata(sarama.NewMetadataRequest(client.Config().Version, []string{}))
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster id from broker %d: %w", b.ID(), err))
			if Unreachable(err) {
				continue
			}
			return "", errors.Join(errs...)
		}
		if resp.ClusterID == nil || *resp.ClusterID == "" {
			return "", fmt.Errorf("cluster id: broker %d answered none", b.ID())
		}
		return *resp.ClusterID, nil
	}
	if len(errs) == 0 {
		return "", fmt.Errorf("cluster id: no broker (the client is closed)")
	}
	return "", errors.Join(errs...)
}

// nextBroker returns a broker of client that is not in tried, or nil.
func nextBroker(client sarama.Client, tried map[int32]bool) *sarama.Broker {
	for _, b := range client.Brokers() {
		if !tried[b.ID()] {
			return b
		}
	}
	return nil
}
