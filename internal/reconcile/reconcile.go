// Package reconcile owns the comparison of each campaign's live counters in Redis with
// the books in Postgres, continuously and on demand, and the repairs that follow from
// it.
//
// Per campaign and SKU it checks
//
//	accepted (Redis "taken")   = rows in Postgres + claims in flight
//	stock left                 = total − accepted + recycled
//	spent + released (Redis)   = Σ value of rows + value in flight
//	released (Redis) − released (ledger) ≥ 0   (releases in flight: expiry mid-commit)
//
// and for the business line, the same budget identity over all its campaigns. "In
// flight" is an outbox entry whose claim is not a row yet. The reads are not one atomic
// step across two stores, so a check reads Redis's counters, then the outbox, then the
// books (one snapshot), then the counters again, and trusts the result only when no
// claim was accepted, voided or released in between ("stable"); during a busy sale it
// retries, and reports "moving" if the counters never hold still. The settler writing
// rows in between is harmless: a claim committed before the snapshot is a row, one
// committed after is in flight, never both (the outbox is read first).
//
// Repairs: orphans - in-flight claims older than the relay's bound - are re-published
// (settler/relay); counters that disagree with the books are rebuilt from them
// (internal/recovery: fence, wait for the settler, rebuild, unfence). Run repairs a drift
// only after it has been seen, unchanged, in RepairAfter consecutive stable checks.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/loop"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/rkeys"
)

// States of a Report.
const (
	StateInSync     = "in_sync"    // everything accepted is a row; nothing in flight
	StateSettling   = "settling"   // the differences are exactly what is in flight
	StateDrift      = "drift"      // they are not: see the drift fields
	StateMoving     = "moving"     // the counters never held still long enough to compare
	StateRecovering = "recovering" // the campaign is being rebuilt after a Redis loss
	StateMissing    = "missing"    // Redis has no such campaign (lost; recovery rebuilds it)
)

// Config tunes a Reconciler. Zero values get the defaults; invalid values are errors
// naming the field.
type Config struct {
	// Interval is the period of Run.
	Interval time.Duration
	// Attempts is how many times a check tries for a stable reading.
	Attempts int
	// OrphanAge is the age past which an in-flight claim counts as an orphan: the outbox
	// relay's MinAge.
	OrphanAge time.Duration
	// RepairAfter is how many consecutive stable checks must show the same drift before
	// Run repairs it (0: Run never repairs; Repair still does on demand).
	RepairAfter int
	// AcceptGrace: campaigns ended longer ago than this and with no unexpired vouchers
	// are not checked by Run.
	AcceptGrace time.Duration
	// Campaigns, when set, limits Run and Once to these campaigns (an operator watching
	// one sale, or a test on a shared stack). Empty: every campaign.
	Campaigns []string
}

func (c *Config) validate() error {
	if c.Interval == 0 {
		c.Interval = 10 * time.Second
	}
	if c.Attempts == 0 {
		c.Attempts = 5
	}
	if c.OrphanAge == 0 {
		c.OrphanAge = 15 * time.Second
	}
	if c.AcceptGrace == 0 {
		c.AcceptGrace = 24 * time.Hour
	}
	switch {
	case c.Interval < 10*time.Millisecond:
		return fmt.Errorf("reconcile config: Interval=%s, want at least 10ms", c.Interval)
	case c.Attempts < 1 || c.Attempts > 100:
		return fmt.Errorf("reconcile config: Attempts=%d, want 1..100", c.Attempts)
	case c.OrphanAge < 0:
		return fmt.Errorf("reconcile config: OrphanAge=%s must not be negative", c.OrphanAge)
	case c.RepairAfter < 0:
		return fmt.Errorf("reconcile config: RepairAfter=%d must not be negative", c.RepairAfter)
	case c.AcceptGrace < 0:
		return fmt.Errorf("reconcile config: AcceptGrace=%s must not be negative", c.AcceptGrace)
	}
	return nil
}

// Deps are what a Reconciler works with. Redis and Postgres are required; Relay and
// Recoverer are needed only for repairs (the gateway's admin API checks without them).
type Deps struct {
	Redis      *redis.Client
	PG         *pgxpool.Pool
	Relay      Republisher
	Recoverer  *recovery.Recoverer
	Log        *slog.Logger
	Registerer prometheus.Registerer
}

