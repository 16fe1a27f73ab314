package follower_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/events"
	"profiles/platform/auth"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/routing"
	"profiles/platform/service"
	"profiles/platform/topology"
	"profiles/query-svc/internal/app"
	"profiles/query-svc/internal/follower"
	"profiles/query-svc/internal/ports"
	"profiles/query-svc/internal/view"
)

// leaseFollower stands in for kafkax.Group in the partitioned mode, with
// the work that Group does per call on a read's path: a lock and a clock
// read (the lease) for Route, ServesNow and Serving, a cancellable context and a
// stopped timer for Interrupt, and a counted release for Acquire. It
// serves every partition.
type leaseFollower struct {
	self kafkax.Member
	mu   sync.Mutex
	held time.Time // the lease runs until then
	n    int       // requests in flight
}

func (f *leaseFollower) serving() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Now().Before(f.held)
}

func (f *leaseFollower) Route(context.Context, int32) (kafkax.Member, bool, error) {
	if !f.serving() {
		return kafkax.Member{}, false, kafkax.ErrNoOwner
	}
	return f.self, true, nil
}
func (f *leaseFollower) ServesNow(int32) (int, bool) { return 0, f.serving() }
func (f *leaseFollower) Serving(int32) bool          { return f.serving() }
func (*leaseFollower) Run(context.Context) error     { return nil }
func (*leaseFollower) Ready() error                  { return nil }
func (*leaseFollower) Owned() []int32                { return nil }
func (*leaseFollower) Assignment() kafkax.Assignment { return kafkax.Assignment{} }
func (f *leaseFollower) Interrupt(ctx context.Context, _ int32, _ int) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	t := time.AfterFunc(20*time.Millisecond, func() {
		if !f.serving() {
			cancel()
		}
	})
	return ctx, func() { t.Stop(); cancel() }
}
func (f *leaseFollower) Acquire(int32, int) (func(), bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			f.n--
			f.mu.Unlock()
		})
	}, true
}

// memKeys is a pii.Keys of data keys made up front.
type memKeys map[string]*pii.DataKey

func (k memKeys) DataKey(uid string) (*pii.DataKey, error) {
	if dk, ok := k[uid]; ok {
		return dk, nil
	}
	return nil, pii.ErrNoKey
}
func (memKeys) Forget(string) {}

// getPath is query-svc's API handler, wired as service.NewApplication
// wires it (router, security, routing by the snapshot generations, the
// queries, the Pebble view), over a view of n profiles applied from
// sealed snapshot records, as the follower applies them.
type getPath struct {
	h    http.Handler
	uids []string
	// apply applies sealed snapshots of the profiles, as the follower does.
	apply func(tb testing.TB, profs ...events.Profile)
}

func newGetPath(tb testing.TB, n int) getPath {
	return newGetPathIn(tb, n, "view", vfs.NewMem(), 0)
}

