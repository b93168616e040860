// Package kafkaopt owns flashgate's topic names and the franz-go client options that the
// gateway (producer) and the settler (consumer, relay producer) build their clients from,
// so the durability settings are decided in one place.
package kafkaopt

import (
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Topics of CONTRACT.md.
const (
	ClaimsTopic    = "flash.claims"
	DecisionsTopic = "flash.decisions"
	// ClaimsRejectedTopic holds the flash.claims records the settler set aside instead
	// of settling: records that do not decode, that name no campaign, SKU or value of
	// Postgres' catalog, whose ids break the contract's limits, or that Postgres refused
	// for good. Each keeps its original key and bytes; headers say why and where from
	// (RejectHeader*).
	ClaimsRejectedTopic = "flash.claims.rejected"
	// EventsTopic carries the life of vouchers and points accounts after the claim
	// (redeemed, rolled_back, expired, transferred, delivered, points_*): JSON with a
	// schema version, keyed by the claim or user it is about (internal/events).
	EventsTopic = "flash.events"
)

// ClaimKey is the key of a flash.claims record: its claim id. One hot campaign's claims
// spread over every partition, so the settlers of one consumer group share it (a key
// of the campaign id sent a whole flash sale through one partition and one settler).
// A claim has one record, produced by the gateway and, if the gateway died before its
// ack, republished by the outbox relay under the same key: both copies land in one
// partition, in order, and confirm.lua settles the first and skips the second.
func ClaimKey(claimID string) []byte { return []byte(claimID) }

// Headers of a record on ClaimsRejectedTopic.
const (
	RejectHeaderReason    = "reject-reason"    // a word: undecodable, bad_id, unknown_campaign, ...
	RejectHeaderError     = "reject-error"     // the detail, "field: what is wrong"
	RejectHeaderTopic     = "source-topic"     // the topic the record was read from
	RejectHeaderPartition = "source-partition" // its partition (decimal)
	RejectHeaderOffset    = "source-offset"    // its offset (decimal)
	RejectHeaderTime      = "rejected-at-ms"   // Unix ms when the settler set it aside
)

// SettlerGroup is the settler's consumer group.
const SettlerGroup = "flashgate-settler"

// Producer returns options for a durable producer: idempotent (franz-go's default),
// acks from all in-sync replicas, a short linger so concurrent claims share a produce
// request, and a delivery timeout that bounds how long a client waits for its answer.
func Producer(brokers []string, linger, deliveryTimeout time.Duration) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(linger),
		kgo.RecordDeliveryTimeout(deliveryTimeout),
		kgo.ProduceRequestTimeout(deliveryTimeout),
		kgo.DefaultProduceTopic(ClaimsTopic),
		kgo.DialTimeout(2 * time.Second),
		kgo.RetryTimeout(deliveryTimeout),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	}
}

// Consumer returns options for the settler's group consumer: offsets are committed by
// the settler itself after Postgres commits, never automatically.
func Consumer(brokers []string, group string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(ClaimsTopic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100 * time.Millisecond),
		kgo.DialTimeout(2 * time.Second),
	}
}