// Republisher publishes a campaign's orphaned outbox entries again (the settler's
// relay). Defined here, where it is used, so that this package - linked by the
// gateway too - does not import the settler.
type Republisher interface {
	Republish(ctx context.Context, campaign string) (int, error)
}

// Reconciler checks and repairs. Safe for concurrent use.
type Reconciler struct {
	cfg Config
	d   Deps
	m   *metrics

	mu      sync.Mutex
	seen    map[string]driftSeen // campaign → the drift of its last stable checks
	metered map[string]bool
}

type driftSeen struct {
	key   string
	count int
}

// New builds a Reconciler.
func New(cfg Config, d Deps) (*Reconciler, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if d.Redis == nil || d.PG == nil {
		return nil, errors.New("reconcile: a Redis client and a Postgres pool are required")
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	return &Reconciler{cfg: cfg, d: d, m: newMetrics(d.Registerer), seen: map[string]driftSeen{}, metered: map[string]bool{}}, nil
}

// ErrNotFound: no such campaign in Postgres.
var ErrNotFound = errors.New("reconcile: no such campaign")

// SKU is one SKU's comparison.
type SKU struct {
	SKU       string `json:"sku"`
	Total     int64  `json:"stock_total"`
	StockLeft int64  `json:"stock_left_redis"`
	Accepted  int64  `json:"accepted_redis"`
	Rows      int64  `json:"rows_postgres"`
	InFlight  int64  `json:"in_flight"`
	Recycled  int64  `json:"recycled_redis"`
	Expired   int64  `json:"expired_postgres"`
	// Drift = accepted − rows − in flight: claims Redis counts that are neither rows nor
	// in flight (positive) or rows Redis does not count (negative).
	Drift int64 `json:"drift"`
	// StockDrift = stock left − (total − accepted + recycled).
	StockDrift int64 `json:"stock_drift"`
}

// Budget is a budget's comparison (a campaign's or a business line's).
type Budget struct {
	Budget        int64 `json:"budget"`
	Spent         int64 `json:"spent_redis"`
	Released      int64 `json:"released_redis"`
	Reserved      int64 `json:"reserved_postgres"` // Σ value of rows
	ReleasedBooks int64 `json:"released_postgres"` // Σ release ledger rows
	InFlightValue int64 `json:"in_flight_value"`
	// PendingRelease = released in Redis − released in the ledger: releases whose
	// expiry transaction has not committed yet (≥ 0; negative is drift).
	PendingRelease int64 `json:"pending_release"`
	// Drift = spent + released − reserved − in-flight value.
	Drift int64 `json:"drift"`
}

// Report is one campaign's reconciliation.
type Report struct {
	CampaignID   string    `json:"campaign_id"`
	BusinessLine string    `json:"business_line"`
	At           time.Time `json:"at"`
	State        string    `json:"state"`
	Stable       bool      `json:"stable"`
	SKUs         []SKU     `json:"skus"`
	Accepted     int64     `json:"accepted_redis"`
	Rows         int64     `json:"rows_postgres"`
	InFlight     int64     `json:"in_flight"`
	// Drift = accepted − rows − in flight, over the campaign.
	Drift int64 `json:"drift"`
	// LedgerGap = Σ value of rows − Σ reserve ledger rows (0: every row has its entry).
	LedgerGap int64  `json:"ledger_gap"`
	Budget    Budget `json:"budget"`
	// BusinessLineBudget is the business line's identity over all its campaigns.
	BusinessLineBudget Budget `json:"business_line_budget"`
	BusinessLineStable bool   `json:"business_line_stable"`
	// LagMs is the age of the oldest claim in flight (0 when none): settlement lag.
	LagMs int64 `json:"lag_ms"`
	// Orphans are in-flight claims older than OrphanAge.
	Orphans int64 `json:"orphans"`
	// Set by Repair.
	Republished int               `json:"orphans_republished,omitempty"`
	Rebuilt     *recovery.Outcome `json:"rebuilt,omitempty"`
	Before      *Report           `json:"before_repair,omitempty"`
	Notes       []string          `json:"notes,omitempty"`
	recycle     bool
}

// Drifting reports whether the books and the counters disagree beyond what is in flight.
func (r *Report) Drifting() bool {
	if r.Drift != 0 || r.LedgerGap != 0 || r.Budget.Drift != 0 || r.Budget.PendingRelease < 0 {
		return true
	}
	if r.BusinessLineStable && (r.BusinessLineBudget.Drift != 0 || r.BusinessLineBudget.PendingRelease < 0) {
		return true
	}
	for _, s := range r.SKUs {
		if s.Drift != 0 || s.StockDrift != 0 {
			return true
		}
	}
	return false
}

func (r *Report) driftKey() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d/%d/%d/%d/%d", r.Drift, r.LedgerGap, r.Budget.Drift, r.Budget.PendingRelease,
		r.BusinessLineBudget.Drift, r.BusinessLineBudget.PendingRelease)
	for _, s := range r.SKUs {
		fmt.Fprintf(&b, "/%s:%d:%d", s.SKU, s.Drift, s.StockDrift)
	}
	return b.String()
}

