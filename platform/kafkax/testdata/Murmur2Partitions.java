// Murmur2Partitions prints the partition Apache Kafka's Java client chooses
// for each key, for partition_java_test.go. Run with the Kafka jars:
//
//   java -cp '<repo>/.cache/kafka/4.1.1/libs/*' Murmur2Partitions.java KEYS COUNTS
//
// KEYS is a UTF-8 file with one key a line ("\n"; keys hold no "\r" or "\n");
// COUNTS is a comma-separated list of partition counts, e.g. 1,3,12. For each
// key, in order, it prints one line: the key's partition for each count,
// separated by single spaces. The partition is
// Utils.toPositive(Utils.murmur2(key.getBytes(UTF_8))) % n, checked against
// BuiltInPartitioner.partitionForKey, which the producer itself calls.

import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import org.apache.kafka.common.utils.Utils;

public class Murmur2Partitions {
    public static void main(String[] args) throws IOException {
        if (args.length != 2) {
            System.err.println("usage: Murmur2Partitions KEYS_FILE N1,N2,...");
            System.exit(2);
        }
        String[] fields = args[1].split(",");
        int[] counts = new int[fields.length];
        for (int i = 0; i < fields.length; i++) {
            counts[i] = Integer.parseInt(fields[i].trim());
        }
        // newBufferedReader decodes strictly: malformed UTF-8 throws.
        try (BufferedReader in = Files.newBufferedReader(Paths.get(args[0]), StandardCharsets.UTF_8);
             BufferedWriter out = new BufferedWriter(
                     new OutputStreamWriter(System.out, StandardCharsets.US_ASCII), 1 << 16)) {
            StringBuilder line = new StringBuilder();
            for (String key; (key = in.readLine()) != null; ) {
                byte[] bytes = key.getBytes(StandardCharsets.UTF_8);
                int positive = Utils.toPositive(Utils.murmur2(bytes));
                line.setLength(0);
                for (int i = 0; i < counts.length; i++) {
                    int p = positive % counts[i];
                    int producer = BuiltInPartitioner.partitionForKey(bytes, counts[i]);
                    if (p != producer) {
                        throw new IllegalStateException("key " + key + ", n=" + counts[i] + ": Utils formula gives "
                                + p + " but BuiltInPartitioner.partitionForKey gives " + producer);
                    }
                    if (i > 0) {
                        line.append(' ');
                    }
                    line.append(p);
                }
                line.append('\n');
                out.append(line);
            }
        }
    }
}
