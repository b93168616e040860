// Package decisionlog owns the flash.decisions topic: the gateway's asynchronous,
// best-effort producer of every claim decision (it never blocks or fails a claim, and
// counts what it drops), and the reader riskctl's top and replay use to read the
// decisions made since a point in time.
package decisionlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/risk"
)

// Config configures the producer. Zero values take the defaults in New.
type Config struct {
	// Brokers are the seed brokers (required).
	Brokers []string
	// Topic is where decisions go (default flash.decisions).
	Topic string
	// Linger lets decisions share a produce request (default 20ms: nobody waits on them).
	Linger time.Duration
	// MaxBuffered bounds the decisions waiting for the broker (default 200000). Beyond
	// it a decision is dropped and counted, never waited for.
	MaxBuffered int
	// DeliveryTimeout bounds how long a decision may wait for the broker before it is
	// dropped and counted (default 10s), so a broker outage cannot pin the buffer.
	DeliveryTimeout time.Duration
}

func (c *Config) validate() error {
	if c.Topic == "" {
		c.Topic = kafkaopt.DecisionsTopic
	}
	if c.Linger == 0 {
		c.Linger = 20 * time.Millisecond
	}
	if c.MaxBuffered == 0 {
		c.MaxBuffered = 200_000
	}
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = 10 * time.Second
	}
	switch {
	case len(c.Brokers) == 0:
		return errors.New("decisionlog config: Brokers: at least one broker is required")
	case c.Linger < 0 || c.Linger > time.Second:
		return fmt.Errorf("decisionlog config: Linger=%s, want 0..1s", c.Linger)
	case c.MaxBuffered < 1:
		return fmt.Errorf("decisionlog config: MaxBuffered=%d, want at least 1", c.MaxBuffered)
	case c.DeliveryTimeout < time.Second:
		// franz-go's floor for a produce request timeout.
		return fmt.Errorf("decisionlog config: DeliveryTimeout=%s, want at least 1s", c.DeliveryTimeout)
	}
	return nil
}

// Metrics are the decision log's instruments, resolved when created.
type Metrics struct {
	produced prometheus.Counter
	dropped  prometheus.Counter
}

// NewMetrics registers the decision log's metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		produced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashgate_gateway_decisions_produced_total",
			Help: "Claim decisions the broker acknowledged on flash.decisions.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashgate_gateway_decisions_dropped_total",
			Help: "Claim decisions not recorded on flash.decisions (buffer full, broker unavailable or too slow); the claims themselves were unaffected.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.produced, m.dropped)
	}
	return m
}

// Log produces decisions. Safe for concurrent use.
type Log struct {
	cfg     Config
	cl      *kgo.Client
	metrics *Metrics
	log     *slog.Logger
}

// New creates the producer with its own client, separate from the claims producer: a
// slow or failing decisions topic must never hold up claims' produce requests, and
// decisions need neither acks from all replicas nor idempotence.
func New(cfg Config, m *Metrics, log *slog.Logger) (*Log, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	if log == nil {
		log = slog.Default()
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.DefaultProduceTopic(cfg.Topic),
		kgo.RequiredAcks(kgo.LeaderAck()),
		kgo.DisableIdempotentWrite(),
		kgo.ProducerLinger(cfg.Linger),
		kgo.MaxBufferedRecords(cfg.MaxBuffered),
		kgo.RecordDeliveryTimeout(cfg.DeliveryTimeout),
		kgo.ProduceRequestTimeout(cfg.DeliveryTimeout),
		kgo.RecordRetries(3),
		kgo.DialTimeout(2*time.Second),
		kgo.ProducerBatchCompression(kgo.Lz4Compression(), kgo.NoCompression()),
	)
	if err != nil {
		return nil, fmt.Errorf("decisionlog: client: %w", err)
	}
	return &Log{cfg: cfg, cl: cl, metrics: m, log: log}, nil
}

var recPool = sync.Pool{New: func() any { return &kgo.Record{Value: make([]byte, 0, 512)} }}

// Record encodes d into an owned, pooled buffer and hands it to the producer without
// waiting. It never blocks: if the buffer is full or the broker fails the decision, the
// drop is counted in flashgate_gateway_decisions_dropped_total.
func (l *Log) Record(d *risk.Decision) {
	r := recPool.Get().(*kgo.Record)
	r.Topic = l.cfg.Topic
	// The campaign as key keeps one campaign's decisions in order on one partition.
	r.Key = append(r.Key[:0], d.CampaignID...)
	r.Value = d.AppendJSON(r.Value[:0])
	r.Timestamp = time.Time{}
	l.cl.TryProduce(context.Background(), r, l.done)
}

// done is the promise of every record: it must not block (franz-go calls promises
// serially); it only counts and recycles the record.
func (l *Log) done(r *kgo.Record, err error) {
	if err != nil {
		l.metrics.dropped.Inc()
	} else {
		l.metrics.produced.Inc()
	}
	r.Partition, r.Offset, r.Headers = 0, 0, nil
	recPool.Put(r)
}

// Close flushes what is buffered for at most ctx's time, then closes the client; what
// is still unsent is dropped and counted.
func (l *Log) Close(ctx context.Context) {
	if err := l.cl.Flush(ctx); err != nil {
		l.log.Warn("decision log: not flushed before close; unsent decisions are dropped", "err", err)
	}
	l.cl.Close()
}
