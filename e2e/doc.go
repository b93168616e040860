// Package e2e holds the end-to-end tests of the claim spine: the real gateway and
// settler binaries, run as processes against the real dev stack (Redis, Postgres and a
// Kafka-protocol broker), driven over HTTP the way a client drives them. The guarantees
// of CONTRACT.md are asserted on what ends up in Redis and Postgres.
package e2e