// campaignDef is what Postgres says the campaign is.
type campaignDef struct {
	bl      string
	budget  int64
	recycle bool
	skus    []string
	totals  map[string]int64
}

func (rc *Reconciler) def(ctx context.Context, id string) (campaignDef, error) {
	d := campaignDef{totals: map[string]int64{}}
	err := rc.d.PG.QueryRow(ctx, `SELECT business_line, budget, recycle_stock FROM campaigns WHERE id = $1`, id).
		Scan(&d.bl, &d.budget, &d.recycle)
	if errors.Is(err, pgx.ErrNoRows) {
		return d, ErrNotFound
	}
	if err != nil {
		return d, fmt.Errorf("reconcile %s: %w", id, err)
	}
	rows, err := rc.d.PG.Query(ctx, `SELECT sku, stock FROM campaign_skus WHERE campaign_id = $1 ORDER BY sku`, id)
	if err != nil {
		return d, fmt.Errorf("reconcile %s: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			return d, fmt.Errorf("reconcile %s: %w", id, err)
		}
		d.skus = append(d.skus, s)
		d.totals[s] = n
	}
	return d, rows.Err()
}

// counters is one atomic reading of a campaign's Redis state.
type counters struct {
	nowMs                  int64
	bl, recovering         string
	spent, taken, released int64
	skus                   map[string][4]int64 // stock, taken, total, recycled
	lastID                 string
	metaExists             bool
}

func (c counters) same(o counters) bool {
	if c.spent != o.spent || c.taken != o.taken || c.released != o.released || c.lastID != o.lastID || c.recovering != o.recovering {
		return false
	}
	for k, v := range c.skus {
		if o.skus[k] != v {
			return false
		}
	}
	return true
}

func num(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func (rc *Reconciler) read(ctx context.Context, id string, skus []string) (counters, error) {
	c := counters{skus: map[string][4]int64{}}
	var tm *redis.TimeCmd
	var meta *redis.SliceCmd
	var info *redis.XInfoStreamCmd
	sk := make([]*redis.SliceCmd, len(skus))
	_, err := rc.d.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		tm = p.Time(ctx)
		meta = p.HMGet(ctx, rkeys.Meta(id), "bl", recovery.FieldRecovering, "spent", "taken", recovery.FieldReleased)
		for i, s := range skus {
			sk[i] = p.HMGet(ctx, rkeys.SKU(id, s), "stock", "taken", "total", recovery.FieldRecycled)
		}
		info = p.XInfoStream(ctx, rkeys.Outbox(id))
		return nil
	})
	// XINFO on a missing stream is the only error expected here (an outbox that was
	// never written, or that Redis lost).
	if err != nil && (info == nil || info.Err() == nil || !strings.Contains(info.Err().Error(), "no such key")) {
		return c, fmt.Errorf("reconcile %s: read redis: %w", id, err)
	}
	c.nowMs = tm.Val().UnixMilli()
	v := meta.Val()
	c.bl, _ = v[0].(string)
	c.metaExists = c.bl != ""
	c.recovering, _ = v[1].(string)
	c.spent, c.taken, c.released = num(v[2]), num(v[3]), num(v[4])
	for i, s := range skus {
		w := sk[i].Val()
		c.skus[s] = [4]int64{num(w[0]), num(w[1]), num(w[2]), num(w[3])}
	}
	if info.Err() == nil {
		c.lastID = info.Val().LastGeneratedID
	}
	return c, nil
}

