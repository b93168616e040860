// Package verify owns bench's proof of guarantees 1-4 of the contract after a run:
// once settlement has caught up (the campaign's inflight hash in Redis is empty) it
// checks Postgres against bench's own record of every 200, against the campaign's
// definition and against Redis's live counters - nothing oversold or over budget,
// every accepted claim a row exactly once, one ledger reservation per claim, nobody
// over the per-user limit, no request_id answered only 503 a row. Each check reports
// PASS or FAIL with its numbers.
package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/bench/record"
	"github.com/flashgate/flashgate/bench/traffic"
	"github.com/flashgate/flashgate/internal/rkeys"
)

// Guarantees of CONTRACT.md the checks prove: 1 no oversell, 2 nothing accepted is
// lost, 3 exactly once in effect, 4 fail closed (a 503 took nothing).
const (
	G1 = "1"
	G2 = "2"
	G3 = "3"
	G4 = "4"
)

// Config says what to verify.
type Config struct {
	Campaign string
	// Record is bench's record of 200s and 503s (nil: the record checks are skipped and
	// say so).
	Record []record.Entry
	// Wait bounds how long to wait for settlement (default 60s); Poll is how often the
	// inflight hash is looked at (default 200ms).
	Wait, Poll time.Duration
	// Schema, if set, reads the tables from that Postgres schema instead of the search
	// path: verify a restored backup or a copy without touching the live tables.
	Schema string
	// Examples is how many offending ids a failed check lists (default 5).
	Examples int
}

// Check is one verified property.
type Check struct {
	Name      string   `json:"name"`
	Guarantee string   `json:"guarantee"`
	Pass      bool     `json:"pass"`
	Detail    string   `json:"detail"`
	Examples  []string `json:"examples,omitempty"`
}

// Report is the outcome of a verification.
type Report struct {
	Campaign     string  `json:"campaign"`
	BusinessLine string  `json:"business_line"`
	Held         bool    `json:"held"`
	SettledAfter float64 `json:"settled_after_s"`
	Rows         int64   `json:"rows"`
	Recorded     int     `json:"recorded_claims"`
	// Draws and RecordedDraws are a lottery's: draws rows in Postgres, and draw_ids
	// (won or no prize) in bench's record (lottery.go).
	Draws         int64    `json:"draws,omitempty"`
	RecordedDraws int      `json:"recorded_draws,omitempty"`
	Checks        []Check  `json:"checks"`
	Notes         []string `json:"notes,omitempty"`
}

// ErrUnknownCampaign is returned when the campaign is not in Postgres.
var ErrUnknownCampaign = errors.New("verify: unknown campaign")

type sku struct {
	stock, value                int64
	rows, expired, sum, liveSum int64
	redisTaken, redisStock      int64
	redisFound                  bool
}

type verifier struct {
	cfg   Config
	rdb   *redis.Client
	pg    *pgxpool.Pool
	rep   *Report
	table map[string]string

	bl               string
	kind             string
	budget, blBudget int64
	limit            int64
	recycle          bool
	skus             map[string]*sku
}

