// Package relay owns the outbox relay. For the entries still in a campaign's Redis
// outbox after a bound (MinAge) it settles what their gateway left undone:
//   - a claim still "A" (accepted, never marked durable: its gateway died between the
//     claim script and the broker's ack, or its script reply or its void was lost) is
//     voided (void.lua): its client never heard 200, so it must never become a row, and
//     what it took goes back on sale. It is never published;
//   - a claim "D" or "S" (acknowledged by the broker, answered 200) that is not a row yet
//     is republished, at most once per RepublishEvery, so a settler that lost it (or a
//     topic that lost it) still writes it;
//   - an entry whose claim is a row, or was voided, is trimmed.
//
// Publishing twice is harmless: the settler confirms each claim against its idempotency
// record (confirm.lua) and inserts with ON CONFLICT DO NOTHING. Voiding races atomically
// with the gateway's durable.lua: exactly one of them wins (DESIGN.md, "What is durable
// when").
//
// Several settlers each run a relay. One campaign is worked by one relay at a time (a
// per-campaign lease in Redis), and one pass publishes at most MaxPublishPerPass claims
// of a campaign, so a long Postgres outage costs the broker one relay's bounded traffic,
// not one per settler.
//
// The outbox is only ever trimmed of claims that are rows in Postgres (or that were
// voided, whose entries void.lua removes itself), so it holds at most the campaign's
// accepted-but-unsettled claims: see Bound for how large that gets at peak.
package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/loop"
	"github.com/flashgate/flashgate/internal/rkeys"
)

// Config tunes a Relay. Zero values get the defaults; invalid values are errors naming
// the field.
type Config struct {
	// MinAge is the bound: entries younger than this are left to their gateway and the
	// settler. It should exceed the gateway's produce delivery timeout plus the
	// settler's usual lag, or the relay republishes claims that are merely on their way.
	MinAge time.Duration
	// Interval is the period of Run.
	Interval time.Duration
	// Page is how many outbox entries are read per round trip.
	Page int
	// MaxPerPass bounds the entries examined per campaign per pass, so one campaign with
	// a huge backlog (Postgres down for an hour) cannot starve the others.
	MaxPerPass int
	// RepublishEvery is the least time between two publications of the same claim by
	// this relay, while the settler has not written it yet.
	RepublishEvery time.Duration
	// ProduceTimeout bounds one batch of publications.
	ProduceTimeout time.Duration
	// Topic is where claims are published: the settler's topic (default
	// kafkaopt.ClaimsTopic).
	Topic string
	// MaxPublishPerPass bounds the claims one pass publishes per campaign (the rest wait
	// for the next pass): with Postgres down for long, the relay's traffic stays bounded
	// by MaxPublishPerPass per campaign per RepublishEvery.
	MaxPublishPerPass int
	// LeaseTTL is how long a relay holds a campaign after its last pass: other relays
	// leave the campaign alone meanwhile. Default 3 × Interval + ProduceTimeout (a pass
	// that publishes can take ProduceTimeout).
	LeaseTTL time.Duration
}

func (c *Config) validate() error {
	def := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.MinAge, 15*time.Second)
	def(&c.Interval, time.Second)
	def(&c.RepublishEvery, c.MinAge)
	def(&c.ProduceTimeout, 15*time.Second)
	if c.Page == 0 {
		c.Page = 500
	}
	if c.MaxPerPass == 0 {
		c.MaxPerPass = 20_000
	}
	if c.Topic == "" {
		c.Topic = kafkaopt.ClaimsTopic
	}
	if c.MaxPublishPerPass == 0 {
		c.MaxPublishPerPass = 5000
	}
	def(&c.LeaseTTL, 3*c.Interval+c.ProduceTimeout)
	switch {
	case c.MinAge < 100*time.Millisecond:
		return fmt.Errorf("relay config: MinAge=%s, want at least 100ms", c.MinAge)
	case c.Interval < 10*time.Millisecond:
		return fmt.Errorf("relay config: Interval=%s, want at least 10ms", c.Interval)
	case c.Page < 1 || c.Page > 10_000:
		return fmt.Errorf("relay config: Page=%d, want 1..10000", c.Page)
	case c.MaxPerPass < c.Page:
		return fmt.Errorf("relay config: MaxPerPass=%d must be at least Page=%d", c.MaxPerPass, c.Page)
	case c.RepublishEvery < 0:
		return fmt.Errorf("relay config: RepublishEvery=%s must not be negative", c.RepublishEvery)
	case c.ProduceTimeout < 100*time.Millisecond:
		return fmt.Errorf("relay config: ProduceTimeout=%s, want at least 100ms", c.ProduceTimeout)
	case c.MaxPublishPerPass < 1:
		return fmt.Errorf("relay config: MaxPublishPerPass=%d, want at least 1", c.MaxPublishPerPass)
	case c.LeaseTTL < c.Interval:
		return fmt.Errorf("relay config: LeaseTTL=%s must be at least Interval=%s", c.LeaseTTL, c.Interval)
	}
	return nil
}

