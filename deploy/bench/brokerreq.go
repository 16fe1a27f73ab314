package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// brokerMeters reads the broker's request meters
// (kafka.network:type=RequestMetrics,name=RequestsPerSec, their Count, per
// API and version) every second, with Kafka's own JmxTool in a JVM of its
// own, through a JMX agent that the broker's JVM starts on a loopback port
// when asked with its jcmd. The bench divides a scenario's counts by its
// requests: what each write costs the broker, by API, which its CPU alone
// does not say.
//
// The JVM of JmxTool is not one of the processes whose CPU a scenario
// counts; it polls once a second. It resolves the meters' names once, at
// its start, and the broker makes a meter at the first request of each API
// and version: it is started after the write warm-up, when every API that
// the write scenarios use has been asked.
type brokerMeters struct {
	cmd  *exec.Cmd
	file string
}

// startBrokerMeters starts the broker's JMX agent on a free loopback port
// (unless one runs already, in which case it fails) and JmxTool, which
// writes its samples to file.
func startBrokerMeters(ctx context.Context, pid int, file string) (*brokerMeters, error) {
	bin, err := javaBin(pid)
	if err != nil {
		return nil, err
	}
	classpath, err := javaClasspath(pid)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	port := strconv.Itoa(ports[0])
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "jcmd"), strconv.Itoa(pid), "ManagementAgent.start",
		"jmxremote.port="+port, "jmxremote.rmi.port="+port, "jmxremote.authenticate=false", "jmxremote.ssl=false",
		"jmxremote.host=127.0.0.1").CombinedOutput()
	if err != nil || strings.Contains(string(out), "rror") {
		return nil, fmt.Errorf("start the broker's JMX agent: %v: %s", err, strings.TrimSpace(string(out)))
	}
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(filepath.Join(bin, "java"), "-cp", classpath, "org.apache.kafka.tools.JmxTool",
		"--jmx-url", "service:jmx:rmi:///jndi/rmi://127.0.0.1:"+port+"/jmxrmi",
		"--object-name", "kafka.network:type=RequestMetrics,name=RequestsPerSec,*",
		"--attributes", "Count", "--reporting-interval", "1000", "--report-format", "properties")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &brokerMeters{cmd: cmd, file: file}, nil
}

// stop ends JmxTool and returns its samples.
func (m *brokerMeters) stop() ([]meterSample, error) {
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
	f, err := os.Open(m.file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMeterSamples(f)
}

// javaClasspath returns the -cp (or -classpath) argument of pid's command
// line: the broker's libraries, JmxTool's among them.
func javaClasspath(pid int) (string, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "", err
	}
	args := strings.Split(string(raw), "\x00")
	for i, a := range args {
		if (a == "-cp" || a == "-classpath") && i+1 < len(args) {
			return args[i+1], nil
		}
	}
	return "", errors.New("the broker's command line has no -cp")
}

// meterSample is one report of JmxTool: when, and the count of each
// request API (the versions of an API summed).
type meterSample struct {
	at     time.Time
	counts map[string]float64
}

var meterLine = regexp.MustCompile(`^kafka\.network:type=RequestMetrics,name=RequestsPerSec,request=(\w+),version=\d+:Count=(\d+)`)

// parseMeterSamples reads JmxTool's properties reports: a line
// "time=<ms since the epoch>", then a line per meter.
func parseMeterSamples(r io.Reader) ([]meterSample, error) {
	var out []meterSample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if ms, ok := strings.CutPrefix(line, "time="); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(ms), 10, 64)
			if err != nil {
				continue
			}
			out = append(out, meterSample{at: time.UnixMilli(n), counts: map[string]float64{}})
			continue
		}
		if m := meterLine.FindStringSubmatch(line); m != nil && len(out) > 0 {
			n, _ := strconv.ParseFloat(m[2], 64)
			out[len(out)-1].counts[m[1]] += n
		}
	}
	return out, sc.Err()
}

// otherAPIs are meters that count a part of another's requests again: the
// broker meters every Fetch, and its consumers' and followers' apart too.
var otherAPIs = map[string]bool{"FetchFollower": true, "FetchConsumer": true}

// requestsPerRequest returns, for the window [from, to] of a closed loop
// that answered rate requests a second, the broker's requests of each API
// per answered request, and "all" for their sum. It uses the samples
// nearest to from and to; nil if there are none within a second of either.
func requestsPerRequest(samples []meterSample, from, to time.Time, rate float64) map[string]float64 {
	nearest := func(t time.Time) *meterSample {
		var best *meterSample
		for i := range samples {
			s := &samples[i]
			if best == nil || absDur(s.at.Sub(t)) < absDur(best.at.Sub(t)) {
				best = s
			}
		}
		if best == nil || absDur(best.at.Sub(t)) > time.Second {
			return nil
		}
		return best
	}
	a, b := nearest(from), nearest(to)
	if a == nil || b == nil || rate <= 0 {
		return nil
	}
	secs := b.at.Sub(a.at).Seconds()
	if secs <= 0 {
		return nil
	}
	out := map[string]float64{}
	all := 0.0
	for api, n := range b.counts {
		if otherAPIs[api] {
			continue
		}
		if d := n - a.counts[api]; d > 0 {
			out[api] = round2(d / secs / rate)
			all += d
		}
	}
	out["all"] = round2(all / secs / rate)
	return out
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// topAPIs returns the APIs of the per-request counts of every scenario,
// most requests first (their sum over the scenarios), without "all".
func topAPIs(per []map[string]float64) []string {
	sum := map[string]float64{}
	for _, m := range per {
		for api, v := range m {
			if api != "all" {
				sum[api] += v
			}
		}
	}
	apis := make([]string, 0, len(sum))
	for api := range sum {
		apis = append(apis, api)
	}
	sort.Slice(apis, func(i, j int) bool {
		if sum[apis[i]] != sum[apis[j]] {
			return sum[apis[i]] > sum[apis[j]]
		}
		return apis[i] < apis[j]
	})
	return apis
}
