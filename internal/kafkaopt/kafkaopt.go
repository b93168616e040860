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