// Run waits for settlement and runs every check. It returns an error only when it
// cannot check (a store unreachable, an unknown campaign); a broken guarantee is a
// failed Check in the report.
func Run(ctx context.Context, rdb *redis.Client, pg *pgxpool.Pool, cfg Config) (*Report, error) {
	if !traffic.ValidID(cfg.Campaign) {
		return nil, fmt.Errorf("verify: campaign %q: must be 1-64 characters of [A-Za-z0-9._:-]", cfg.Campaign)
	}
	if cfg.Wait == 0 {
		cfg.Wait = 60 * time.Second
	}
	if cfg.Poll == 0 {
		cfg.Poll = 200 * time.Millisecond
	}
	if cfg.Examples == 0 {
		cfg.Examples = 5
	}
	if cfg.Wait < 0 || cfg.Poll < 0 {
		return nil, fmt.Errorf("verify: wait %s, poll %s: must not be negative", cfg.Wait, cfg.Poll)
	}
	v := &verifier{cfg: cfg, rdb: rdb, pg: pg, rep: &Report{Campaign: cfg.Campaign}, table: map[string]string{}}
	for _, t := range []string{"claims", "campaigns", "campaign_skus", "business_lines", "budget_ledger", "draws",
		"points_ledger", "points_lots", "points_tasks"} {
		if cfg.Schema != "" {
			v.table[t] = pgx.Identifier{cfg.Schema, t}.Sanitize()
		} else {
			v.table[t] = pgx.Identifier{t}.Sanitize()
		}
	}
	if err := v.load(ctx); err != nil {
		return nil, err
	}
	steps := []func(context.Context) error{
		v.settled, v.counts, v.recordInPostgres, v.recordConsistent, v.only503, v.unique, v.stock,
		v.redisMatches, v.budgets, v.ledger, v.perUser, v.lottery, v.points, // points.go
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	v.rep.Held = true
	for _, c := range v.rep.Checks {
		if !c.Pass {
			v.rep.Held = false
		}
	}
	return v.rep, nil
}

// q substitutes table names written as {claims} into a query.
func (v *verifier) q(sql string) string {
	for name, ident := range v.table {
		sql = strings.ReplaceAll(sql, "{"+name+"}", ident)
	}
	return sql
}

func (v *verifier) add(c Check) { v.rep.Checks = append(v.rep.Checks, c) }

func (v *verifier) load(ctx context.Context) error {
	err := v.pg.QueryRow(ctx, v.q(`SELECT business_line, budget, per_user_limit, recycle_stock, kind FROM {campaigns} WHERE id = $1`),
		v.cfg.Campaign).Scan(&v.bl, &v.budget, &v.limit, &v.recycle, &v.kind)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w %q (not in Postgres table %s)", ErrUnknownCampaign, v.cfg.Campaign, v.table["campaigns"])
	}
	if err != nil {
		return fmt.Errorf("verify: load campaign %s: %w", v.cfg.Campaign, err)
	}
	v.rep.BusinessLine = v.bl
	if err := v.pg.QueryRow(ctx, v.q(`SELECT budget FROM {business_lines} WHERE id = $1`), v.bl).Scan(&v.blBudget); err != nil {
		return fmt.Errorf("verify: load business line %s: %w", v.bl, err)
	}
	rows, err := v.pg.Query(ctx, v.q(`SELECT sku, stock, value FROM {campaign_skus} WHERE campaign_id = $1`), v.cfg.Campaign)
	if err != nil {
		return fmt.Errorf("verify: load skus: %w", err)
	}
	defer rows.Close()
	v.skus = map[string]*sku{}
	for rows.Next() {
		var name string
		s := &sku{}
		if err := rows.Scan(&name, &s.stock, &s.value); err != nil {
			return fmt.Errorf("verify: load skus: %w", err)
		}
		v.skus[name] = s
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("verify: load skus: %w", err)
	}
	return nil
}

func (v *verifier) settled(ctx context.Context) error {
	start := time.Now()
	key := rkeys.Inflight(v.cfg.Campaign)
	var n int64
	for {
		var err error
		n, err = v.rdb.HLen(ctx, key).Result()
		if err != nil {
			return fmt.Errorf("verify: redis HLEN %s: %w", key, err)
		}
		if n == 0 || time.Since(start) >= v.cfg.Wait {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("verify: waiting for settlement: %w", ctx.Err())
		case <-time.After(v.cfg.Poll):
		}
	}
	if n == 0 && v.isLottery() {
		// A no-prize draw has no inflight field (DESIGN.md "Lottery"): wait, within the
		// same bound, for the draws rows to catch up with the draws Redis counted.
		if err := v.drawsSettled(ctx, start); err != nil {
			return err
		}
	}
	v.rep.SettledAfter = time.Since(start).Seconds()
	c := Check{Name: "settled", Guarantee: G2, Pass: n == 0}
	if n == 0 {
		c.Detail = fmt.Sprintf("no claim in flight (caught up after %.1fs)", v.rep.SettledAfter)
	} else {
		c.Detail = fmt.Sprintf("%d accepted claims still not in Postgres after %s (is the settler running?)", n, v.cfg.Wait)
		ids, _ := v.rdb.HKeys(ctx, key).Result()
		c.Examples = firstN(ids, v.cfg.Examples)
	}
	v.add(c)
	return nil
}

