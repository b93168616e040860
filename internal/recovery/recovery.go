// Package recovery owns what happens when Redis loses state: detecting it, stopping the
// affected campaigns from accepting claims, rebuilding their live counters from the
// books (Postgres) plus what is still in flight, and letting them accept again -
// automatically, from any process that runs a Recoverer (the gateway and the settler).
//
// Detection. Every campaign's meta hash carries the run id of the Redis server its
// counters are known good on (field "rid"). A pass reads the server's run id (INFO) and
// each live campaign's meta: a missing meta ("lost": Redis lost everything, or the key
// was deleted), a different run id ("restarted": Redis restarted, and with AOF everysec
// it may have lost its last second), a leftover "recovering" token whose lock is gone
// ("interrupted") or a business line without its budget field ("budget_missing") all
// trigger a recovery of the campaign's business line. A campaign seen without a run id
// is stamped with the current one (first sight).
//
// Recovery of a business line, under a lock (fence.lua, lease.lua, unfence.lua):
//  1. fence: delete the business line's "budget" field - claim.lua then answers
//     NOT_WARM (503, nothing taken, nothing remembered) for all its campaigns - and mark
//     each campaign's meta "recovering";
//  2. wait until the settler has written everything that was in Kafka (CatchUp);
//  3. per campaign, read the outbox, then the books in one repeatable-read snapshot, and
//     write the counters back atomically (rebuild.lua): taken = rows + in flight, stock =
//     total - taken + recycled, spent = reserved - released + in-flight value, per-user
//     counts, the released set, the idempotency records of settled claims (so a retry
//     gets its claim back instead of a second one), the segment if it was lost;
//  4. unfence: write the business line's budget (read from Postgres again, or the one an
//     admin PUT left in "budget_next" while fenced: budget.lua), spent and released back.
//
// A business line is the unit because its budget is shared by its campaigns: its
// "spent" can only be rebuilt with all of them still.
package recovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/loop"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// ErrBusy means another process holds the business line's recovery lock.
var ErrBusy = errors.New("recovery: another process is recovering this business line")

// Config tunes a Recoverer. Zero values get the defaults; invalid values are errors
// naming the field.
type Config struct {
	// Interval is the detection period of Run: the longest a restarted Redis can go
	// unnoticed (see DESIGN.md on what claim.lua would need to close that window).
	Interval time.Duration
	// ListEvery is how often the list of live campaigns is re-read from Postgres.
	ListEvery time.Duration
	// AcceptGrace is how long after a campaign's end its idempotency records live (the
	// gateway's -accept-grace). Campaigns ended longer ago and without unexpired
	// vouchers are not live: nothing of theirs needs counters.
	AcceptGrace time.Duration
	// LockTTL bounds how long a dead recoverer can hold a business line; a live one
	// extends it every LockTTL/3.
	LockTTL time.Duration
	// CatchUpTimeout bounds the wait for the settler in one attempt. A business line
	// whose wait times out stays fenced and the next pass tries again (fail closed).
	CatchUpTimeout time.Duration
	// Chunk is how many rows are loaded into Redis per round trip.
	Chunk int
	// BusinessLines, when set, limits detection to these business lines (a test on a
	// shared database, or an operator watching one line). Empty: every business line.
	BusinessLines []string
}

func (c *Config) validate() error {
	def := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.Interval, 500*time.Millisecond)
	def(&c.ListEvery, 5*time.Second)
	def(&c.AcceptGrace, 24*time.Hour)
	def(&c.LockTTL, 30*time.Second)
	def(&c.CatchUpTimeout, time.Minute)
	if c.Chunk == 0 {
		c.Chunk = 2000
	}
	switch {
	case c.Interval < 10*time.Millisecond:
		return fmt.Errorf("recovery config: Interval=%s, want at least 10ms", c.Interval)
	case c.ListEvery < c.Interval:
		return fmt.Errorf("recovery config: ListEvery=%s must be at least Interval=%s", c.ListEvery, c.Interval)
	case c.AcceptGrace < 0:
		return fmt.Errorf("recovery config: AcceptGrace=%s must not be negative", c.AcceptGrace)
	case c.LockTTL < time.Second:
		return fmt.Errorf("recovery config: LockTTL=%s, want at least 1s", c.LockTTL)
	case c.CatchUpTimeout < 100*time.Millisecond:
		return fmt.Errorf("recovery config: CatchUpTimeout=%s, want at least 100ms", c.CatchUpTimeout)
	case c.Chunk < 1 || c.Chunk > 100_000:
		return fmt.Errorf("recovery config: Chunk=%d, want 1..100000", c.Chunk)
	}
	return nil
}

