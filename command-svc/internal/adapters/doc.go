// Package adapters connects command-svc's use cases to Kafka (the
// transactional event log), to query-svc (read-your-writes) and to
// Prometheus (the admission of writes).
package adapters