func (v *verifier) counts(ctx context.Context) error {
	rows, err := v.pg.Query(ctx, v.q(`SELECT sku, count(*), count(*) FILTER (WHERE state = 'expired'),
		coalesce(sum(value), 0), coalesce(sum(value) FILTER (WHERE state <> 'expired'), 0)
		FROM {claims} WHERE campaign_id = $1 GROUP BY sku`), v.cfg.Campaign)
	if err != nil {
		return fmt.Errorf("verify: count claims: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var n, exp, sum, live int64
		if err := rows.Scan(&name, &n, &exp, &sum, &live); err != nil {
			return fmt.Errorf("verify: count claims: %w", err)
		}
		s, ok := v.skus[name]
		if !ok {
			// Rows of a SKU the campaign does not have: stock 0, so any row oversells.
			s = &sku{}
			v.skus[name] = s
		}
		s.rows, s.expired, s.sum, s.liveSum = n, exp, sum, live
		v.rep.Rows += n
	}
	return rows.Err()
}

func (v *verifier) recordInPostgres(ctx context.Context) error {
	if v.cfg.Record == nil {
		v.rep.Notes = append(v.rep.Notes, "no record given (--record DIR): the checks against bench's own record of 200s were skipped")
		return nil
	}
	type want struct {
		e    *record.Entry
		seen int
		bad  string
	}
	wants := map[string]*want{}
	other := 0
	for i := range v.cfg.Record {
		e := &v.cfg.Record[i]
		if e.Campaign != "" && e.Campaign != v.cfg.Campaign {
			other++
			continue
		}
		if e.Is503() || e.IsNoPrize() {
			continue // no claim: only503 and the lottery's draw checks (lottery.go) check these
		}
		if _, ok := wants[e.ClaimID]; !ok {
			wants[e.ClaimID] = &want{e: e}
		}
	}
	if other > 0 {
		v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("%d record entries belong to other campaigns and were ignored", other))
	}
	v.rep.Recorded = len(wants)
	rows, err := v.pg.Query(ctx, v.q(`SELECT claim_id, request_id, user_id, sku, value FROM {claims} WHERE campaign_id = $1`), v.cfg.Campaign)
	if err != nil {
		return fmt.Errorf("verify: read claims: %w", err)
	}
	defer rows.Close()
	var notInRecord int64
	for rows.Next() {
		var id, req, user, s string
		var value int64
		if err := rows.Scan(&id, &req, &user, &s, &value); err != nil {
			return fmt.Errorf("verify: read claims: %w", err)
		}
		w, ok := wants[id]
		if !ok {
			notInRecord++
			continue
		}
		w.seen++
		if e := w.e; e.RequestID != req || e.User != user || e.SKU != s || (e.Value != 0 && e.Value != value) {
			w.bad = fmt.Sprintf("%s: answered (%s, %s, %s, %d), row (%s, %s, %s, %d)", id, e.RequestID, e.User, e.SKU, e.Value, req, user, s, value)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("verify: read claims: %w", err)
	}
	var missing, dup, bad []string
	for id, w := range wants {
		switch {
		case w.seen == 0:
			missing = append(missing, id)
		case w.seen > 1:
			dup = append(dup, id+" ×"+strconv.Itoa(w.seen))
		case w.bad != "":
			bad = append(bad, w.bad)
		}
	}
	sort.Strings(missing)
	sort.Strings(dup)
	sort.Strings(bad)
	c := Check{Name: "every 200 is one row", Guarantee: G2 + "," + G3, Pass: len(missing)+len(dup)+len(bad) == 0,
		Detail: fmt.Sprintf("%d claim_ids answered 200: %d rows exactly once, %d missing, %d duplicated, %d differ from the answer",
			len(wants), len(wants)-len(missing)-len(dup)-len(bad), len(missing), len(dup), len(bad))}
	c.Examples = firstN(append(append(prefix("missing ", missing), prefix("duplicated ", dup)...), prefix("differs ", bad)...), v.cfg.Examples)
	v.add(c)
	if notInRecord > 0 {
		v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("%d rows have no 200 in the record: claims whose answer bench never saw "+
			"(timeouts, other clients, other runs against the campaign) - not a violation by itself", notInRecord))
	}
	return nil
}