// Recoverer detects Redis loss and rebuilds. Safe for concurrent use; several processes
// may run one each (a lock per business line makes one of them do the work).
type Recoverer struct {
	cfg     Config
	rdb     *redis.Client
	pg      *pgxpool.Pool
	catchUp CatchUp
	log     *slog.Logger
	m       *metrics
	now     func() time.Time

	mu       sync.Mutex
	live     []liveCampaign
	bls      []string
	listedAt time.Time
}

type liveCampaign struct{ id, bl string }

// New builds a Recoverer. catchUp is required: rebuilding without knowing the settler
// has caught up could forget claims that are only in Kafka.
func New(cfg Config, rdb *redis.Client, pg *pgxpool.Pool, catchUp CatchUp, log *slog.Logger, reg prometheus.Registerer) (*Recoverer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if rdb == nil || pg == nil {
		return nil, errors.New("recovery: a Redis client and a Postgres pool are required")
	}
	if catchUp == nil {
		return nil, errors.New("recovery: a CatchUp is required (KafkaCatchUp with the settler's group)")
	}
	if log == nil {
		log = slog.Default()
	}
	return &Recoverer{cfg: cfg, rdb: rdb, pg: pg, catchUp: catchUp, log: log, m: newMetrics(reg), now: time.Now}, nil
}

// Finding is one reason to recover a business line.
type Finding struct {
	BusinessLine string `json:"business_line"`
	Campaign     string `json:"campaign,omitempty"`
	// Reason is lost, restarted, interrupted or budget_missing (see the package comment).
	Reason string `json:"reason"`
}

// Outcome is what one recovery of a business line did.
type Outcome struct {
	BusinessLine string        `json:"business_line"`
	Campaigns    []Rebuilt     `json:"campaigns"`
	Spent        int64         `json:"business_line_spent"`
	Released     int64         `json:"business_line_released"`
	Took         time.Duration `json:"took_ns"`
}

// Rebuilt is one campaign's rebuilt counters.
type Rebuilt struct {
	Campaign      string `json:"campaign"`
	Rows          int64  `json:"rows"`
	InFlight      int64  `json:"in_flight"`
	InFlightValue int64  `json:"in_flight_value"`
	Dropped       int64  `json:"in_flight_dropped"`
	Taken         int64  `json:"taken"`
	Spent         int64  `json:"spent"`
	Released      int64  `json:"released"`
	Records       int64  `json:"records_restored"`
	// Codes is how many partner codes the rebuilt pools hold (DESIGN.md "Partner code
	// pools").
	Codes int64 `json:"codes_in_pools"`
}

// Run detects and recovers every Interval until ctx ends. Errors are logged and
// counted (loop.Every); it returns nil when ctx ends.
func (r *Recoverer) Run(ctx context.Context) error {
	return loop.Every(ctx, r.cfg.Interval, func(ctx context.Context) (bool, error) {
		_, err := r.Once(ctx)
		return false, err
	}, func(err error) { r.log.Warn("redis recovery pass failed", "err", err) })
}

// Once runs one detection pass and recovers every business line it finds affected.
// When every one of them is back, the server is recorded as checked (ServerRunID).
func (r *Recoverer) Once(ctx context.Context) ([]Outcome, error) {
	runID, findings, err := r.detect(ctx)
	if err != nil {
		return nil, err
	}
	var errs []error
	if err := r.ensureRisk(ctx, runID); err != nil {
		errs = append(errs, err)
	}
	var bls []string
	seen := map[string]bool{}
	for _, f := range findings {
		r.m.detected.WithLabelValues(f.Reason).Inc()
		r.log.Warn("redis state lost or stale; recovering", "business_line", f.BusinessLine, "campaign", f.Campaign, "reason", f.Reason)
		if !seen[f.BusinessLine] {
			seen[f.BusinessLine] = true
			bls = append(bls, f.BusinessLine)
		}
	}
	var out []Outcome
	busy := false
	for _, bl := range bls {
		o, err := r.RecoverBusinessLine(ctx, bl)
		if errors.Is(err, ErrBusy) {
			busy = true
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, o)
	}
	if len(errs) == 0 && !busy && len(r.cfg.BusinessLines) == 0 {
		if err := r.rdb.Set(ctx, ServerRunID, runID, 0).Err(); err != nil {
			errs = append(errs, fmt.Errorf("stamp server: %w", err))
		}
	}
	return out, errors.Join(errs...)
}

// RunID returns the Redis server's run id.
func RunID(ctx context.Context, rdb *redis.Client) (string, error) {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return "", fmt.Errorf("redis info: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return v, nil
		}
	}
	return "", errors.New("redis info: no run_id")
}

