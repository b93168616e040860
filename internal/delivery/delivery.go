// Package delivery fulfils prizes through their SKU's outbound webhook, exactly once in
// effect (issue 17; DESIGN.md "Prize delivery").
//
// A claim of a SKU with a delivery webhook gets its deliveries row in the same statement
// as its claims row (a trigger, migration 0012), so a settled prize is never without its
// delivery and never has two. A Deliverer (run by the settler) then:
//
//  1. leases due rows (state delivering, next_at passed, no live lease) FOR UPDATE SKIP
//     LOCKED and commits the lease: two settlers never call for the same claim at once,
//     and a lease outlives the call's timeout;
//  2. POSTs the prize to the webhook with `Idempotency-Key: <claim_id>` (the same key on
//     every attempt) and a timeout per call;
//  3. on 2xx marks it delivered and emits a `delivered` event in the same transaction;
//     otherwise records the failure and schedules the next attempt with exponential
//     backoff and full jitter, or dead-letters it (state failed) after MaxAttempts.
//
// A settler killed in the middle of a call leaves a lease that runs out; the row is due
// again and the next attempt carries the same Idempotency-Key, which the fulfilment
// server uses to ignore a repeat (that is what "exactly once in effect" rests on, as in
// every payment-style webhook). An answer lost after the server acted is the same case.
package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashgate/flashgate/internal/events"
	"github.com/flashgate/flashgate/internal/loop"
)

// States of a delivery (the deliveries table's check).
const (
	Delivering = "delivering"
	Delivered  = "delivered"
	Failed     = "failed"
)

// Config tunes a Deliverer. Zero values get the defaults; bad values are errors naming
// the field.
type Config struct {
	Interval    time.Duration // pause between passes that found nothing due (default 500ms)
	Batch       int           // rows leased per pass (default 32)
	Concurrency int           // calls in flight per pass (default 8)
	CallTimeout time.Duration // one webhook call (default 5s)
	MaxAttempts int           // attempts before a delivery is dead-lettered (default 8)
	BackoffMin  time.Duration // first retry's delay ceiling (default 1s)
	BackoffMax  time.Duration // longest delay between attempts (default 5m)
	// Campaigns, when set, limits the deliverer to these campaigns (a test on a shared
	// database). Empty: every campaign.
	Campaigns []string
}

func (c *Config) validate() error {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Interval, 500*time.Millisecond)
	def(&c.CallTimeout, 5*time.Second)
	def(&c.BackoffMin, time.Second)
	def(&c.BackoffMax, 5*time.Minute)
	if c.Batch == 0 {
		c.Batch = 32
	}
	if c.Concurrency == 0 {
		c.Concurrency = 8
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 8
	}
	switch {
	case c.Interval < 10*time.Millisecond:
		return fmt.Errorf("delivery: Interval %s: want at least 10ms", c.Interval)
	case c.Batch < 1 || c.Batch > 1000:
		return fmt.Errorf("delivery: Batch %d: want 1..1000", c.Batch)
	case c.Concurrency < 1 || c.Concurrency > 256:
		return fmt.Errorf("delivery: Concurrency %d: want 1..256", c.Concurrency)
	case c.CallTimeout < 10*time.Millisecond || c.CallTimeout > time.Minute:
		return fmt.Errorf("delivery: CallTimeout %s: want 10ms..1m", c.CallTimeout)
	case c.MaxAttempts < 1 || c.MaxAttempts > 100:
		return fmt.Errorf("delivery: MaxAttempts %d: want 1..100", c.MaxAttempts)
	case c.BackoffMin < time.Millisecond || c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("delivery: BackoffMin %s, BackoffMax %s: want 1ms <= min <= max", c.BackoffMin, c.BackoffMax)
	}
	return nil
}

// lease is how long a leased row is ours: the call's timeout plus room for the
// bookkeeping after it. Another deliverer takes the row only after it ran out.
func (c *Config) lease() time.Duration { return 2*c.CallTimeout + 5*time.Second }

// Metrics of the deliverer.
type Metrics struct {
	attempts *prometheus.CounterVec // by outcome: delivered, retry, failed
	latency  prometheus.Histogram
}

// NewMetrics registers the deliverer's metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flashgate_delivery_attempts_total",
			Help: "Prize webhook calls by outcome: delivered (2xx), retry (failed, tried again later), failed (failed and dead-lettered after the most attempts)."},
			[]string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flashgate_delivery_call_seconds",
			Help: "Duration of one prize webhook call.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
	}
	for _, o := range []string{Delivered, "retry", Failed} {
		m.attempts.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.attempts, m.latency)
	}
	return m
}

// Deliverer calls prize webhooks for due deliveries.
type Deliverer struct {
	cfg  Config
	pg   *pgxpool.Pool
	http *http.Client
	log  *slog.Logger
	m    *Metrics
}

