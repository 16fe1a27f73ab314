// Package platform is the root of the code that every profiles binary
// shares and that is not domain logic: configuration (config), Kafka
// clients, topics and partitioning (kafkax), HTTP plumbing with RFC 9457
// problem details (httpx), logs and metrics (observe), and OpenTelemetry
// tracing (tracing).
package platform
