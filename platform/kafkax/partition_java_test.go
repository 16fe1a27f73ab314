package kafkax

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"profiles/platform/testenv"
)

// javaPartitionCounts are the partition counts every key is placed into.
var javaPartitionCounts = []int32{1, 3, 12, 50, 100, 1000}

// TestPartitionMatchesJavaClientOn10000Keys runs testdata/Murmur2Partitions.java
// on the Kafka jars of `deploy/kafka.sh fetch` and checks that Partition puts
// each of 10,000 keys in the partition the Java client does, for each count
// of javaPartitionCounts. Without Java or the jars it skips, loudly, unless
// PROFILES_REQUIRE_KAFKA=1 (as `make test` sets), when it fails.
func TestPartitionMatchesJavaClientOn10000Keys(t *testing.T) {
	java, libs := javaAndKafkaLibs(t)

	keys := partitionTestKeys(10000)
	if len(keys) != 10000 {
		t.Fatalf("generated %d keys, want 10000", len(keys))
	}
	var file bytes.Buffer
	for i, k := range keys {
		// One key a line: Java's readLine ends lines at \n, \r and \r\n, and
		// decodes strictly, so a key must be valid UTF-8 with neither.
		if strings.ContainsAny(k, "\r\n") || !utf8.ValidString(k) {
			t.Fatalf("key %d (%q) cannot be written one a line", i, k)
		}
		file.WriteString(k)
		file.WriteByte('\n')
	}
	keysFile := filepath.Join(t.TempDir(), "keys.txt")
	if err := os.WriteFile(keysFile, file.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	counts := make([]string, len(javaPartitionCounts))
	for i, n := range javaPartitionCounts {
		counts[i] = strconv.Itoa(int(n))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, java,
		"-cp", filepath.Join(libs, "*"), // the java launcher expands the wildcard
		filepath.Join("testdata", "Murmur2Partitions.java"), // go test runs in the package dir
		keysFile, strings.Join(counts, ","))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstderr:\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	t.Logf("java placed %d keys x %d partition counts in %v", len(keys), len(javaPartitionCounts), time.Since(start).Round(time.Millisecond))

	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	if stdout.Len() == 0 {
		lines = nil
	}
	if len(lines) != len(keys) {
		t.Fatalf("java printed %d lines, want one a key, %d\nstderr:\n%s", len(lines), len(keys), stderr.String())
	}
	const maxReported = 10
	mismatches := 0
	for i, line := range lines {
		fields := strings.Fields(line)
		if len(fields) != len(javaPartitionCounts) {
			t.Fatalf("java line %d (key %q) = %q, want %d partitions", i+1, keys[i], line, len(javaPartitionCounts))
		}
		for j, n := range javaPartitionCounts {
			want, err := strconv.ParseInt(fields[j], 10, 32)
			if err != nil {
				t.Fatalf("java line %d (key %q) = %q: %v", i+1, keys[i], line, err)
			}
			if got := Partition(keys[i], n); got != int32(want) {
				if mismatches++; mismatches <= maxReported {
					t.Errorf("Partition(%q, %d) = %d, Java client: %d", keys[i], n, got, want)
				}
			}
		}
	}
	if mismatches > 0 {
		t.Errorf("%d of %d (key, partition count) pairs differ from the Java client (first %d reported)",
			mismatches, len(keys)*len(javaPartitionCounts), min(mismatches, maxReported))
	}
}

// javaAndKafkaLibs returns the java binary (as deploy/kafka.sh finds it: $JAVA,
// $JAVA_HOME/bin/java, else java on PATH) and the Kafka libs directory
// <repo>/.cache/kafka/$KAFKA_VERSION/libs (default 4.1.1). It skips, or fails
// under PROFILES_REQUIRE_KAFKA=1, when either is missing.
func javaAndKafkaLibs(t *testing.T) (java, libs string) {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		testenv.Missing(t, format, args...)
	}

	version := os.Getenv("KAFKA_VERSION")
	if version == "" {
		version = "4.1.1"
	}
	root, err := repoRoot()
	if err != nil {
		missing("cannot compare with the Java client: %v", err)
	}
	libs = filepath.Join(root, ".cache", "kafka", version, "libs")
	jar := filepath.Join(libs, "kafka-clients-"+version+".jar")
	if _, err := os.Stat(jar); err != nil {
		missing("cannot compare with the Java client: no %s; run `deploy/kafka.sh fetch`", jar)
	}

	switch {
	case os.Getenv("JAVA") != "":
		java = os.Getenv("JAVA")
	case os.Getenv("JAVA_HOME") != "":
		java = filepath.Join(os.Getenv("JAVA_HOME"), "bin", "java")
		if _, err := os.Stat(java); err != nil {
			java = "java"
		}
	default:
		java = "java"
	}
	path, err := exec.LookPath(java)
	if err != nil {
		missing("cannot compare with the Java client: no Java (%v); Kafka needs Java 17 or newer", err)
	}
	return path, libs
}

