package bench

import (
	"strings"
	"testing"
	"time"
)

// JmxTool's properties reports, parsed and divided over a window: the
// versions of an API are summed, the meters that count a part of Fetch
// again are left out, and a window with no sample within a second of an
// end has no figure.
func TestRequestsPerRequest(t *testing.T) {
	const report = `trying to connect to JMX url: service:jmx:rmi:///jndi/rmi://127.0.0.1:1/jmxrmi
time=1000000
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Fetch,version=16:Count=100
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=FetchConsumer,version=16:Count=100
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Produce,version=9:Count=40
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Produce,version=11:Count=10
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=EndTxn,version=3:Count=5
time=1001000
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Fetch,version=16:Count=150
time=1011000
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Fetch,version=16:Count=300
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=FetchConsumer,version=16:Count=300
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Produce,version=9:Count=90
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=Produce,version=11:Count=60
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=EndTxn,version=3:Count=55
kafka.network:type=RequestMetrics,name=RequestsPerSec,request=AddPartitionsToTxn,version=4:Count=20
`
	samples, err := parseMeterSamples(strings.NewReader(report))
	if err != nil || len(samples) != 3 {
		t.Fatalf("parsed %d samples, %v; want 3", len(samples), err)
	}
	if got := samples[0].counts["Produce"]; got != 50 {
		t.Fatalf("Produce of the first sample %v, want 50 (two versions)", got)
	}
	at := func(ms int64) time.Time { return time.UnixMilli(ms) }
	// The samples nearest to the window's ends are those of 1,000,000 and
	// 1,011,000 ms: 11 s, at 10 requests a second.
	got := requestsPerRequest(samples, at(1000200), at(1010400), 10)
	want := map[string]float64{"Fetch": 1.82, "Produce": 0.91, "EndTxn": 0.45, "AddPartitionsToTxn": 0.18, "all": 3.36}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for api, v := range want {
		if got[api] != v {
			t.Errorf("%s: %v per request, want %v (all: %v)", api, got[api], v, got)
		}
	}
	if got := requestsPerRequest(samples, at(1000000), at(1005000), 10); got != nil {
		t.Errorf("a window whose end has no sample within a second: %v, want none", got)
	}
	if apis := topAPIs([]map[string]float64{got, {"EndTxn": 3, "all": 3}, want}); strings.Join(apis, ",") != "EndTxn,Fetch,Produce,AddPartitionsToTxn" {
		t.Errorf("topAPIs: %v", apis)
	}
}
