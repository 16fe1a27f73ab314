// Package adapters connects command-svc's use cases to Kafka (the
// transactional event log) and to query-svc (read-your-writes).
package adapters