// recordConsistent: within bench's own record, one request_id has one claim_id (a
// replay returns the same claim) and one claim_id belongs to one request_id.
func (v *verifier) recordConsistent(context.Context) error {
	if v.cfg.Record == nil {
		return nil
	}
	// A lottery's no-prize draw is keyed by its draw_id (a won draw's draw_id is its
	// claim_id), and a retry must get the same result as well as the same id.
	byReq, byClaim := map[string]string{}, map[string]string{}
	var bad []string
	answers := 0
	for _, e := range v.cfg.Record {
		if (e.Campaign != "" && e.Campaign != v.cfg.Campaign) || e.Is503() {
			continue
		}
		answers++
		id := e.ClaimID
		if e.IsNoPrize() {
			id = e.DrawID
		}
		answer := id
		if e.Result != "" {
			answer = id + " (" + e.Result + ")"
		}
		if c, ok := byReq[e.RequestID]; ok && c != answer {
			bad = append(bad, "request_id "+e.RequestID+" got claims "+c+" and "+answer)
		}
		if r, ok := byClaim[id]; ok && r != e.RequestID {
			bad = append(bad, "claim_id "+id+" answered to request_ids "+r+" and "+e.RequestID)
		}
		byReq[e.RequestID], byClaim[id] = answer, e.RequestID
	}
	v.add(Check{Name: "retries got the same claim", Guarantee: G3, Pass: len(bad) == 0,
		Detail:   fmt.Sprintf("%d answers for %d request_ids, %d inconsistent", answers, len(byReq), len(bad)),
		Examples: firstN(bad, v.cfg.Examples)})
	return nil
}

// only503: a request_id bench was answered 503 for, and never 200, is not a row: a 503
// means nothing was taken (CONTRACT.md guarantee 4). A request_id answered 503 and then
// 200 on a retry is the 200's, checked above.
func (v *verifier) only503(ctx context.Context) error {
	if v.cfg.Record == nil {
		return nil
	}
	got200 := map[string]bool{}
	unavailable := map[string]bool{}
	for _, e := range v.cfg.Record {
		if e.Campaign != "" && e.Campaign != v.cfg.Campaign {
			continue
		}
		if e.Is503() {
			unavailable[e.RequestID] = true
		} else {
			got200[e.RequestID] = true
		}
	}
	only := make([]string, 0, len(unavailable))
	for id := range unavailable {
		if !got200[id] {
			only = append(only, id)
		}
	}
	var rows []string
	if len(only) > 0 {
		r, err := v.pg.Query(ctx, v.q(`SELECT request_id, claim_id FROM {claims} WHERE campaign_id = $1 AND request_id = ANY($2) ORDER BY request_id`),
			v.cfg.Campaign, only)
		if err != nil {
			return fmt.Errorf("verify: read claims of 503s: %w", err)
		}
		defer r.Close()
		for r.Next() {
			var req, id string
			if err := r.Scan(&req, &id); err != nil {
				return fmt.Errorf("verify: read claims of 503s: %w", err)
			}
			rows = append(rows, "request_id "+req+" answered only 503 is row "+id)
		}
		if err := r.Err(); err != nil {
			return fmt.Errorf("verify: read claims of 503s: %w", err)
		}
	}
	if len(only) > 0 && v.isLottery() {
		r, err := v.pg.Query(ctx, v.q(`SELECT request_id, draw_id FROM {draws} WHERE campaign_id = $1 AND request_id = ANY($2) ORDER BY request_id`),
			v.cfg.Campaign, only)
		if err != nil {
			return fmt.Errorf("verify: read draws of 503s: %w", err)
		}
		defer r.Close()
		for r.Next() {
			var req, id string
			if err := r.Scan(&req, &id); err != nil {
				return fmt.Errorf("verify: read draws of 503s: %w", err)
			}
			rows = append(rows, "request_id "+req+" answered only 503 is draw "+id)
		}
		if err := r.Err(); err != nil {
			return fmt.Errorf("verify: read draws of 503s: %w", err)
		}
	}
	v.add(Check{Name: "no 503 became a row", Guarantee: G4, Pass: len(rows) == 0,
		Detail:   fmt.Sprintf("%d request_ids answered only 503: %d of them rows", len(only), len(rows)),
		Examples: firstN(rows, v.cfg.Examples)})
	return nil
}