// Relay republishes stale outbox entries. Safe for concurrent use.
type Relay struct {
	cfg Config
	rdb *redis.Client
	pg  *pgxpool.Pool
	kcl *kgo.Client
	log *slog.Logger
	m   *metrics

	// token names this relay in the campaigns' leases.
	token string

	mu   sync.Mutex
	sent map[string]time.Time // claim id → last publication by this relay
}

// New builds a Relay. kcl must be a producer (kafkaopt.Producer): acks from all
// in-sync replicas, idempotent.
func New(cfg Config, rdb *redis.Client, pg *pgxpool.Pool, kcl *kgo.Client, log *slog.Logger, reg prometheus.Registerer) (*Relay, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if rdb == nil || pg == nil || kcl == nil {
		return nil, errors.New("relay: a Redis client, a Postgres pool and a Kafka client are required")
	}
	if log == nil {
		log = slog.Default()
	}
	var tok [12]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, fmt.Errorf("relay: lease token: %w", err)
	}
	return &Relay{cfg: cfg, rdb: rdb, pg: pg, kcl: kcl, log: log, m: newMetrics(reg), sent: map[string]time.Time{},
		token: hex.EncodeToString(tok[:])}, nil
}

// Stats is what a pass did.
type Stats struct {
	Campaigns   int `json:"campaigns"`
	Scanned     int `json:"scanned"`     // entries older than MinAge examined
	Republished int `json:"republished"` // published to flash.claims
	Trimmed     int `json:"trimmed"`     // removed: already rows in Postgres
	Dropped     int `json:"dropped"`     // removed: voided claims' leftovers
	Waiting     int `json:"waiting"`     // not yet rows, published recently: left alone
	Voided      int `json:"voided"`      // still A past MinAge: voided, never published
	Leased      int `json:"leased"`      // campaigns skipped: another relay holds them
}

func (s *Stats) add(o Stats) {
	s.Campaigns += o.Campaigns
	s.Scanned += o.Scanned
	s.Republished += o.Republished
	s.Trimmed += o.Trimmed
	s.Dropped += o.Dropped
	s.Waiting += o.Waiting
	s.Voided += o.Voided
	s.Leased += o.Leased
}

// Run relays every Interval until ctx ends. Errors are logged and counted (loop.Every); it
// returns nil when ctx ends.
func (r *Relay) Run(ctx context.Context) error {
	return loop.Every(ctx, r.cfg.Interval, func(ctx context.Context) (bool, error) {
		st, err := r.Once(ctx)
		if err == nil && (st.Republished > 0 || st.Voided > 0) {
			r.log.Info("outbox relay republished or voided stale claims", "republished", st.Republished,
				"voided", st.Voided, "trimmed", st.Trimmed)
		}
		return false, err
	}, func(err error) { r.log.Warn("outbox relay pass failed", "err", err) })
}

// Once runs one pass over every warmed campaign (rkeys.Campaigns).
func (r *Relay) Once(ctx context.Context) (Stats, error) {
	camps, err := r.rdb.SMembers(ctx, rkeys.Campaigns).Result()
	if err != nil {
		r.m.errors.Inc()
		return Stats{}, fmt.Errorf("relay: list campaigns: %w", err)
	}
	var total Stats
	var errs []error
	for _, c := range camps {
		st, err := r.Campaign(ctx, c)
		total.add(st)
		if err != nil {
			errs = append(errs, err)
		}
	}
	r.forget()
	return total, errors.Join(errs...)
}

// entry is one outbox entry as a claim record.
type entry struct {
	id  string
	rec claim.Record
}

func parseEntry(campaign string, m redis.XMessage) entry {
	return entry{id: m.ID, rec: claim.FromOutbox(campaign, m.ID, m.Values)}
}

