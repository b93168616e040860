// Command devbroker is the dev stack's Kafka-protocol broker: franz-go's kfake with its
// on-disk persistence (DataDir), so the dev stack and the tests can kill -9 it and
// restart it without losing what it acknowledged.
//
// It exists because no Kafka broker can be installed on the machines this project is
// built on. Nothing in the gateway or the settler knows about it: they speak the Kafka
// protocol to FLASH_KAFKA_BROKERS, which in production is a real Kafka or Redpanda
// cluster.
//
// Durability: kfake writes every produced batch to its segment files before it answers
// the produce, so an acknowledged record survives a kill -9 of this process (it is in
// the OS page cache). It does not fsync each batch unless -sync is given, like Kafka's
// default: a power loss of the whole machine can lose the last records, which the
// claim outbox in Redis (AOF) covers.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flashgate/flashgate/internal/kafkaopt"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "devbroker:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		addr       = flag.String("addr", "127.0.0.1:19092", "listen address; kfake listens on loopback only, so only the port is used")
		dataDir    = flag.String("data-dir", "", "persistence directory (required): topics, offsets and groups survive restarts")
		partitions = flag.Int("partitions", 8, "partitions of each flashgate topic when first created")
		syncWrites = flag.Bool("sync", false, "fsync every produced batch (slower; survives a power loss, not only a kill -9)")
	)
	flag.Parse()
	if *dataDir == "" {
		return fmt.Errorf("-data-dir: required")
	}
	host, portStr, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %v", *addr, err)
	}
	if host != "127.0.0.1" && host != "localhost" {
		return fmt.Errorf("-addr %q: kfake listens on 127.0.0.1 only", *addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return fmt.Errorf("-addr %q: bad port", *addr)
	}
	if *partitions < 1 || *partitions > 256 {
		return fmt.Errorf("-partitions %d: want 1..256", *partitions)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.DataDir(*dataDir),
		kfake.SeedTopics(int32(*partitions), kafkaopt.ClaimsTopic, kafkaopt.DecisionsTopic, kafkaopt.ClaimsRejectedTopic, kafkaopt.EventsTopic),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(*partitions),
	}
	if *syncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start broker: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log.Info("devbroker listening", "addrs", strings.Join(c.ListenAddrs(), ","), "data_dir", *dataDir)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	log.Info("devbroker stopping")
	c.Close()
	return nil
}