// unique: no claim_id and no (campaign, request_id) twice in the books. The live schema
// enforces both with keys; the check still runs because a copy or a restore may not.
func (v *verifier) unique(ctx context.Context) error {
	for _, col := range []string{"claim_id", "request_id"} {
		ex, n, err := v.groups(ctx, `SELECT `+col+`, count(*) FROM {claims} WHERE campaign_id = $1 GROUP BY 1 HAVING count(*) > 1`, v.cfg.Campaign)
		if err != nil {
			return err
		}
		v.add(Check{Name: col + " unique", Guarantee: G3, Pass: n == 0,
			Detail: fmt.Sprintf("%d %ss appear in more than one row", n, col), Examples: ex})
	}
	return nil
}

// groups runs a "key, count" query and returns up to Examples "key ×count" and the
// number of groups.
func (v *verifier) groups(ctx context.Context, sql string, args ...any) ([]string, int, error) {
	rows, err := v.pg.Query(ctx, v.q(sql), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("verify: %w", err)
	}
	defer rows.Close()
	var ex []string
	n := 0
	for rows.Next() {
		var k string
		var c int64
		if err := rows.Scan(&k, &c); err != nil {
			return nil, 0, fmt.Errorf("verify: %w", err)
		}
		if n < v.cfg.Examples {
			ex = append(ex, k+" ×"+strconv.FormatInt(c, 10))
		}
		n++
	}
	return ex, n, rows.Err()
}

func (v *verifier) names() []string {
	var out []string
	for n := range v.skus {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (v *verifier) stock(context.Context) error {
	c := Check{Name: "stock per SKU", Guarantee: G1, Pass: true}
	var parts []string
	for _, n := range v.names() {
		s := v.skus[n]
		// With recycle_stock an expired voucher's unit goes back on sale, so the bound
		// is on the vouchers still alive.
		held := s.rows
		if v.recycle {
			held = s.rows - s.expired
		}
		parts = append(parts, fmt.Sprintf("%s %d/%d", n, held, s.stock))
		if held > s.stock {
			c.Pass = false
			c.Examples = append(c.Examples, fmt.Sprintf("%s: %d rows, stock %d (oversold by %d)", n, held, s.stock, held-s.stock))
		}
	}
	c.Detail = "rows/stock: " + strings.Join(parts, ", ")
	if v.recycle {
		c.Detail += " (recycle_stock: expired vouchers not counted)"
	}
	v.add(c)
	return nil
}

func (v *verifier) redisMatches(ctx context.Context) error {
	names := v.names()
	pipe := v.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(names))
	for i, n := range names {
		cmds[i] = pipe.HMGet(ctx, rkeys.SKU(v.cfg.Campaign, n), "taken", "stock")
	}
	meta := pipe.HMGet(ctx, rkeys.Meta(v.cfg.Campaign), "spent", "taken")
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("verify: redis counters: %w", err)
	}
	c := Check{Name: "Redis counters = rows", Guarantee: G1 + "," + G2, Pass: true}
	var parts []string
	var total int64
	for i, n := range names {
		s := v.skus[n]
		vals := cmds[i].Val()
		if len(vals) == 2 && vals[0] != nil {
			s.redisFound = true
			s.redisTaken = asInt(vals[0])
			s.redisStock = asInt(vals[1])
		}
		total += s.rows
		// Taken counts live claims; if expiry gives units back the count may drop by
		// the expired rows, so either reading is consistent.
		ok := s.redisFound && (s.redisTaken == s.rows || s.redisTaken == s.rows-s.expired)
		parts = append(parts, fmt.Sprintf("%s taken %d rows %d", n, s.redisTaken, s.rows))
		if !ok {
			c.Pass = false
			if !s.redisFound {
				c.Examples = append(c.Examples, n+": no live counters in Redis")
			} else if s.redisTaken > s.rows {
				c.Examples = append(c.Examples, fmt.Sprintf("%s: Redis took %d but only %d are rows (claims lost?)", n, s.redisTaken, s.rows))
			} else {
				c.Examples = append(c.Examples, fmt.Sprintf("%s: %d rows but Redis took only %d (rows it never decided)", n, s.rows, s.redisTaken))
			}
		}
	}
	if mv := meta.Val(); len(mv) == 2 && mv[0] != nil {
		var live int64
		for _, s := range v.skus {
			live += s.liveSum
		}
		spent := asInt(mv[0])
		var sum int64
		for _, s := range v.skus {
			sum += s.sum
		}
		parts = append(parts, fmt.Sprintf("spent %d rows' value %d", spent, sum))
		if spent != sum && spent != live {
			c.Pass = false
			c.Examples = append(c.Examples, fmt.Sprintf("campaign spent %d in Redis, rows hold %d", spent, sum))
		}
	}
	c.Detail = strings.Join(parts, "; ")
	v.add(c)
	return nil
}