// newGetPathIn is newGetPath with the view in dir of fs, with a block
// cache of cacheSize bytes (0: the view's default), and the email index
// applied too (as large as the profiles).
func newGetPathIn(tb testing.TB, n int, dir string, fs vfs.FS, cacheSize int64) getPath {
	tb.Helper()
	const partitions = 12
	log := slog.New(slog.DiscardHandler)
	kek, err := pii.NewKEK(make([]byte, pii.KeySize))
	if err != nil {
		tb.Fatal(err)
	}
	keys := memKeys{}
	codec := pii.NewCodec(kek, keys)
	store, err := view.Open(dir, fs, partitions, codec, view.Options{CacheSize: cacheSize})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	kcfg := topology.Config{SnapshotsTopic: "snapshots", EmailIndexTopic: "index", EventsTopic: "events", Partitions: partitions}
	applier := follower.Applier{Codec: codec, Store: store, SnapshotsTopic: kcfg.SnapshotsTopic, IndexTopic: kcfg.EmailIndexTopic, EventsTopic: kcfg.EventsTopic, Log: log}

	recs := sealedRecords(tb, n, kek, keys, codec, store.Partition, kcfg, fs != nil && cacheSize > 0)
	recs.apply(tb, applier)
	uids := recs.uids

	self := kafkax.Member{ID: "query-svc-0", URL: "http://127.0.0.1:1"}
	gens := follower.NewGenerations(nil, kcfg, applier, nil, log)
	follower.Serve(gens, &leaseFollower{self: self, held: time.Now().Add(time.Hour)}, 1)

	var health httpx.Health
	mux := service.NewRouter(log, &health)
	sec := &service.Security{Auth: &auth.Authenticator{Mode: auth.ModeOff, Log: log}, Limiter: httpx.NewRateLimiter(0, 0)}
	sec.Install(mux)
	ports.HTTP{
		Log:         log,
		Routing:     routing.Routing{Router: gens, Self: self, Wait: 15 * time.Second, Log: log, Sign: sec.Sign, Waits: ports.Waits},
		PartitionOf: store.Partition,
		EmailKey:    codec,
		Queries: ports.Queries{
			GetProfile:     app.GetProfileHandler{View: store, NotFound: view.ErrNotFound, MaxWait: 10 * time.Second},
			SearchProfiles: app.SearchProfilesHandler{View: store, NotFound: view.ErrNotFound, MaxWait: 10 * time.Second},
			GetHistory:     app.GetHistoryHandler{View: store, MaxWait: 10 * time.Second},
		},
	}.Register(mux)
	ports.Admin{Views: gens, Instance: self.ID}.Register(mux)
	// As service.Run serves it.
	h := httpx.SecurityHeaders(httpx.AnswerAlive(httpx.CORS{}.Wrap(mux)))
	apply := func(tb testing.TB, profs ...events.Profile) {
		tb.Helper()
		for _, prof := range profs {
			val, err := codec.EncodeSnapshot(prof)
			if err != nil {
				tb.Fatal(err)
			}
			p := store.Partition(prof.UID)
			next, _, _ := store.Offset(kcfg.SnapshotsTopic, p)
			rec := &sarama.ConsumerMessage{Topic: kcfg.SnapshotsTopic, Partition: p, Offset: next, Key: []byte(prof.UID), Value: val,
				Headers: []*sarama.RecordHeader{{Key: []byte(events.HeaderVersion), Value: []byte(strconv.FormatInt(prof.Version, 10))}}}
			if prof.Deleted {
				rec.Value = nil // a tombstone
			}
			if err := applier.Handle(context.Background(), kcfg.SnapshotsTopic, p, []*sarama.ConsumerMessage{rec}); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return getPath{h: h, uids: uids, apply: apply}
}

// records are the sealed snapshot and email index records of n profiles,
// per topic and partition, as the projector writes them.
type records struct {
	uids  []string
	parts map[string]map[int32][]*sarama.ConsumerMessage // topic -> partition -> records
}

// sealedRecords makes the records of n profiles, each sealed with a data
// key of its own (added to keys), and their email index records if
// withIndex.
func sealedRecords(tb testing.TB, n int, kek *pii.KEK, keys memKeys, codec *pii.Codec, partition func(string) int32, kcfg topology.Config, withIndex bool) records {
	tb.Helper()
	at := time.Date(2026, 12, 5, 21, 0, 0, 123456789, time.UTC)
	batches := map[int32][]*sarama.ConsumerMessage{}
	index := map[int32][]*sarama.ConsumerMessage{}
	uids := make([]string, n)
	for i := range n {
		uid := fmt.Sprintf("0193a5b2-7c4d-7e8f-9a0b-%012d", i)
		uids[i] = uid
		dk, _, err := kek.NewDataKey(uid)
		if err != nil {
			tb.Fatal(err)
		}
		keys[uid] = dk
		prof := events.Profile{UID: uid, Username: fmt.Sprintf("user%d", i), DisplayName: fmt.Sprintf("User Number %d", i),
			Email: fmt.Sprintf("user%d@example.com", i), Version: 3, CreatedAt: at, UpdatedAt: at.Add(time.Minute), Sealed: true}
		val, err := codec.EncodeSnapshot(prof)
		if err != nil {
			tb.Fatal(err)
		}
		version := []*sarama.RecordHeader{{Key: []byte(events.HeaderVersion), Value: []byte(strconv.FormatInt(prof.Version, 10))}}
		p := partition(uid)
		batches[p] = append(batches[p], &sarama.ConsumerMessage{Topic: kcfg.SnapshotsTopic, Partition: p, Offset: int64(len(batches[p])),
			Key: []byte(uid), Value: val, Headers: version})
		if withIndex {
			email := codec.EmailKey(prof.Email)
			q := partition(email)
			index[q] = append(index[q], &sarama.ConsumerMessage{Topic: kcfg.EmailIndexTopic, Partition: q, Offset: int64(len(index[q])),
				Key: []byte(topology.IndexKey(email, uid)), Value: val, Headers: version})
		}
	}
	return records{uids: uids, parts: map[string]map[int32][]*sarama.ConsumerMessage{kcfg.SnapshotsTopic: batches, kcfg.EmailIndexTopic: index}}
}

// apply hands the records to a, partition by partition, in batches of
// 500 (what a fetch of kafkax.Read or the group yields).
func (r records) apply(tb testing.TB, a follower.Applier) {
	tb.Helper()
	for topic, parts := range r.parts {
		for p, recs := range parts {
			for len(recs) > 0 {
				k := min(len(recs), 500)
				if err := a.Handle(context.Background(), topic, p, recs[:k]); err != nil {
					tb.Fatal(err)
				}
				recs = recs[k:]
			}
		}
	}
}

// BenchmarkColdStartApply builds a view on disk, from empty, of
// PROFILES_BENCH_PROFILES profiles (default 200,000) and their email
// index, through Applier.Handle, as a cold start applies what it fetches:
// decoding, decryption and the view's writes, without Kafka. It reports
// profiles/s and the CPU per profile.
func BenchmarkColdStartApply(b *testing.B) {
	profiles := 200000
	if v, err := strconv.Atoi(os.Getenv("PROFILES_BENCH_PROFILES")); err == nil && v > 0 {
		profiles = v
	}
	const partitions = 12
	kek, err := pii.NewKEK(make([]byte, pii.KeySize))
	if err != nil {
		b.Fatal(err)
	}
	keys := memKeys{}
	codec := pii.NewCodec(kek, keys)
	kcfg := topology.Config{SnapshotsTopic: "snapshots", EmailIndexTopic: "index", EventsTopic: "events", Partitions: partitions}
	partition := func(key string) int32 { return kafkax.Partition(key, partitions) }
	recs := sealedRecords(b, profiles, kek, keys, codec, partition, kcfg, true)
	b.ResetTimer()
	var cpu, wall time.Duration
	for i := range b.N {
		b.StopTimer()
		store, err := view.Open(filepath.Join(b.TempDir(), strconv.Itoa(i)), vfs.Default, partitions, codec, view.Options{})
		if err != nil {
			b.Fatal(err)
		}
		a := follower.Applier{Codec: codec, Store: store, SnapshotsTopic: kcfg.SnapshotsTopic, IndexTopic: kcfg.EmailIndexTopic, EventsTopic: kcfg.EventsTopic, Log: slog.New(slog.DiscardHandler)}
		b.StartTimer()
		t0, c0 := time.Now(), cpuTime()
		recs.apply(b, a)
		wall, cpu = wall+time.Since(t0), cpu+cpuTime()-c0
		b.StopTimer()
		store.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(profiles*b.N)/wall.Seconds(), "profiles/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(profiles*b.N), "cpu-µs/profile")
}

// cpuTime is the CPU time (user and system) the process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process's CPU time per op since start (cpu-ns/op):
// the server's work on all cores, the collector's included, which wall
// time on a busy machine does not tell.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// discardWriter is a reusable http.ResponseWriter that keeps the status
// and throws the body away, so that the benchmark counts the server's
// work and not a recorder's.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(s int) {
	if w.status == 0 {
		w.status = s
	}
}
func (w *discardWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += len(b)
	return len(b), nil
}
func (w *discardWriter) reset() {
	clear(w.h)
	w.status, w.n = 0, 0
}

// BenchmarkGetOwner is GET /api/profile/{uid} served by the owner of the
// uid's partition, through the whole handler chain of query-svc (security
// headers, router, logging and metrics, authentication off as under the
// benchmark of BENCH.md, routing with the lease check after the read, the
// query and the Pebble view), of profiles applied from sealed records.
func BenchmarkGetOwner(b *testing.B) {
	const profiles = 10000
	gp := newGetPath(b, profiles)
	reqs := make([]*http.Request, len(gp.uids))
	for i, uid := range gp.uids {
		reqs[i] = httptest.NewRequest(http.MethodGet, "/api/profile/"+uid, nil)
	}
	gp.serveLoop(b, reqs, 0)
}

// A GET through the whole chain reads its own write with minVersion (it
// waits for the view), answers HEAD with the headers only, and answers a
// deleted profile 404 at once, with and without minVersion.
func TestGetPathFollowsTheView(t *testing.T) {
	gp := newGetPath(t, 3)
	uid := gp.uids[1]
	at := time.Date(2026, 12, 5, 22, 0, 0, 0, time.UTC)
	get := func(method, target string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		gp.h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
		return rec
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		gp.apply(t, events.Profile{UID: uid, Username: "renamed", Email: "r@example.com", Version: 4, CreatedAt: at, UpdatedAt: at, Sealed: true})
	}()
	rec := get(http.MethodGet, "/api/profile/"+uid+"?minVersion=4")
	if rec.Code != http.StatusOK || rec.Header().Get("ETag") != `"4"` || !strings.Contains(rec.Body.String(), `"username":"renamed"`) {
		t.Fatalf("minVersion=4: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	if rec = get(http.MethodHead, "/api/profile/"+uid); rec.Code != http.StatusOK || rec.Header().Get("ETag") != `"4"` {
		t.Fatalf("HEAD: %d %v", rec.Code, rec.Header())
	}
	gp.apply(t, events.Profile{UID: uid, Version: 5, Deleted: true})
	for _, q := range []string{"", "?minVersion=4", "?minVersion=5", "?minVersion=6"} {
		rec = get(http.MethodGet, "/api/profile/"+uid+q)
		if rec.Code != http.StatusNotFound || rec.Header().Get("Content-Type") != "application/problem+json" || strings.Contains(rec.Body.String(), "renamed") {
			t.Fatalf("deleted%s: %d %v %s", q, rec.Code, rec.Header(), rec.Body)
		}
	}
}

// BenchmarkGetOwnerDisk is BenchmarkGetOwner over a view on disk of
// PROFILES_BENCH_PROFILES profiles (default 100,000) and their email
// index, with a block cache of a tenth of the data or so (8 MiB), as a
// view of a million profiles has with its 64 MiB: most reads miss the
// cache, as they do in BENCH.md's runs, and read blocks from the files.
func BenchmarkGetOwnerDisk(b *testing.B) {
	profiles := 100000
	if v, err := strconv.Atoi(os.Getenv("PROFILES_BENCH_PROFILES")); err == nil && v > 0 {
		profiles = v
	}
	gp := newGetPathIn(b, profiles, b.TempDir(), vfs.Default, 8<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	reqs := make([]*http.Request, 1<<14)
	for i := range reqs {
		reqs[i] = httptest.NewRequest(http.MethodGet, "/api/profile/"+gp.uids[rng.IntN(len(gp.uids))], nil)
	}
	w := &discardWriter{h: http.Header{}}
	for _, r := range reqs { // warm up, and let the view's compactions settle
		w.reset()
		gp.h.ServeHTTP(w, r)
	}
	time.Sleep(2 * time.Second)
	gp.serveLoop(b, reqs, 0)
}

// BenchmarkSearch is GET /api/search?email= served by the owner of the
// email's partition, through the same chain as BenchmarkGetOwner, over a
// view (in memory) of 10,000 profiles and their email index.
func BenchmarkSearch(b *testing.B) {
	gp := newGetPathIn(b, 10000, "view", vfs.NewMem(), view.DefaultCacheSize)
	reqs := make([]*http.Request, len(gp.uids))
	for i := range gp.uids {
		reqs[i] = httptest.NewRequest(http.MethodGet, fmt.Sprintf("/api/search?email=user%d@example.com", i), nil)
	}
	gp.serveLoop(b, reqs, 100)
}

// serveLoop serves reqs in turn through the chain for b's iterations,
// failing on an answer that is not 200 or has fewer than minBytes of body,
// and reports the allocations and the CPU per request.
func (gp *getPath) serveLoop(b *testing.B, reqs []*http.Request, minBytes int) {
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	i := 0
	start := cpuTime()
	for b.Loop() {
		w.reset()
		gp.h.ServeHTTP(w, reqs[i%len(reqs)])
		if w.status != http.StatusOK || w.n < minBytes {
			b.Fatalf("status %d, %d bytes", w.status, w.n)
		}
		i++
	}
	reportCPU(b, start)
}

// TestGetPathAnswers checks what BenchmarkGetOwner serves: the profile,
// opened, with its ETag and the routing headers.
func TestGetPathAnswers(t *testing.T) {
	gp := newGetPath(t, 20)
	rec := httptest.NewRecorder()
	gp.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/profile/"+gp.uids[7], nil))
	body, _ := io.ReadAll(rec.Body)
	want := `{"uid":"` + gp.uids[7] + `","username":"user7","displayName":"User Number 7","email":"user7@example.com","version":3,"createdAt":"2026-12-05T21:00:00.123456789Z","updatedAt":"2026-12-05T21:01:00.123456789Z"}` + "\n"
	if rec.Code != http.StatusOK || string(body) != want {
		t.Fatalf("got %d %s, want 200 %s", rec.Code, body, want)
	}
	for k, v := range map[string]string{"ETag": `"3"`, routing.HeaderServedBy: "query-svc-0", routing.HeaderHops: "0",
		"Content-Type": "application/json", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
		if got := rec.Header().Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	rec = httptest.NewRecorder()
	gp.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/profile/0193a5b2-7c4d-7e8f-9a0b-999999999999", nil))
	if rec.Code != http.StatusNotFound || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("unknown uid: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}

	// Search, over a view with the email index.
	gp = newGetPathIn(t, 20, "view", vfs.NewMem(), 1<<20)
	for email, body := range map[string]string{"User7@Example.com": "[" + strings.TrimSuffix(want, "\n") + "]\n", "nobody@example.com": "[]\n"} {
		rec = httptest.NewRecorder()
		gp.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/search?email="+email, nil))
		if rec.Code != http.StatusOK || rec.Body.String() != body || rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("search %s: %d %s %q, want %s", email, rec.Code, rec.Header().Get("Content-Type"), rec.Body, body)
		}
	}
}