// Stamp records that a campaign's counters are good on the current Redis server (if it
// has no stamp yet). catalog's warm should call it (or set the field itself) so that a
// restart right after a campaign is created is noticed too.
func Stamp(ctx context.Context, rdb *redis.Client, campaign string) error {
	id, err := RunID(ctx, rdb)
	if err != nil {
		return err
	}
	if err := rdb.HSetNX(ctx, rkeys.Meta(campaign), FieldRunID, id).Err(); err != nil {
		return fmt.Errorf("stamp campaign %s: %w", campaign, err)
	}
	return nil
}

// liveCampaigns returns the live campaigns and business lines of the books, from a list
// at most ListEvery old - or read afresh when fresh is set (a Redis that lost data: a
// campaign created since the last list must be rebuilt too).
func (r *Recoverer) liveCampaigns(ctx context.Context, fresh bool) ([]liveCampaign, []string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !fresh && r.live != nil && r.now().Sub(r.listedAt) < r.cfg.ListEvery {
		return r.live, r.bls, nil
	}
	only := r.cfg.BusinessLines
	if only == nil {
		only = []string{}
	}
	live, err := r.listLive(ctx, "")
	if err != nil {
		return nil, nil, err
	}
	rows, err := r.pg.Query(ctx, `SELECT id FROM business_lines
		WHERE cardinality($1::text[]) = 0 OR id = ANY($1) ORDER BY id`, only)
	if err != nil {
		return nil, nil, fmt.Errorf("list business lines: %w", err)
	}
	var bls []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, nil, fmt.Errorf("list business lines: %w", err)
		}
		bls = append(bls, id)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("list business lines: %w", err)
	}
	if live == nil {
		live = []liveCampaign{}
	}
	r.live, r.bls, r.listedAt = live, bls, r.now()
	return live, bls, nil
}