func (v *verifier) budgets(ctx context.Context) error {
	var sum, live int64
	for _, s := range v.skus {
		sum += s.sum
		live += s.liveSum
	}
	// Committed money is what unexpired vouchers hold: an expired voucher's value went
	// back to the budget (budget recovery) and may be handed out again.
	c := Check{Name: "campaign budget", Guarantee: G1, Pass: live <= v.budget,
		Detail: fmt.Sprintf("committed %d of budget %d (face value of all rows %d)", live, v.budget, sum)}
	if !c.Pass {
		c.Examples = []string{fmt.Sprintf("over budget by %d", live-v.budget)}
	}
	v.add(c)
	var blLive, blRows int64
	if err := v.pg.QueryRow(ctx, v.q(`SELECT coalesce(sum(value) FILTER (WHERE state <> 'expired'), 0), count(*) FROM {claims} WHERE business_line = $1`),
		v.bl).Scan(&blLive, &blRows); err != nil {
		return fmt.Errorf("verify: business line sum: %w", err)
	}
	c = Check{Name: "business-line budget", Guarantee: G1, Pass: blLive <= v.blBudget,
		Detail: fmt.Sprintf("%s: committed %d of budget %d over %d rows of all its campaigns", v.bl, blLive, v.blBudget, blRows)}
	if !c.Pass {
		c.Examples = []string{fmt.Sprintf("over budget by %d", blLive-v.blBudget)}
	}
	v.add(c)
	return nil
}

