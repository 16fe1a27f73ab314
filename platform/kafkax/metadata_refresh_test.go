package kafkax

import (
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// A leader cut off from the controller quorum does not learn that it was
// deposed: it answers fetches without an error and without the records the
// new leader takes. A consumer of it moves only once another broker's
// metadata, which no longer lists it, reaches the client: the periodic
// refresh (Config.MetadataRefresh) is what brings it, since nothing else
// prompts a lookup.
func TestAConsumerLeavesALeaderDeposedWithoutAnError(t *testing.T) {
	for _, tc := range []struct {
		name    string
		refresh time.Duration
		moves   bool
	}{
		{"refreshed every 200 ms", 200 * time.Millisecond, true},
		{"refreshed every 10 minutes (sarama's default)", 10 * time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const topic = "events"
			deposed, next := sarama.NewMockBroker(t, 1), sarama.NewMockBroker(t, 2)
			defer deposed.Close()
			defer next.Close()
			offsets := sarama.NewMockOffsetResponse(t).
				SetOffset(topic, 0, sarama.OffsetOldest, 0).
				SetOffset(topic, 0, sarama.OffsetNewest, 1)
			metadata := func(leader *sarama.MockBroker, live ...*sarama.MockBroker) sarama.MockResponse {
				md := sarama.NewMockMetadataResponse(t).SetLeader(topic, 0, leader.BrokerID())
				for _, b := range live {
					md.SetBroker(b.Addr(), b.BrokerID())
				}
				return md
			}
			// Before the controller fences it, every broker names the
			// deposed one as the leader; it never has the record.
			deposed.SetHandlerByMap(map[string]sarama.MockResponse{
				"MetadataRequest": metadata(deposed, deposed, next),
				"OffsetRequest":   offsets,
				"FetchRequest":    fetched(topic, ""),
			})
			next.SetHandlerByMap(map[string]sarama.MockResponse{
				"MetadataRequest": metadata(deposed, deposed, next),
				"OffsetRequest":   offsets,
				"FetchRequest":    fetched(topic, "taken by the new leader"),
			})
			conf := Config{Brokers: []string{deposed.Addr()}, MetadataRefresh: tc.refresh}.Sarama("refresh-test")
			conf.ApiVersionsRequest = false // the mock brokers answer what is mapped only
			conf.Consumer.IsolationLevel = sarama.ReadUncommitted
			client, err := sarama.NewClient([]string{deposed.Addr()}, conf)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			consumer, err := sarama.NewConsumerFromClient(client)
			if err != nil {
				t.Fatal(err)
			}
			defer consumer.Close()
			pc, err := consumer.ConsumePartition(topic, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()

			// The controller fences it: the live broker drops it and names
			// itself; the deposed broker still answers as before.
			time.Sleep(300 * time.Millisecond)
			next.SetHandlerByMap(map[string]sarama.MockResponse{
				"MetadataRequest": metadata(next, next),
				"OffsetRequest":   offsets,
				"FetchRequest":    fetched(topic, "taken by the new leader"),
			})
			select {
			case m := <-pc.Messages():
				if !tc.moves {
					t.Fatalf("read %q without a metadata refresh: the test does not show what it means to", m.Value)
				}
			case <-time.After(5 * time.Second):
				if tc.moves {
					t.Fatal("the consumer read nothing in 5 s: it still fetches from the deposed leader")
				}
			}
		})
	}
}

// fetched answers every fetch of partition 0 of topic with the record
// value at offset 0, or with no record if value is empty, and no error
// (the mock's own fetch response names a preferred read replica, which
// makes the consumer look the leader up again at every fetch).
func fetched(topic, value string) sarama.MockResponse {
	r := &sarama.FetchResponse{Version: 12}
	end := int64(0)
	if value != "" {
		r.AddRecord(topic, 0, nil, sarama.StringEncoder(value), 0)
		end = 1
	} else {
		r.AddError(topic, 0, sarama.ErrNoError)
	}
	b := r.Blocks[topic][0]
	b.PreferredReadReplica = -1
	b.HighWaterMarkOffset, b.LastStableOffset = end, end
	return sarama.NewMockWrapper(r)
}
