// Package events owns flash.events: the life of a voucher or a points account after its
// claim (redeemed, rolled back, expired, transferred, delivered; points granted, spent,
// expired, given back) told to the systems around flashgate (reminders, CRM, finance).
//
// It is a transactional outbox. Whoever changes that life writes the event with Emit in
// the same Postgres transaction as the change, so an event exists exactly when its change
// committed; the settler's Publisher sends unpublished rows to flash.events in id order
// and marks them. Delivery is at least once (a crash between the produce and the mark
// sends a row again): the envelope's id is the event's identity and consumers drop
// repeats. One publisher at a time (a Postgres advisory lock) keeps the per-key order
// of the rows on the topic.
package events

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/loop"
)

// Version is the envelope's schema version (the "v" field). A consumer refuses a version
// it does not know; fields are only ever added within a version.
const Version = 1

// The event types of CONTRACT.md "Issuance and the voucher's life" and the points
// accounts. A type is a lower-case word (the events table checks the form).
const (
	Redeemed        = "redeemed"
	RolledBack      = "rolled_back"
	Expired         = "expired"
	Transferred     = "transferred"
	Delivered       = "delivered"
	PointsGranted   = "points_granted"
	PointsSpent     = "points_spent"
	PointsExpired   = "points_expired"
	PointsGivenBack = "points_given_back"
	PointsFrozen    = "points_frozen"
	PointsUnfrozen  = "points_unfrozen"
)

// Envelope is one record's value on flash.events.
type Envelope struct {
	V    int             `json:"v"`
	ID   int64           `json:"id"`
	Type string          `json:"type"`
	Key  string          `json:"key"`
	At   time.Time       `json:"at"`
	Data json.RawMessage `json:"data"`
}

// Execer is what Emit writes through: a pgx.Tx (or a pool, for a change that is one
// statement of its own - rarely right: the event must commit with its change).
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

var typeForm = regexp.MustCompile(`^[a-z][a-z_.]{0,63}$`)

// Emit records one event in tx. key is the claim id or user id the event is about (the
// Kafka key: one key's events keep their order); data is marshalled to the envelope's
// "data" object.
func Emit(ctx context.Context, tx Execer, typ, key string, data any) error {
	if !typeForm.MatchString(typ) {
		return fmt.Errorf("events: type %q: want a lower-case word", typ)
	}
	if key == "" || len(key) > 256 {
		return fmt.Errorf("events: key of %d bytes: want 1..256", len(key))
	}
	body, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("events: %s data: %w", typ, err)
	}
	if len(body) == 0 || body[0] != '{' {
		return fmt.Errorf("events: %s data must be a JSON object, got %.20s", typ, body)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO events (type, key, body) VALUES ($1, $2, $3)`, typ, key, body); err != nil {
		return fmt.Errorf("events: insert %s: %w", typ, err)
	}
	return nil
}

// Config tunes a Publisher. Zero values get the defaults.
type Config struct {
	Interval time.Duration // pause between passes that found nothing (default 500ms)
	Batch    int           // rows per produce (default 500, at most 10,000)
	Topic    string        // default flash.events
	Timeout  time.Duration // bounds one pass's produce (default 10s)
}

func (c *Config) validate() error {
	if c.Interval == 0 {
		c.Interval = 500 * time.Millisecond
	}
	if c.Batch == 0 {
		c.Batch = 500
	}
	if c.Topic == "" {
		c.Topic = kafkaopt.EventsTopic
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	switch {
	case c.Interval < 10*time.Millisecond:
		return fmt.Errorf("events: Interval %s: want at least 10ms", c.Interval)
	case c.Batch < 1 || c.Batch > 10_000:
		return fmt.Errorf("events: Batch %d: want 1..10000", c.Batch)
	case c.Timeout < 100*time.Millisecond:
		return fmt.Errorf("events: Timeout %s: want at least 100ms", c.Timeout)
	}
	return nil
}

// Publisher sends the events table's unpublished rows to flash.events.
type Publisher struct {
	cfg       Config
	pg        *pgxpool.Pool
	kcl       *kgo.Client
	log       *slog.Logger
	published prometheus.Counter
	failures  prometheus.Counter
}

// NewPublisher returns a Publisher producing through kcl (a durable producer:
// kafkaopt.Producer). reg may be nil.
func NewPublisher(cfg Config, pg *pgxpool.Pool, kcl *kgo.Client, log *slog.Logger, reg prometheus.Registerer) (*Publisher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &Publisher{cfg: cfg, pg: pg, kcl: kcl, log: log,
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_events_published_total",
			Help: "Events sent to flash.events (at least once: a resend after a crash counts again)."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_events_publish_failures_total",
			Help: "Publisher passes that failed (Postgres or Kafka); the rows stay and are sent by a later pass."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{p.published, p.failures} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("events: metrics: %w", err)
			}
		}
	}
	return p, nil
}

// Run publishes until ctx ends: passes back to back while rows wait, Interval apart
// otherwise. A failed pass is logged and counted; its rows are sent by a later pass.
func (p *Publisher) Run(ctx context.Context) error {
	return loop.Every(ctx, p.cfg.Interval, func(ctx context.Context) (bool, error) {
		n, err := p.Publish(ctx)
		return n == p.cfg.Batch, err
	}, func(err error) {
		p.failures.Inc()
		p.log.Warn("events: publish failed; the rows stay for the next pass", "err", err)
	})
}

// publishLock serialises publishers across settlers (per-key order on the topic).
const publishLock = 0x666c6576656e7473 // "flevents"

// Publish sends one batch of unpublished rows, oldest first, and marks them; it returns
// how many it sent. Another settler's pass in progress makes it return (0, nil).
func (p *Publisher) Publish(ctx context.Context) (int, error) {
	tx, err := p.pg.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("events: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	var mine bool
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, int64(publishLock)).Scan(&mine); err != nil {
		return 0, fmt.Errorf("events: lock: %w", err)
	}
	if !mine {
		return 0, nil
	}
	rows, err := tx.Query(ctx, `SELECT id, type, key, body, at FROM events
	  WHERE published_at IS NULL ORDER BY id LIMIT $1`, p.cfg.Batch)
	if err != nil {
		return 0, fmt.Errorf("events: read: %w", err)
	}
	var recs []*kgo.Record
	var ids []int64
	for rows.Next() {
		var e Envelope
		if err := rows.Scan(&e.ID, &e.Type, &e.Key, &e.Data, &e.At); err != nil {
			rows.Close()
			return 0, fmt.Errorf("events: read: %w", err)
		}
		e.V = Version
		v, err := json.Marshal(&e)
		if err != nil {
			rows.Close()
			return 0, fmt.Errorf("events: event %d: %w", e.ID, err)
		}
		recs = append(recs, &kgo.Record{Topic: p.cfg.Topic, Key: []byte(e.Key), Value: v,
			Headers: []kgo.RecordHeader{{Key: "event-id", Value: []byte(strconv.FormatInt(e.ID, 10))}}})
		ids = append(ids, e.ID)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("events: read: %w", err)
	}
	if len(recs) == 0 {
		return 0, nil
	}
	pctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	err = p.kcl.ProduceSync(pctx, recs...).FirstErr()
	cancel()
	if err != nil {
		return 0, fmt.Errorf("events: produce %d: %w", len(recs), err)
	}
	if _, err := tx.Exec(ctx, `UPDATE events SET published_at = now() WHERE id = ANY($1)`, ids); err != nil {
		return 0, fmt.Errorf("events: mark: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("events: commit: %w", err)
	}
	p.published.Add(float64(len(recs)))
	return len(recs), nil
}