// outboxEntry is one in-flight candidate.
type outboxEntry struct {
	claimID, sku string
	value, ms    int64
}

func (rc *Reconciler) readOutbox(ctx context.Context, id string) ([]outboxEntry, error) {
	var out []outboxEntry
	start := "-"
	for {
		msgs, err := rc.d.Redis.XRangeN(ctx, rkeys.Outbox(id), start, "+", 1000).Result()
		if err != nil {
			return nil, fmt.Errorf("reconcile %s: read outbox: %w", id, err)
		}
		for _, m := range msgs {
			r := claim.FromOutbox(id, m.ID, m.Values)
			ms, _ := strconv.ParseInt(strings.SplitN(m.ID, "-", 2)[0], 10, 64)
			out = append(out, outboxEntry{claimID: r.ClaimID, sku: r.SKU, value: r.Value, ms: ms})
		}
		if len(msgs) < 1000 {
			return out, nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

// books is what Postgres says, in one snapshot.
type books struct {
	rows, expired          map[string]int64
	value, reserved, relsd int64
	committed              map[string]bool
}

// readBooks reads the books of the given campaigns (one campaign, or every campaign of
// a business line). It selects by campaign_id, which the claims and ledger indexes lead
// with, never by business_line, which no index has: the business line's books are the
// books of its campaigns (a campaign's business line cannot change once it has claims),
// and a scan of the whole claims table for it, every pass and for every live campaign,
// was most of the settler's Postgres CPU once the table held a few hundred thousand
// rows.
func (rc *Reconciler) readBooks(ctx context.Context, campaigns []string, outbox []string) (books, error) {
	b := books{rows: map[string]int64{}, expired: map[string]int64{}, committed: map[string]bool{}}
	tx, err := rc.d.PG.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return b, err
	}
	defer tx.Rollback(ctx)
	rows, err := tx.Query(ctx, `SELECT sku, count(*), count(*) FILTER (WHERE state = 'expired'), coalesce(sum(value), 0)
		FROM claims WHERE campaign_id = ANY($1) GROUP BY sku`, campaigns)
	if err != nil {
		return b, err
	}
	for rows.Next() {
		var s string
		var n, e, v int64
		if err := rows.Scan(&s, &n, &e, &v); err != nil {
			rows.Close()
			return b, err
		}
		b.rows[s] += n
		b.expired[s] += e
		b.value += v
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return b, err
	}
	err = tx.QueryRow(ctx, `SELECT coalesce(sum(amount) FILTER (WHERE kind = 'reserve'), 0),
		coalesce(sum(amount) FILTER (WHERE kind = 'release'), 0) FROM budget_ledger WHERE campaign_id = ANY($1)`, campaigns).
		Scan(&b.reserved, &b.relsd)
	if err != nil {
		return b, err
	}
	if len(outbox) > 0 {
		crow, err := tx.Query(ctx, `SELECT claim_id FROM claims WHERE claim_id = ANY($1)`, outbox)
		if err != nil {
			return b, err
		}
		for crow.Next() {
			var id string
			if err := crow.Scan(&id); err != nil {
				crow.Close()
				return b, err
			}
			b.committed[id] = true
		}
		crow.Close()
		if err := crow.Err(); err != nil {
			return b, err
		}
	}
	return b, tx.Commit(ctx)
}

// Campaign checks one campaign (read-only): what GET /admin/v1/campaigns/{id} shows.
func (rc *Reconciler) Campaign(ctx context.Context, id string) (*Report, error) {
	d, err := rc.def(ctx, id)
	if err != nil {
		return nil, err
	}
	r := &Report{CampaignID: id, BusinessLine: d.bl, At: time.Now().UTC(), recycle: d.recycle}
	var c counters
	var out []outboxEntry
	var bk books
	for attempt := 0; attempt < rc.cfg.Attempts; attempt++ {
		c1, err := rc.read(ctx, id, d.skus)
		if err != nil {
			return nil, err
		}
		if !c1.metaExists || c1.recovering != "" {
			c = c1
			break
		}
		if out, err = rc.readOutbox(ctx, id); err != nil {
			return nil, err
		}
		ids := make([]string, len(out))
		for i, e := range out {
			ids[i] = e.claimID
		}
		if bk, err = rc.readBooks(ctx, []string{id}, ids); err != nil {
			return nil, fmt.Errorf("reconcile %s: read books: %w", id, err)
		}
		c2, err := rc.read(ctx, id, d.skus)
		if err != nil {
			return nil, err
		}
		c = c1
		if c1.same(c2) {
			r.Stable = true
			break
		}
	}
	switch {
	case !c.metaExists:
		r.State = StateMissing
		return r, nil
	case c.recovering != "":
		r.State = StateRecovering
		return r, nil
	}
	infl := map[string]int64{}
	for _, e := range out {
		if bk.committed[e.claimID] {
			continue
		}
		infl[e.sku]++
		r.InFlight++
		r.Budget.InFlightValue += e.value
		age := c.nowMs - e.ms
		if age > r.LagMs {
			r.LagMs = age
		}
		if age >= rc.cfg.OrphanAge.Milliseconds() {
			r.Orphans++
		}
	}
	for _, s := range d.skus {
		v := c.skus[s]
		k := SKU{SKU: s, Total: d.totals[s], StockLeft: v[0], Accepted: v[1], Recycled: v[3],
			Rows: bk.rows[s], Expired: bk.expired[s], InFlight: infl[s]}
		k.Drift = k.Accepted - k.Rows - k.InFlight
		k.StockDrift = k.StockLeft - (k.Total - k.Accepted + k.Recycled)
		r.SKUs = append(r.SKUs, k)
		r.Rows += k.Rows
	}
	r.Accepted = c.taken
	r.Drift = r.Accepted - r.Rows - r.InFlight
	r.LedgerGap = bk.value - bk.reserved
	r.Budget.Budget, r.Budget.Spent, r.Budget.Released = d.budget, c.spent, c.released
	r.Budget.Reserved, r.Budget.ReleasedBooks = bk.value, bk.relsd
	r.Budget.PendingRelease = c.released - bk.relsd
	r.Budget.Drift = c.spent + c.released - bk.value - r.Budget.InFlightValue
	if err := rc.businessLine(ctx, r); err != nil {
		return nil, err
	}
	switch {
	case !r.Stable:
		r.State = StateMoving
	case r.Drifting():
		r.State = StateDrift
	case r.InFlight > 0 || r.Budget.PendingRelease > 0:
		r.State = StateSettling
	default:
		r.State = StateInSync
	}
	return r, nil
}

// businessLine fills the business line's budget identity: its spent + released against
// the rows of all its campaigns plus what is in flight in the ones Redis holds.
func (rc *Reconciler) businessLine(ctx context.Context, r *Report) error {
	camps, err := rc.d.PG.Query(ctx, `SELECT id FROM campaigns WHERE business_line = $1`, r.BusinessLine)
	if err != nil {
		return fmt.Errorf("reconcile %s: business line campaigns: %w", r.CampaignID, err)
	}
	var ids []string
	for camps.Next() {
		var id string
		if err := camps.Scan(&id); err != nil {
			camps.Close()
			return err
		}
		ids = append(ids, id)
	}
	camps.Close()
	if err := camps.Err(); err != nil {
		return err
	}
	// Every accept, void and release moves spent or released, so two equal readings
	// around the outbox and book reads mean nothing moved in between.
	readBL := func() (budget, spent, released int64, err error) {
		v, err := rc.d.Redis.HMGet(ctx, rkeys.BusinessLine(r.BusinessLine), "budget", "spent", recovery.FieldReleased).Result()
		if err != nil {
			return 0, 0, 0, err
		}
		return num(v[0]), num(v[1]), num(v[2]), nil
	}
	for attempt := 0; attempt < rc.cfg.Attempts; attempt++ {
		b1, s1, rl1, err := readBL()
		if err != nil {
			return fmt.Errorf("reconcile %s: read business line: %w", r.CampaignID, err)
		}
		var all []outboxEntry
		for _, id := range ids {
			out, err := rc.readOutbox(ctx, id)
			if err != nil {
				return err
			}
			all = append(all, out...)
		}
		cids := make([]string, len(all))
		for i, e := range all {
			cids[i] = e.claimID
		}
		bk, err := rc.readBooks(ctx, ids, cids)
		if err != nil {
			return fmt.Errorf("reconcile %s: read business line books: %w", r.CampaignID, err)
		}
		_, s2, rl2, err := readBL()
		if err != nil {
			return fmt.Errorf("reconcile %s: read business line: %w", r.CampaignID, err)
		}
		var inflight int64
		for _, e := range all {
			if !bk.committed[e.claimID] {
				inflight += e.value
			}
		}
		bb := &r.BusinessLineBudget
		*bb = Budget{Budget: b1, Spent: s1, Released: rl1, Reserved: bk.value, ReleasedBooks: bk.relsd, InFlightValue: inflight}
		bb.PendingRelease = rl1 - bk.relsd
		bb.Drift = s1 + rl1 - bk.value - inflight
		if s1 == s2 && rl1 == rl2 {
			r.BusinessLineStable = true
			return nil
		}
	}
	return nil
}

// Repair checks a campaign and repairs what it can: it re-publishes orphans (when a
// relay is configured) and, if the counters drift from the books in a stable check,
// rebuilds the campaign's business line from the books (when a recoverer is
// configured). The report is the check after the repair; Before holds the one before.
func (rc *Reconciler) Repair(ctx context.Context, id string) (*Report, error) {
	before, err := rc.Campaign(ctx, id)
	if err != nil {
		return nil, err
	}
	var notes []string
	republished := 0
	if before.Orphans > 0 {
		if rc.d.Relay == nil {
			notes = append(notes, "orphans found but no relay configured")
		} else {
			n, err := rc.d.Relay.Republish(ctx, id)
			republished = n
			rc.m.republished.Add(float64(n))
			if err != nil {
				notes = append(notes, "relay: "+err.Error())
			}
		}
	}
	var rebuilt *recovery.Outcome
	if before.State == StateDrift || before.State == StateMissing {
		if rc.d.Recoverer == nil {
			notes = append(notes, "drift found but no recoverer configured")
		} else {
			o, err := rc.d.Recoverer.RecoverBusinessLine(ctx, before.BusinessLine)
			if err != nil {
				rc.m.repairs.WithLabelValues("failed").Inc()
				return nil, fmt.Errorf("reconcile %s: repair: %w", id, err)
			}
			rc.m.repairs.WithLabelValues("rebuilt").Inc()
			rebuilt = &o
		}
	}
	after, err := rc.Campaign(ctx, id)
	if err != nil {
		return nil, err
	}
	after.Before, after.Republished, after.Rebuilt, after.Notes = before, republished, rebuilt, notes
	rc.observe(after)
	return after, nil
}

// Once checks every live campaign this Redis holds (rkeys.Campaigns; a campaign Redis
// lost entirely is internal/recovery's to find), records the metrics, and - when
// RepairAfter > 0 - repairs the drifts that persisted.
func (rc *Reconciler) Once(ctx context.Context) ([]*Report, error) {
	held, err := rc.d.Redis.SMembers(ctx, rkeys.Campaigns).Result()
	if err != nil {
		return nil, fmt.Errorf("reconcile: list campaigns in redis: %w", err)
	}
	only := rc.cfg.Campaigns
	if only == nil {
		only = []string{}
	}
	rows, err := rc.d.PG.Query(ctx, `SELECT c.id FROM campaigns c
		WHERE c.id = ANY($2) AND (cardinality($3::text[]) = 0 OR c.id = ANY($3))
		  AND (c.ends_at > $1 OR EXISTS (SELECT 1 FROM claims cl WHERE cl.campaign_id = c.id AND cl.state = 'settled'))
		ORDER BY c.id`, time.Now().Add(-rc.cfg.AcceptGrace), held, only)
	if err != nil {
		return nil, fmt.Errorf("reconcile: list campaigns: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reconcile: list campaigns: %w", err)
	}
	var out []*Report
	var errs []error
	live := map[string]bool{}
	for _, id := range ids {
		live[id] = true
		r, err := rc.Campaign(ctx, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rc.observe(r)
		if rc.persistent(r) {
			rc.d.Log.Warn("reconciliation: drift persisted; repairing", "campaign", id, "drift", r.Drift, "budget_drift", r.Budget.Drift)
			if rr, err := rc.Repair(ctx, id); err != nil {
				errs = append(errs, err)
			} else {
				r = rr
			}
		} else if r.Orphans > 0 && rc.d.Relay != nil {
			n, err := rc.d.Relay.Republish(ctx, id)
			rc.m.republished.Add(float64(n))
			r.Republished = n
			if err != nil {
				errs = append(errs, err)
			}
		}
		out = append(out, r)
	}
	rc.forget(live)
	return out, errors.Join(errs...)
}

// persistent reports whether r's drift has now been seen RepairAfter times in a row.
func (rc *Reconciler) persistent(r *Report) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !r.Stable || r.State != StateDrift || rc.cfg.RepairAfter == 0 {
		if r.Stable {
			delete(rc.seen, r.CampaignID)
		}
		return false
	}
	k := r.driftKey()
	s := rc.seen[r.CampaignID]
	if s.key == k {
		s.count++
	} else {
		s = driftSeen{key: k, count: 1}
	}
	rc.seen[r.CampaignID] = s
	if s.count >= rc.cfg.RepairAfter {
		delete(rc.seen, r.CampaignID)
		return true
	}
	return false
}

// Run checks every Interval until ctx ends. Errors are logged (loop.Every); it returns nil when
// ctx ends.
func (rc *Reconciler) Run(ctx context.Context) error {
	return loop.Every(ctx, rc.cfg.Interval, func(ctx context.Context) (bool, error) {
		_, err := rc.Once(ctx)
		return false, err
	}, func(err error) { rc.d.Log.Warn("reconciliation pass failed", "err", err) })
}

func (rc *Reconciler) observe(r *Report) {
	rc.mu.Lock()
	rc.metered[r.CampaignID] = true
	rc.mu.Unlock()
	c := r.CampaignID
	if r.Stable {
		rc.m.drift.WithLabelValues(c).Set(float64(r.Drift))
		rc.m.budgetDrift.WithLabelValues(c).Set(float64(r.Budget.Drift))
	}
	rc.m.inFlight.WithLabelValues(c).Set(float64(r.InFlight))
	rc.m.lag.WithLabelValues(c).Set(float64(r.LagMs) / 1000)
	rc.m.orphans.WithLabelValues(c).Set(float64(r.Orphans))
	for _, s := range []string{StateInSync, StateSettling, StateDrift, StateMoving, StateRecovering, StateMissing} {
		v := 0.0
		if s == r.State {
			v = 1
		}
		rc.m.state.WithLabelValues(c, s).Set(v)
	}
}

// forget drops the metrics of campaigns no longer checked.
func (rc *Reconciler) forget(live map[string]bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var gone []string
	for c := range rc.metered {
		if !live[c] {
			gone = append(gone, c)
		}
	}
	sort.Strings(gone)
	for _, c := range gone {
		delete(rc.metered, c)
		delete(rc.seen, c)
		for _, g := range []*prometheus.GaugeVec{rc.m.drift, rc.m.budgetDrift, rc.m.inFlight, rc.m.lag, rc.m.orphans} {
			g.DeleteLabelValues(c)
		}
		rc.m.state.DeletePartialMatch(prometheus.Labels{"campaign": c})
	}
}

type metrics struct {
	drift, budgetDrift, inFlight, lag, orphans, state *prometheus.GaugeVec
	republished                                       prometheus.Counter
	repairs                                           *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	g := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	m := &metrics{
		drift: g("flashgate_reconcile_drift_claims", "Accepted claims in Redis minus rows in Postgres minus claims in flight, at the last stable check (0 when in sync).", "campaign"),
		budgetDrift: g("flashgate_reconcile_drift_budget",
			"Campaign budget spent + released in Redis minus the value of its rows and of its claims in flight, at the last stable check.", "campaign"),
		inFlight: g("flashgate_reconcile_in_flight_claims", "Accepted claims not yet rows in Postgres.", "campaign"),
		lag:      g("flashgate_reconcile_lag_seconds", "Age of the oldest accepted claim not yet a row (settlement lag).", "campaign"),
		orphans:  g("flashgate_reconcile_orphans", "Claims in flight for longer than the relay's bound.", "campaign"),
		state:    g("flashgate_reconcile_state", "1 for the campaign's reconciliation state (in_sync, settling, drift, moving, recovering, missing).", "campaign", "state"),
		republished: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_reconcile_orphans_republished_total",
			Help: "Orphans the reconciliation had the outbox relay re-publish."}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flashgate_reconcile_repairs_total",
			Help: "Counter rebuilds started by reconciliation, by result."}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.drift, m.budgetDrift, m.inFlight, m.lag, m.orphans, m.state, m.republished, m.repairs)
	}
	return m
}