// Campaign runs one pass over one campaign's outbox: the entries older than MinAge,
// oldest first, up to MaxPerPass.
func (r *Relay) Campaign(ctx context.Context, campaign string) (Stats, error) {
	st := Stats{Campaigns: 1}
	mine, err := r.lease(ctx, campaign)
	if err != nil {
		r.m.errors.Inc()
		return st, fmt.Errorf("relay %s: lease: %w", campaign, err)
	}
	if !mine {
		st.Leased = 1
		return st, nil
	}
	now, err := r.rdb.Time(ctx).Result()
	if err != nil {
		r.m.errors.Inc()
		return st, fmt.Errorf("relay %s: redis time: %w", campaign, err)
	}
	// Stream ids are the Redis clock in ms at XADD: "older than MinAge" is an id range.
	end := strconv.FormatInt(now.Add(-r.cfg.MinAge).UnixMilli(), 10)
	key := rkeys.Outbox(campaign)
	start := "-"
	for st.Scanned < r.cfg.MaxPerPass && st.Republished < r.cfg.MaxPublishPerPass {
		msgs, err := r.rdb.XRangeN(ctx, key, start, end, int64(r.cfg.Page)).Result()
		if err != nil {
			r.m.errors.Inc()
			return st, fmt.Errorf("relay %s: read outbox: %w", campaign, err)
		}
		if len(msgs) == 0 {
			break
		}
		page := make([]entry, len(msgs))
		for i, m := range msgs {
			page[i] = parseEntry(campaign, m)
		}
		ps, err := r.page(ctx, campaign, page, r.cfg.MaxPublishPerPass-st.Republished)
		st.add(ps)
		st.Campaigns = 1
		if err != nil {
			return st, err
		}
		if len(msgs) < r.cfg.Page {
			break
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
	r.observe(ctx, campaign, now)
	return st, nil
}

// page settles the fate of one page of stale entries, publishing at most budget.
func (r *Relay) page(ctx context.Context, campaign string, page []entry, budget int) (Stats, error) {
	st := Stats{Scanned: len(page)}
	ids := make([]string, len(page))
	for i, e := range page {
		ids[i] = e.rec.ClaimID
	}
	committed := make(map[string]bool, len(page))
	// A lottery draw that won nothing is a draws row, never a claims row (DESIGN.md
	// "Lottery"): it is committed once its draw is.
	rows, err := r.pg.Query(ctx, `SELECT claim_id FROM claims WHERE claim_id = ANY($1)
		UNION ALL SELECT draw_id FROM draws WHERE draw_id = ANY($1)`, ids)
	if err != nil {
		r.m.errors.Inc()
		return st, fmt.Errorf("relay %s: read committed claims: %w", campaign, err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return st, fmt.Errorf("relay %s: %w", campaign, err)
		}
		committed[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		r.m.errors.Inc()
		return st, fmt.Errorf("relay %s: read committed claims: %w", campaign, err)
	}

	// The idempotency record tells the rest apart: a voided claim's entry is a leftover;
	// A (never marked durable: its client heard no 200) is voided; D (acknowledged, not
	// settled), S (confirmed, not committed) or no record any more (expired, or Redis
	// lost it: it was accepted once and may have been answered 200) must reach Postgres.
	pipe := r.rdb.Pipeline()
	recs := make([]*redis.StringCmd, len(page))
	for i, e := range page {
		if !committed[e.rec.ClaimID] {
			recs[i] = pipe.Get(ctx, rkeys.Request(campaign, e.rec.RequestID))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		r.m.errors.Inc()
		return st, fmt.Errorf("relay %s: read idempotency records: %w", campaign, err)
	}
	var remove []entry
	var publish []entry
	var stale []entry
	nowT := time.Now()
	for i, e := range page {
		if committed[e.rec.ClaimID] {
			remove = append(remove, e)
			st.Trimmed++
			continue
		}
		state, owner := recordState(recs[i].Val())
		switch {
		case recs[i].Err() == redis.Nil:
			// No record (expired after the campaign's grace, or lost): still accepted.
		case owner != e.rec.ClaimID || state == 'V' || state == 'R':
			remove = append(remove, e)
			st.Dropped++
			continue
		case state == 'A':
			stale = append(stale, e)
			continue
		}
		if len(publish) >= budget || !r.due(e.rec.ClaimID, nowT) {
			st.Waiting++
			continue
		}
		publish = append(publish, e)
	}
	if len(stale) > 0 {
		n, err := r.void(ctx, campaign, stale)
		st.Voided = n
		r.m.voided.Add(float64(n))
		if err != nil {
			r.m.errors.Inc()
			return st, err
		}
	}
	if len(remove) > 0 {
		if err := r.remove(ctx, campaign, remove); err != nil {
			r.m.errors.Inc()
			return st, err
		}
		r.m.trimmed.Add(float64(st.Trimmed))
		r.m.dropped.Add(float64(st.Dropped))
	}
	if len(publish) == 0 {
		return st, nil
	}
	n, err := r.publish(ctx, campaign, publish)
	st.Republished = n
	return st, err
}

// recordState returns the state letter and claim id of an idempotency record.
func recordState(rec string) (byte, string) { return claim.IdemState(rec) }

func (r *Relay) remove(ctx context.Context, campaign string, es []entry) error {
	ids := make([]string, len(es))
	claims := make([]string, len(es))
	for i, e := range es {
		ids[i], claims[i] = e.id, e.rec.ClaimID
	}
	pipe := r.rdb.Pipeline()
	pipe.XDel(ctx, rkeys.Outbox(campaign), ids...)
	pipe.HDel(ctx, rkeys.Inflight(campaign), claims...)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("relay %s: trim outbox: %w", campaign, err)
	}
	return nil
}

// publish produces the entries (all D, S or without a record) and waits for the broker.
func (r *Relay) publish(ctx context.Context, campaign string, es []entry) (int, error) {
	pctx, cancel := context.WithTimeout(ctx, r.cfg.ProduceTimeout)
	defer cancel()
	krs := make([]*kgo.Record, len(es))
	index := make(map[*kgo.Record]int, len(es))
	for i, e := range es {
		krs[i] = &kgo.Record{Topic: r.cfg.Topic, Key: kafkaopt.ClaimKey(e.rec.ClaimID), Value: e.rec.AppendJSON(make([]byte, 0, 384))}
		index[krs[i]] = i
	}
	// Results come back in completion order; the record pointer says which claim.
	results := r.kcl.ProduceSync(pctx, krs...)
	var firstErr error
	n := 0
	now := time.Now()
	for _, res := range results {
		if res.Err != nil {
			if firstErr == nil {
				firstErr = res.Err
			}
			continue
		}
		id := es[index[res.Record]].rec.ClaimID
		r.markSent(id, now)
		n++
	}
	r.m.republished.Add(float64(n))
	if firstErr != nil {
		r.m.errors.Inc()
		return n, fmt.Errorf("relay %s: publish %d of %d claims failed: %w", campaign, len(es)-n, len(es), firstErr)
	}
	return n, nil
}

func (r *Relay) due(claimID string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	last, ok := r.sent[claimID]
	return !ok || now.Sub(last) >= r.cfg.RepublishEvery
}

func (r *Relay) markSent(claimID string, now time.Time) {
	r.mu.Lock()
	r.sent[claimID] = now
	r.mu.Unlock()
}

// forget drops publication times old enough not to matter, so the map holds only the
// claims published within the last few RepublishEvery.
func (r *Relay) forget() {
	r.mu.Lock()
	defer r.mu.Unlock()
	cut := time.Now().Add(-4*r.cfg.RepublishEvery - r.cfg.MinAge)
	for k, t := range r.sent {
		if t.Before(cut) {
			delete(r.sent, k)
		}
	}
}

// observe records the outbox's length and the age of its oldest entry.
func (r *Relay) observe(ctx context.Context, campaign string, now time.Time) {
	pipe := r.rdb.Pipeline()
	n := pipe.XLen(ctx, rkeys.Outbox(campaign))
	first := pipe.XRangeN(ctx, rkeys.Outbox(campaign), "-", "+", 1)
	if _, err := pipe.Exec(ctx); err != nil {
		return
	}
	r.m.entries.WithLabelValues(campaign).Set(float64(n.Val()))
	age := 0.0
	if msgs := first.Val(); len(msgs) == 1 {
		if ms, err := strconv.ParseInt(strings.SplitN(msgs[0].ID, "-", 2)[0], 10, 64); err == nil {
			age = now.Sub(time.UnixMilli(ms)).Seconds()
		}
	}
	r.m.oldest.WithLabelValues(campaign).Set(age)
}

type metrics struct {
	republished, trimmed, dropped, errors, voided prometheus.Counter
	entries, oldest                               *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		republished: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_relay_republished_total",
			Help: "Outbox entries older than the bound and not yet rows that the relay published to flash.claims (orphans re-published)."}),
		trimmed: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_relay_trimmed_total",
			Help: "Outbox entries removed by the relay because their claim is already a row in Postgres."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_relay_dropped_total",
			Help: "Outbox entries removed by the relay because their claim was voided."}),
		voided: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_relay_voided_total",
			Help: "Outbox entries older than the bound whose claim was still A (never marked durable, so never answered 200): voided and given back, never published."}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_relay_errors_total",
			Help: "Failed relay steps (Redis, Postgres or Kafka); the entries stay and the next pass retries."}),
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flashgate_outbox_entries",
			Help: "Entries in a campaign's outbox: accepted claims not yet committed (and cleaned up)."}, []string{"campaign"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flashgate_outbox_oldest_seconds",
			Help: "Age of the oldest entry in a campaign's outbox (0 when empty): the settlement lag."}, []string{"campaign"}),
	}
	if reg != nil {
		reg.MustRegister(m.republished, m.trimmed, m.dropped, m.errors, m.voided, m.entries, m.oldest)
	}
	return m
}