// repoRoot returns the repository root, two levels above this package's
// directory (platform/kafkax), where go test runs.
func repoRoot() (string, error) {
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, "deploy", "kafka.sh")); err != nil {
		return "", fmt.Errorf("repository root not found: %w", err)
	}
	return dir, nil
}

// partitionTestKeys returns n deterministic keys: edge cases (the empty key,
// single characters, every murmur2 tail length, ~1KB keys, non-ASCII and
// emoji, numbers), e-mail addresses, random non-ASCII strings, and then
// UUIDs, most of them, from a seeded PCG source.
func partitionTestKeys(n int) []string {
	keys := []string{
		"", "a", "b", "z", "A", "0", "9", " ", "~", "-", "_", "@", ".", "\t", "\x00", "\x01", "\x7f",
		"é", "ß", "ñ", "€", "日", "😀",
		"aa", "aaa", "aaaa", "aaaaa", "aaaaaa", "aaaaaaa", "aaaaaaaa", "aaaaaaaaa",
		"hello", "Hello", "HELLO", " hello", "hello ", "   ",
		"0", "1", "-1", "42", "2147483647", "-2147483648", "9223372036854775807", "3.14159",
		"日本語", "中文键", "한국어", "Привет, мир", "Ελληνικά", "العربية", "עברית", "हिन्दी", "ภาษาไทย",
		"naïve café", "Straße", "Ångström", "\u00a0", "\u0085", "\u2028", "\u2029", "\ufeff", "\ufffd", "\U0010ffff",
		"😀😃😄", "👩‍💻", "👨‍👩‍👧‍👦", "🇺🇸", "🇯🇵🇩🇪", "🏳️‍🌈", "e\u0301", "key-😀-日本-é",
		"user@mail.com", "User.Name+tag@Example.COM", "ünïcödé@exämple.com",
		"74292b21-0fbb-4f1d-a18f-fa80f947fa5d", "00000000-0000-0000-0000-000000000000",
		"ffffffff-ffff-ffff-ffff-ffffffffffff", "74292B21-0FBB-4F1D-A18F-FA80F947FA5D",
		strings.Repeat("x", 1023), strings.Repeat("x", 1024), strings.Repeat("x", 1025),
		strings.Repeat("0123456789abcdef", 64), strings.Repeat("é", 512), strings.Repeat("日本", 171),
		strings.Repeat("😀", 256), strings.Repeat("74292b21-0fbb-4f1d-a18f-fa80f947fa5d", 28),
	}
	for i := 0; i < 500 && len(keys) < n; i++ {
		keys = append(keys, fmt.Sprintf("user%d@mail.com", i))
	}

	rng := rand.New(rand.NewPCG(0x6b61666b61, 0x6d75726d757232))
	// Runes of 1 to 4 UTF-8 bytes, none of them \r or \n or a surrogate.
	ranges := [][2]rune{{0x20, 0x7e}, {0xa0, 0x7ff}, {0x800, 0xd7ff}, {0xe000, 0xfffd}, {0x10000, 0x10ffff}, {0x1f300, 0x1faff}}
	for i := 0; i < 500 && len(keys) < n; i++ {
		var b strings.Builder
		for j := rng.IntN(40); j > 0; j-- {
			r := ranges[rng.IntN(len(ranges))]
			b.WriteRune(r[0] + rune(rng.Int32N(r[1]-r[0]+1)))
		}
		keys = append(keys, b.String())
	}

	for len(keys) < n {
		hi, lo := rng.Uint64(), rng.Uint64()
		hi = hi&^0xf000 | 0x4000   // version 4
		lo = lo&^(3<<62) | 0x2<<62 // variant 10
		keys = append(keys, fmt.Sprintf("%08x-%04x-%04x-%04x-%012x",
			hi>>32, hi>>16&0xffff, hi&0xffff, lo>>48, lo&0xffffffffffff))
	}
	return keys[:n]
}