func (v *verifier) ledger(ctx context.Context) error {
	var nRes, sumRes, nRel, sumRel int64
	if err := v.pg.QueryRow(ctx, v.q(`SELECT count(*) FILTER (WHERE kind = 'reserve'), coalesce(sum(amount) FILTER (WHERE kind = 'reserve'), 0),
		count(*) FILTER (WHERE kind = 'release'), coalesce(sum(amount) FILTER (WHERE kind = 'release'), 0)
		FROM {budget_ledger} WHERE campaign_id = $1`), v.cfg.Campaign).Scan(&nRes, &sumRes, &nRel, &sumRel); err != nil {
		return fmt.Errorf("verify: ledger totals: %w", err)
	}
	// Every claim has exactly one reservation of exactly its value...
	ex, bad, err := v.groups(ctx, `SELECT c.claim_id, coalesce(l.n, 0) FROM {claims} c
		LEFT JOIN (SELECT claim_id, count(*) AS n, sum(amount) AS a FROM {budget_ledger}
		           WHERE campaign_id = $1 AND kind = 'reserve' GROUP BY claim_id) l ON l.claim_id = c.claim_id
		WHERE c.campaign_id = $1 AND (l.n IS NULL OR l.n <> 1 OR l.a <> c.value)`, v.cfg.Campaign)
	if err != nil {
		return err
	}
	// ...and no movement points at a claim that is not a row.
	ex2, orphans, err := v.groups(ctx, `SELECT l.claim_id, count(*) FROM {budget_ledger} l
		WHERE l.campaign_id = $1 AND NOT EXISTS (SELECT 1 FROM {claims} c WHERE c.claim_id = l.claim_id) GROUP BY 1`, v.cfg.Campaign)
	if err != nil {
		return err
	}
	var sum, expired int64
	for _, s := range v.skus {
		sum += s.sum
		expired += s.expired
	}
	c := Check{Name: "ledger: one reservation per claim", Guarantee: G3,
		Pass: bad == 0 && orphans == 0 && nRes == v.rep.Rows && sumRes == sum && nRel <= expired,
		Detail: fmt.Sprintf("reserve rows %d (sum %d) for %d claims (sum %d); releases %d (sum %d) for %d expired; %d claims without exactly one matching reservation; %d movements without a claim",
			nRes, sumRes, v.rep.Rows, sum, nRel, sumRel, expired, bad, orphans)}
	c.Examples = firstN(append(prefix("claim ", ex), prefix("orphan ", ex2)...), v.cfg.Examples)
	v.add(c)
	return nil
}

func (v *verifier) perUser(ctx context.Context) error {
	ex, n, err := v.groups(ctx, `SELECT user_id, count(*) FROM {claims} WHERE campaign_id = $1 GROUP BY 1 HAVING count(*) > $2 ORDER BY 2 DESC`,
		v.cfg.Campaign, v.limit)
	if err != nil {
		return err
	}
	var users int64
	if err := v.pg.QueryRow(ctx, v.q(`SELECT count(DISTINCT user_id) FROM {claims} WHERE campaign_id = $1`), v.cfg.Campaign).Scan(&users); err != nil {
		return fmt.Errorf("verify: users: %w", err)
	}
	v.add(Check{Name: "per-user limit", Guarantee: G1, Pass: n == 0,
		Detail:   fmt.Sprintf("%d users hold claims; %d above the limit of %d", users, n, v.limit),
		Examples: ex})
	return nil
}

func asInt(x any) int64 {
	switch t := x.(type) {
	case string:
		n, _ := strconv.ParseInt(t, 10, 64)
		return n
	case int64:
		return t
	}
	return 0
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func prefix(p string, s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = p + x
	}
	return out
}

// Print writes the report for a person: one line per check, the offending examples
// under a failed one, and the verdict last.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "verify %s (business line %s): %d rows, %d claim_ids in bench's record, settled after %.1fs\n",
		r.Campaign, r.BusinessLine, r.Rows, r.Recorded, r.SettledAfter)
	if r.Draws > 0 || r.RecordedDraws > 0 {
		fmt.Fprintf(w, "  lottery: %d draws rows, %d draws in bench's record\n", r.Draws, r.RecordedDraws)
	}
	failed := 0
	for _, c := range r.Checks {
		mark := "PASS"
		if !c.Pass {
			mark = "FAIL"
			failed++
		}
		fmt.Fprintf(w, "  %s  %-34s [G%s] %s\n", mark, c.Name, c.Guarantee, c.Detail)
		if !c.Pass {
			for _, e := range c.Examples {
				fmt.Fprintf(w, "          %s\n", e)
			}
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	if r.Held {
		fmt.Fprintf(w, "guarantees 1-3 held: %d checks passed\n", len(r.Checks))
	} else {
		fmt.Fprintf(w, "GUARANTEE VIOLATED: %d of %d checks failed\n", failed, len(r.Checks))
	}
}