// New returns a Deliverer. client may be nil (a client with no timeout of its own: each
// call is bounded by CallTimeout).
func New(cfg Config, pg *pgxpool.Pool, client *http.Client, m *Metrics, log *slog.Logger) (*Deliverer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if client == nil {
		client = &http.Client{}
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Deliverer{cfg: cfg, pg: pg, http: client, log: log, m: m}, nil
}

// Run delivers until ctx ends.
func (d *Deliverer) Run(ctx context.Context) error {
	return loop.Every(ctx, d.cfg.Interval, func(ctx context.Context) (bool, error) {
		n, err := d.Pass(ctx)
		return n == d.cfg.Batch, err
	}, func(err error) { d.log.Warn("delivery pass failed; due rows stay due", "err", err) })
}

type due struct {
	claimID, campaign, sku, webhook string
	attempts                        int
	body                            []byte
}

// Pass leases up to Batch due deliveries, calls their webhooks and records each outcome.
// It returns how many it leased.
func (d *Deliverer) Pass(ctx context.Context) (int, error) {
	items, err := d.leaseDue(ctx)
	if err != nil || len(items) == 0 {
		return 0, err
	}
	sem := make(chan struct{}, d.cfg.Concurrency)
	errs := make(chan error, len(items))
	for _, it := range items {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			errs <- d.deliver(ctx, it)
		}()
	}
	var first error
	for range items {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return len(items), first
}

func (d *Deliverer) leaseDue(ctx context.Context) ([]due, error) {
	var camps []string
	if len(d.cfg.Campaigns) > 0 {
		camps = d.cfg.Campaigns
	}
	rows, err := d.pg.Query(ctx, `
WITH due AS (
  SELECT claim_id FROM deliveries
   WHERE state = 'delivering' AND next_at <= now() AND (lease_until IS NULL OR lease_until < now())
     AND ($3::text[] IS NULL OR campaign_id = ANY($3))
   ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED)
UPDATE deliveries d SET lease_until = now() + $2::bigint * interval '1 millisecond', attempts = d.attempts + 1
  FROM due, claims c
 WHERE d.claim_id = due.claim_id AND c.claim_id = d.claim_id
RETURNING d.claim_id, d.campaign_id, d.sku, d.webhook, d.attempts,
          c.user_id, c.value, c.claimed_at, c.request_id`, d.cfg.Batch, d.cfg.lease().Milliseconds(), camps)
	if err != nil {
		return nil, fmt.Errorf("delivery: lease: %w", err)
	}
	defer rows.Close()
	var out []due
	for rows.Next() {
		var it due
		var user, req string
		var value int64
		var at time.Time
		if err := rows.Scan(&it.claimID, &it.campaign, &it.sku, &it.webhook, &it.attempts, &user, &value, &at, &req); err != nil {
			return nil, fmt.Errorf("delivery: lease: %w", err)
		}
		it.body, _ = json.Marshal(Prize{ClaimID: it.claimID, CampaignID: it.campaign, SKU: it.sku,
			UserID: user, Value: value, WonAt: at.UTC(), Attempt: it.attempts})
		out = append(out, it)
	}
	return out, rows.Err()
}

// Prize is the body POSTed to a webhook.
type Prize struct {
	ClaimID    string    `json:"claim_id"`
	CampaignID string    `json:"campaign_id"`
	SKU        string    `json:"sku"`
	UserID     string    `json:"user_id"`
	Value      int64     `json:"value"`
	WonAt      time.Time `json:"won_at"`
	Attempt    int       `json:"attempt"`
}

// deliver makes one call and records its outcome.
func (d *Deliverer) deliver(ctx context.Context, it due) error {
	status, callErr := d.call(ctx, it)
	if ctx.Err() != nil {
		return nil // shutting down: the lease runs out and the row is due again
	}
	if callErr == nil {
		return d.markDelivered(ctx, it, status)
	}
	return d.markFailed(ctx, it, status, callErr)
}

func (d *Deliverer) call(ctx context.Context, it due) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, d.cfg.CallTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodPost, it.webhook, bytes.NewReader(it.body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", it.claimID)
	req.Header.Set("User-Agent", "flashgate-delivery/1")
	start := time.Now()
	resp, err := d.http.Do(req)
	d.m.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("webhook answered %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}

func (d *Deliverer) markDelivered(ctx context.Context, it due, status int) error {
	return pgx.BeginFunc(ctx, d.pg, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE deliveries SET state = 'delivered', delivered_at = now(),
		  last_status = $2, last_error = NULL, lease_until = NULL WHERE claim_id = $1 AND state = 'delivering'`, it.claimID, status)
		if err != nil {
			return fmt.Errorf("delivery: mark %s delivered: %w", it.claimID, err)
		}
		if tag.RowsAffected() == 0 {
			return nil // already recorded (a retry raced an admin action): nothing to tell
		}
		d.m.attempts.WithLabelValues(Delivered).Inc()
		return events.Emit(ctx, tx, events.Delivered, it.claimID,
			map[string]any{"claim_id": it.claimID, "campaign_id": it.campaign, "sku": it.sku, "attempts": it.attempts})
	})
}

func (d *Deliverer) markFailed(ctx context.Context, it due, status int, callErr error) error {
	msg := callErr.Error()
	if len(msg) > 500 {
		msg = msg[:500]
	}
	if it.attempts >= d.cfg.MaxAttempts {
		_, err := d.pg.Exec(ctx, `UPDATE deliveries SET state = 'failed', failed_at = now(), last_status = $2,
		  last_error = $3, lease_until = NULL WHERE claim_id = $1 AND state = 'delivering'`, it.claimID, nullStatus(status), msg)
		if err != nil {
			return fmt.Errorf("delivery: dead-letter %s: %w", it.claimID, err)
		}
		d.m.attempts.WithLabelValues(Failed).Inc()
		d.log.Warn("prize delivery dead-lettered", "claim", it.claimID, "attempts", it.attempts, "err", msg)
		return nil
	}
	delay := d.backoff(it.attempts)
	_, err := d.pg.Exec(ctx, `UPDATE deliveries SET next_at = now() + $2::bigint * interval '1 microsecond', last_status = $3,
	  last_error = $4, lease_until = NULL WHERE claim_id = $1 AND state = 'delivering'`, it.claimID, delay.Microseconds(), nullStatus(status), msg)
	if err != nil {
		return fmt.Errorf("delivery: reschedule %s: %w", it.claimID, err)
	}
	d.m.attempts.WithLabelValues("retry").Inc()
	return nil
}

func nullStatus(s int) any {
	if s == 0 {
		return nil
	}
	return s
}

// backoff is the delay before the attempt after the attempts-th: exponential from
// BackoffMin, capped at BackoffMax, with full jitter in its upper half (so retries of a
// burst of failures spread out but never come sooner than half the step).
func (d *Deliverer) backoff(attempts int) time.Duration {
	step := d.cfg.BackoffMin
	for i := 1; i < attempts && step < d.cfg.BackoffMax; i++ {
		step *= 2
	}
	if step > d.cfg.BackoffMax {
		step = d.cfg.BackoffMax
	}
	return step/2 + rand.N(step/2+1)
}

// State is a claim's delivery as GET /v1/claims/{id} and the admin API show it.
type State struct {
	State       string     `json:"state"`
	Attempts    int        `json:"attempts"`
	NextAt      *time.Time `json:"next_attempt_at,omitempty"`
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
	FailedAt    *time.Time `json:"failed_at,omitempty"`
	LastStatus  *int       `json:"last_status,omitempty"`
	LastError   *string    `json:"last_error,omitempty"`
}

// Get returns the claim's delivery; ok is false when the claim has none (its SKU has no
// webhook, or it is not settled yet).
func Get(ctx context.Context, pg *pgxpool.Pool, claimID string) (s State, ok bool, err error) {
	var next time.Time
	err = pg.QueryRow(ctx, `SELECT state, attempts, next_at, delivered_at, failed_at, last_status, last_error
	  FROM deliveries WHERE claim_id = $1`, claimID).Scan(&s.State, &s.Attempts, &next, &s.DeliveredAt, &s.FailedAt, &s.LastStatus, &s.LastError)
	if errors.Is(err, pgx.ErrNoRows) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, fmt.Errorf("delivery of %s: %w", claimID, err)
	}
	if s.State == Delivering {
		s.NextAt = &next
	}
	return s, true, nil
}

// ErrNotFailed is Retry's answer for a delivery that is not dead-lettered.
var ErrNotFailed = errors.New("delivery is not failed")

// ErrNoDelivery is Retry's answer for a claim without a delivery.
var ErrNoDelivery = errors.New("claim has no delivery")

// Retry makes a dead-lettered delivery due again with a fresh count of attempts (an
// operator's retry after the fulfilment side was fixed). Only a failed delivery can be
// retried: a delivered one is never called again.
func Retry(ctx context.Context, pg *pgxpool.Pool, claimID string) error {
	tag, err := pg.Exec(ctx, `UPDATE deliveries SET state = 'delivering', attempts = 0, next_at = now(),
	  failed_at = NULL, lease_until = NULL WHERE claim_id = $1 AND state = 'failed'`, claimID)
	if err != nil {
		return fmt.Errorf("retry delivery of %s: %w", claimID, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	if _, ok, err := Get(ctx, pg, claimID); err != nil {
		return err
	} else if !ok {
		return ErrNoDelivery
	}
	return ErrNotFailed
}
