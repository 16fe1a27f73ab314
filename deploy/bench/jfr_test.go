package bench

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"profiles/platform/testenv"
)

// Three samples as `jfr print --stack-depth 256 --events
// jdk.ExecutionSample` prints them (frames shortened): a fetch handled on
// a request handler thread, a callback of a fetch that completed later,
// and a network thread, whose stack was cut short by --stack-depth.
const jfrText = `jdk.ExecutionSample {
  startTime = 04:09:07.344
  sampledThread = "data-plane-kafka-request-handler-2" (javaThreadId = 80)
  state = "STATE_RUNNABLE"
  stackTrace = [
    java.util.ArrayList.elementAt(Object[], int) line: 416
    org.apache.kafka.common.requests.FetchRequest.fetchData(Map) line: 398
    kafka.server.KafkaApis.handleFetchRequest(RequestChannel$Request) line: 565
    kafka.server.KafkaApis.handle(RequestChannel$Request, RequestLocal) line: 170
    kafka.server.KafkaRequestHandler.run() line: 158
    java.lang.Thread.run() line: 840
  ]
}

jdk.ExecutionSample {
  startTime = 04:09:07.345
  sampledThread = "data-plane-kafka-request-handler-5" (javaThreadId = 83)
  state = "STATE_RUNNABLE"
  stackTrace = [
    org.apache.kafka.common.protocol.ApiKeys.forId(int) line: 207
    kafka.server.KafkaApis.$anonfun$handleFetchRequest$16(KafkaApis, short, RequestChannel$Request) line: 765
    kafka.server.DelayedFetch.onComplete() line: 180
    kafka.server.KafkaApis.handleProduceRequest(RequestChannel$Request, RequestLocal) line: 410
    kafka.server.KafkaApis.handle(RequestChannel$Request, RequestLocal) line: 170
  ]
}

jdk.ExecutionSample {
  startTime = 04:09:07.351
  sampledThread = "data-plane-kafka-network-thread-1-PLAINTEXT-PLAINTEXT-0" (javaThreadId = 52)
  state = "STATE_RUNNABLE"
  stackTrace = [
    java.util.concurrent.ConcurrentSkipListMap.doPut(Object, Object, boolean) line: 616
    com.yammer.metrics.core.Histogram.update(long) line: 110
    ...
  ]
}
`

func TestReadSamplesParsesJFRText(t *testing.T) {
	got, err := readSamples(strings.NewReader(jfrText))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d samples, want 3", len(got))
	}
	if got[0].thread != "data-plane-kafka-request-handler-2" || len(got[0].frames) != 6 ||
		got[0].frames[0] != "java.util.ArrayList.elementAt" || got[0].frames[2] != "kafka.server.KafkaApis.handleFetchRequest" {
		t.Errorf("first sample: %+v", got[0])
	}
	if n := len(got[2].frames); n != 2 {
		t.Errorf("the cut stack has %d frames, want 2 (no frame for its \"...\")", n)
	}
}

func TestSummarizeSamplesAttributesSamplesToTheRequestOrThePool(t *testing.T) {
	samples, err := readSamples(strings.NewReader(jfrText))
	if err != nil {
		t.Fatal(err)
	}
	s := summarizeSamples(samples, 15)
	// The outermost handler counts: the fetch callback ran inside a
	// produce (it completed a fetch that the produce made ready).
	want := []string{"request FetchRequest", "request ProduceRequest", "thread data-plane-kafka-network-thread"}
	if len(s.Breakdown) != 1+len(want) {
		t.Fatalf("breakdown %q", s.Breakdown)
	}
	for i, w := range want {
		if !strings.HasSuffix(s.Breakdown[1+i], "1  33.3%  "+w) {
			t.Errorf("breakdown line %d is %q, want %q", 1+i, s.Breakdown[1+i], w)
		}
	}
	if !strings.Contains(s.Header, "3 execution samples") || !strings.Contains(strings.Join(s.Flat, "\n"), "java.util.ArrayList.elementAt") {
		t.Errorf("header %q, flat %q", s.Header, s.Flat)
	}
}

// captureBroker records the real broker of make test with the jcmd of its
// own JVM, and reads the recording back with its jfr. The broker answers
// metadata requests meanwhile, so that its request threads run.
func TestCaptureBrokerRecordsTheRealBroker(t *testing.T) {
	brokers := testenv.Require(t, "PROFILES_TEST_KAFKA", "the test Kafka broker")
	data := os.Getenv("PROFILES_TEST_KAFKA_DATA")
	raw, err := os.ReadFile(filepath.Join(data, "kafka.pid"))
	if data == "" || err != nil {
		t.Skipf("SKIP: no broker PID file (PROFILES_TEST_KAFKA_DATA=%q): %v", data, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	client, err := sarama.NewClient([]string{brokers}, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			_ = client.RefreshMetadata()
		}
	}()
	b := &bench{cfg: Config{Repo: t.TempDir(), OutDir: t.TempDir(), Log: testLog{t}}, t0: time.Now()}
	s := b.captureBroker(ctx, "test", pid, 2)
	if s == nil {
		t.Fatal("no profile (see the log above)")
	}
	if st, err := os.Stat(s.File); err != nil || st.Size() == 0 {
		t.Fatalf("recording %q: %v", s.File, err)
	}
	if s.Proc != "kafka" || len(s.Flat) < 2 || len(s.Breakdown) < 2 || !strings.Contains(s.Header, "execution samples") {
		t.Fatalf("summary %+v; want samples of the broker's threads", s)
	}
	t.Logf("%s\n%s\n%s", s.Header, strings.Join(s.Flat, "\n"), strings.Join(s.Breakdown, "\n"))
}