// listLive lists the campaigns that may have live state: not ended longer than the
// accept grace ago, or holding vouchers that may still expire (whose budget recovery
// needs the campaign's counters). bl = "" lists every business line's.
func (r *Recoverer) listLive(ctx context.Context, bl string) ([]liveCampaign, error) {
	only := r.cfg.BusinessLines
	if only == nil {
		only = []string{}
	}
	rows, err := r.pg.Query(ctx, `SELECT c.id, c.business_line FROM campaigns c
		WHERE ($2 = '' OR c.business_line = $2)
		  AND (cardinality($3::text[]) = 0 OR c.business_line = ANY($3))
		  AND (c.ends_at > $1 OR EXISTS (SELECT 1 FROM claims cl WHERE cl.campaign_id = c.id AND cl.state = 'settled'))
		ORDER BY c.id`, r.now().Add(-r.cfg.AcceptGrace), bl, only)
	if err != nil {
		return nil, fmt.Errorf("list live campaigns: %w", err)
	}
	defer rows.Close()
	var out []liveCampaign
	for rows.Next() {
		var c liveCampaign
		if err := rows.Scan(&c.id, &c.bl); err != nil {
			return nil, fmt.Errorf("list live campaigns: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// Detect reports what needs recovering, without changing anything but first-sight
// stamps.
//
// Which campaigns it looks at: normally those this Redis knows (rkeys.Campaigns) - a
// campaign of the books that this Redis never held is not this Redis's to rebuild (a
// test's private Redis, a second deployment on the same database). But when the server
// is not the one last checked (ServerRunID differs: a restart, which may have lost the
// last second, including a campaign's warm) or the set of campaigns itself is gone (an
// empty Redis), every live campaign of the books is looked at.
func (r *Recoverer) Detect(ctx context.Context) ([]Finding, error) {
	_, f, err := r.detect(ctx)
	return f, err
}

func (r *Recoverer) detect(ctx context.Context) (string, []Finding, error) {
	runID, err := RunID(ctx, r.rdb)
	if err != nil {
		return "", nil, err
	}
	pre := r.rdb.Pipeline()
	last := pre.Get(ctx, ServerRunID)
	members := pre.SMembers(ctx, rkeys.Campaigns)
	if _, err := pre.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return "", nil, fmt.Errorf("detect: %w", err)
	}
	full := len(members.Val()) == 0 || (last.Err() == nil && last.Val() != runID)
	// A full pass works from Postgres's list as it is now, never a cached one: a campaign
	// created since the last list may be exactly the one Redis lost (issue 21.5).
	live, bls, err := r.liveCampaigns(ctx, full)
	if err != nil {
		return "", nil, err
	}
	known := make(map[string]bool, len(members.Val()))
	for _, c := range members.Val() {
		known[c] = true
	}
	if !full {
		kept := live[:0:0]
		for _, c := range live {
			if known[c.id] {
				kept = append(kept, c)
			}
		}
		live = kept
		used := map[string]bool{}
		for _, c := range live {
			used[c.bl] = true
		}
		var kb []string
		for _, bl := range bls {
			if used[bl] {
				kb = append(kb, bl)
			}
		}
		bls = kb
	}

	pipe := r.rdb.Pipeline()
	metas := make([]*redis.SliceCmd, len(live))
	for i, c := range live {
		metas[i] = pipe.HMGet(ctx, rkeys.Meta(c.id), "bl", FieldRunID, FieldRecovering)
	}
	budgets := make([]*redis.BoolCmd, len(bls))
	locks := make([]*redis.IntCmd, len(bls))
	lockOf := map[string]*redis.IntCmd{}
	for i, bl := range bls {
		budgets[i] = pipe.HExists(ctx, rkeys.BusinessLine(bl), "budget")
		locks[i] = pipe.Exists(ctx, Lock(bl))
		lockOf[bl] = locks[i]
	}
	for _, c := range live {
		if lockOf[c.bl] == nil {
			lockOf[c.bl] = pipe.Exists(ctx, Lock(c.bl))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return "", nil, fmt.Errorf("detect: %w", err)
	}
	var out []Finding
	var stamp []string
	for i, c := range live {
		v := metas[i].Val()
		blField, _ := v[0].(string)
		rid, _ := v[1].(string)
		rec, _ := v[2].(string)
		switch {
		case lockOf[c.bl].Val() == 1:
			// A recovery of this business line is running somewhere.
		case blField == "":
			out = append(out, Finding{BusinessLine: c.bl, Campaign: c.id, Reason: "lost"})
		case rec != "":
			out = append(out, Finding{BusinessLine: c.bl, Campaign: c.id, Reason: "interrupted"})
		case rid == "":
			stamp = append(stamp, c.id)
		case rid != runID:
			out = append(out, Finding{BusinessLine: c.bl, Campaign: c.id, Reason: "restarted"})
		}
	}
	for i, bl := range bls {
		if !budgets[i].Val() && locks[i].Val() == 0 {
			out = append(out, Finding{BusinessLine: bl, Reason: "budget_missing"})
		}
	}
	if len(stamp) > 0 {
		pipe := r.rdb.Pipeline()
		for _, c := range stamp {
			pipe.HSetNX(ctx, rkeys.Meta(c), FieldRunID, runID)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return runID, out, fmt.Errorf("stamp campaigns: %w", err)
		}
	}
	if last.Err() == redis.Nil && len(members.Val()) > 0 {
		// First sight of a Redis that holds campaigns: this server is the reference.
		if err := r.rdb.SetNX(ctx, ServerRunID, runID, 0).Err(); err != nil {
			return runID, out, fmt.Errorf("stamp server: %w", err)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].BusinessLine < out[j].BusinessLine })
	return runID, out, nil
}

// RecoverBusinessLine fences a business line's live campaigns, waits for the settler,
// rebuilds their counters and the business line's, and unfences. On any failure the
// business line stays fenced (no claim is accepted on counters that may be wrong) and
// the lock is dropped, so the next pass of any Recoverer tries again.
func (r *Recoverer) RecoverBusinessLine(ctx context.Context, bl string) (Outcome, error) {
	start := r.now()
	out := Outcome{BusinessLine: bl}
	var budget int64
	if err := r.pg.QueryRow(ctx, `SELECT budget FROM business_lines WHERE id = $1`, bl).Scan(&budget); err != nil {
		return out, fmt.Errorf("recover business line %s: %w", bl, err)
	}
	live, err := r.listLive(ctx, bl)
	if err != nil {
		return out, fmt.Errorf("recover business line %s: %w", bl, err)
	}
	runID, err := RunID(ctx, r.rdb)
	if err != nil {
		return out, fmt.Errorf("recover business line %s: %w", bl, err)
	}
	var tok [12]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return out, err
	}
	token := hex.EncodeToString(tok[:])
	lock := Lock(bl)
	keys := []string{lock, rkeys.BusinessLine(bl)}
	for _, c := range live {
		keys = append(keys, rkeys.Meta(c.id))
	}
	held, err := scripts.Fence.Run(ctx, r.rdb, keys, token, r.cfg.LockTTL.Milliseconds()).Int()
	if err != nil {
		return out, fmt.Errorf("recover business line %s: fence: %w", bl, err)
	}
	if held == scripts.FenceHeld {
		return out, ErrBusy
	}
	r.m.fenced.Inc()
	defer r.m.fenced.Dec()
	r.log.Warn("business line fenced: its campaigns answer 503 until rebuilt", "business_line", bl, "campaigns", len(live))

	// Keep the lock while working; losing it (a pause longer than LockTTL) aborts.
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go r.keepLease(wctx, cancel, lock, token)

	fail := func(stage string, err error) (Outcome, error) {
		r.m.recoveries.WithLabelValues("failed").Inc()
		if cause := context.Cause(wctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = fmt.Errorf("%w (%v)", err, cause)
		}
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer dcancel()
		_ = scripts.Lease.Run(dctx, r.rdb, []string{lock}, token, 0).Err()
		return out, fmt.Errorf("recover business line %s: %s: %w (it stays fenced; the next pass retries)", bl, stage, err)
	}

	cctx, ccancel := context.WithTimeout(wctx, r.cfg.CatchUpTimeout)
	err = r.catchUp.Wait(cctx)
	ccancel()
	if err != nil {
		return fail("wait for the settler", err)
	}
	liveIDs := make([]string, 0, len(live))
	for _, c := range live {
		rb, err := r.rebuildCampaign(wctx, c.id, token, runID)
		if err != nil {
			return fail("rebuild campaign "+c.id, err)
		}
		out.Campaigns = append(out.Campaigns, rb)
		out.Spent += rb.Spent
		out.Released += rb.Released
		liveIDs = append(liveIDs, c.id)
	}
	// Campaigns that are not live have no claims in flight and no voucher left to
	// expire: their share of the business line is final in the books.
	var restValue, restReleased int64
	err = r.pg.QueryRow(wctx, `SELECT
		  (SELECT coalesce(sum(value), 0) FROM claims WHERE business_line = $1 AND campaign_id <> ALL($2)),
		  (SELECT coalesce(sum(amount), 0) FROM budget_ledger WHERE business_line = $1 AND kind = 'release' AND campaign_id <> ALL($2))`,
		bl, liveIDs).Scan(&restValue, &restReleased)
	if err != nil {
		return fail("sum settled campaigns", err)
	}
	out.Spent += restValue - restReleased
	out.Released += restReleased
	// The budget again, now: an admin PUT that committed after the first read ran its
	// Redis step before the fence (which then deleted it) or after (budget_next, which
	// unfence.lua prefers).
	if err := r.pg.QueryRow(wctx, `SELECT budget FROM business_lines WHERE id = $1`, bl).Scan(&budget); err != nil {
		return fail("read budget", err)
	}
	done, err := scripts.Unfence.Run(wctx, r.rdb, []string{lock, rkeys.BusinessLine(bl)}, token, budget, out.Spent, out.Released).Int()
	if err != nil {
		return fail("unfence", err)
	}
	if done != 1 {
		return fail("unfence", errors.New("the recovery lock was lost"))
	}
	out.Took = r.now().Sub(start)
	r.m.recoveries.WithLabelValues("done").Inc()
	r.m.seconds.Observe(out.Took.Seconds())
	r.log.Warn("business line rebuilt and accepting again", "business_line", bl, "campaigns", len(live),
		"spent", out.Spent, "took", out.Took)
	return out, nil
}

func (r *Recoverer) keepLease(ctx context.Context, cancel context.CancelCauseFunc, lock, token string) {
	t := time.NewTicker(r.cfg.LockTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, err := scripts.Lease.Run(ctx, r.rdb, []string{lock}, token, r.cfg.LockTTL.Milliseconds()).Int()
		if ctx.Err() != nil {
			return
		}
		if err == nil && ok == 0 {
			cancel(errors.New("recovery lock lost"))
			return
		}
	}
}

type metrics struct {
	detected   *prometheus.CounterVec
	recoveries *prometheus.CounterVec
	fenced     prometheus.Gauge
	seconds    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		detected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashgate_recovery_detected_total",
			Help: "Redis state found lost or stale, by reason: lost (campaign keys missing), restarted (Redis run id changed), interrupted (a recovery did not finish), budget_missing (business line hash incomplete), risk_state (risk rules and blocks rebuilt from Postgres).",
		}, []string{"reason"}),
		recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashgate_recovery_runs_total",
			Help: "Business-line recoveries, by result: done (counters rebuilt, accepting again) or failed (still fenced; retried next pass).",
		}, []string{"result"}),
		fenced: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flashgate_recovery_fenced_business_lines",
			Help: "Business lines this process is rebuilding right now (their campaigns answer 503).",
		}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flashgate_recovery_seconds", Help: "Time from fence to unfence of one business-line recovery.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.detected, m.recoveries, m.fenced, m.seconds)
	}
	return m
}
