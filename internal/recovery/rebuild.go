package recovery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// inFlight is an outbox entry: an accepted claim that may not be a row yet.
type inFlight struct {
	claimID, requestID, sku, user string
	channel                       string // "" for the app
	code                          string // the partner code it took ("" none)
	value                         int64
}

// readOutbox reads a campaign's whole outbox, a page at a time. Its size is bounded by
// the campaign's stock (settler/relay documents the bound).
func readOutbox(ctx context.Context, rdb *redis.Client, campaign string) ([]inFlight, error) {
	var out []inFlight
	start := "-"
	for {
		msgs, err := rdb.XRangeN(ctx, rkeys.Outbox(campaign), start, "+", 1000).Result()
		if err != nil {
			return nil, fmt.Errorf("read outbox of %s: %w", campaign, err)
		}
		for _, m := range msgs {
			r := claim.FromOutbox(campaign, m.ID, m.Values)
			out = append(out, inFlight{claimID: r.ClaimID, requestID: r.RequestID, sku: r.SKU, user: r.UserID, channel: r.Channel, code: r.Code, value: r.Value})
		}
		if len(msgs) < 1000 {
			return out, nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

type skuBook struct {
	sku                             string
	total, value, rows, expired, rc int64
}

// rebuildCampaign writes one campaign's counters back from the books. The business line
// is fenced and the settler has caught up, so the only claims that can still become rows
// are the ones in the outbox; reading the outbox first and the books second (one
// snapshot) counts each accepted claim exactly once: a claim committed in between is a
// row in the snapshot and is not counted as in flight.
func (r *Recoverer) rebuildCampaign(ctx context.Context, campaign, token, runID string) (Rebuilt, error) {
	out := Rebuilt{Campaign: campaign}
	outbox, err := readOutbox(ctx, r.rdb, campaign)
	if err != nil {
		return out, err
	}
	usersNew, releasedNew := usersRebuild(campaign), releasedRebuild(campaign)
	if err := r.rdb.Del(ctx, usersNew, releasedNew).Err(); err != nil {
		return out, fmt.Errorf("clear rebuild copies: %w", err)
	}

	tx, err := r.pg.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return out, fmt.Errorf("read books: %w", err)
	}
	defer tx.Rollback(ctx)

	var (
		bl, seg                 string
		segPtr                  *string
		starts, ends            time.Time
		limit, budget, ttlMs    int64
		paused, recycle         bool
		rowsValue, releasedBook int64
	)
	err = tx.QueryRow(ctx, `SELECT business_line, starts_at, ends_at, per_user_limit, budget, voucher_ttl_ms,
			paused, segment, recycle_stock FROM campaigns WHERE id = $1`, campaign).
		Scan(&bl, &starts, &ends, &limit, &budget, &ttlMs, &paused, &segPtr, &recycle)
	if err != nil {
		return out, fmt.Errorf("read campaign: %w", err)
	}
	if segPtr != nil {
		seg = *segPtr
	}
	rows, err := tx.Query(ctx, `SELECT s.sku, s.stock, s.value, count(cl.claim_id),
			count(cl.claim_id) FILTER (WHERE cl.state = 'expired')
		FROM campaign_skus s LEFT JOIN claims cl ON cl.campaign_id = s.campaign_id AND cl.sku = s.sku
		WHERE s.campaign_id = $1 GROUP BY s.sku, s.stock, s.value ORDER BY s.sku`, campaign)
	if err != nil {
		return out, fmt.Errorf("read skus: %w", err)
	}
	var skus []skuBook
	for rows.Next() {
		var s skuBook
		if err := rows.Scan(&s.sku, &s.total, &s.value, &s.rows, &s.expired); err != nil {
			return out, fmt.Errorf("read skus: %w", err)
		}
		if recycle {
			// Expiry recycled exactly the expired claims' units (release.lua does it in
			// the step that gives the budget back, before the row turns expired).
			s.rc = s.expired
		}
		skus = append(skus, s)
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("read skus: %w", err)
	}
	err = tx.QueryRow(ctx, `SELECT count(*), coalesce(sum(value), 0),
			(SELECT coalesce(sum(amount), 0) FROM budget_ledger WHERE campaign_id = $1 AND kind = 'release')
		FROM claims WHERE campaign_id = $1`, campaign).Scan(&out.Rows, &rowsValue, &releasedBook)
	if err != nil {
		return out, fmt.Errorf("read totals: %w", err)
	}

	kind, err := readKind(ctx, tx, campaign)
	if err != nil {
		return out, fmt.Errorf("read kind and odds: %w", err)
	}

	// Which outbox entries are rows already (committed, cleanup not yet done): a claims
	// row, or the draws row of a lottery draw that won nothing (lottery.go).
	committed := map[string]bool{}
	if len(outbox) > 0 {
		ids := make([]string, len(outbox))
		for i, f := range outbox {
			ids[i] = f.claimID
		}
		crow, err := tx.Query(ctx, `SELECT claim_id FROM claims WHERE claim_id = ANY($1)
			UNION ALL SELECT draw_id FROM draws WHERE draw_id = ANY($1) AND outcome = 'no_prize'`, ids)
		if err != nil {
			return out, fmt.Errorf("read committed outbox claims: %w", err)
		}
		for crow.Next() {
			var id string
			if err := crow.Scan(&id); err != nil {
				return out, err
			}
			committed[id] = true
		}
		if err := crow.Err(); err != nil {
			return out, err
		}
	}

	// Per-user counts of rows, into the rebuilt copy: claims, and the lottery draws that
	// won nothing (a won draw is a claims row), since every draw counts against
	// per_user_limit.
	if err := r.loadHash(ctx, tx, usersNew, `SELECT user_id, sum(n)::bigint FROM (
			SELECT user_id, count(*) AS n FROM claims WHERE campaign_id = $1 GROUP BY user_id
			UNION ALL
			SELECT user_id, count(*) FROM draws WHERE campaign_id = $1 AND outcome = 'no_prize' GROUP BY user_id
		) AS rows GROUP BY user_id`, campaign); err != nil {
		return out, fmt.Errorf("load per-user counts: %w", err)
	}
	// Released claim ids, into the rebuilt copy of the once-only guard.
	if err := r.loadSet(ctx, tx, releasedNew, `SELECT claim_id FROM budget_ledger WHERE campaign_id = $1 AND kind = 'release'`, campaign); err != nil {
		return out, fmt.Errorf("load released set: %w", err)
	}
	// Idempotency records of the rows, where Redis lost them: a retry of an accepted
	// request_id must get its claim back (a no-prize draw its draw), never be decided
	// again.
	n, err := r.restoreRecords(ctx, tx, campaign, ends)
	if err != nil {
		return out, fmt.Errorf("restore idempotency records: %w", err)
	}
	out.Records = n
	if seg != "" {
		if err := r.restoreSegment(ctx, tx, seg); err != nil {
			return out, fmt.Errorf("restore segment %s: %w", seg, err)
		}
	}
	pq, err := readPartnerBooks(ctx, tx, campaign)
	if err != nil {
		return out, fmt.Errorf("read partner quotas: %w", err)
	}
	prices, err := readPointsPrices(ctx, tx, campaign)
	if err != nil {
		return out, fmt.Errorf("read points prices: %w", err)
	}
	// Partner code pools, still fenced and before rebuild.lua lifts the fence, so no
	// claim of a pool SKU runs without its pool (DESIGN.md "Partner code pools").
	pools, err := r.rebuildPools(ctx, tx, campaign, outbox)
	if err != nil {
		return out, fmt.Errorf("rebuild code pools: %w", err)
	}
	out.Codes = pools
	escrows, err := readPushEscrows(ctx, tx, campaign, skus)
	if err != nil {
		return out, fmt.Errorf("read push escrows: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return out, fmt.Errorf("read books: %w", err)
	}

	keys := []string{rkeys.Meta(campaign), rkeys.SKUs(campaign), rkeys.Users(campaign), usersNew,
		Released(campaign), releasedNew, rkeys.Campaigns, rkeys.Inflight(campaign)}
	paused01 := "0"
	if paused {
		paused01 = "1"
	}
	args := []any{token, campaign, runID, bl, starts.UnixMilli(), ends.UnixMilli(), limit, budget, ttlMs, paused01, seg,
		out.Rows, rowsValue, releasedBook, len(skus)}
	for _, s := range skus {
		keys = append(keys, rkeys.SKU(campaign, s.sku))
		args = append(args, s.sku, s.total, s.value, s.rows, s.rc)
	}
	// The outbox entries not yet rows. A lottery draw that won nothing (no SKU, value 0)
	// took only its user's count: it is counted here (lottery.go), not by rebuild.lua,
	// which would add it to the campaign's taken.
	var infl, noPrize []inFlight
	for _, f := range outbox {
		switch {
		case committed[f.claimID]:
		case kind.lottery() && f.sku == "" && f.value == 0:
			noPrize = append(noPrize, f)
		default:
			infl = append(infl, f)
		}
	}
	if err := r.countNoPrizeInFlight(ctx, campaign, usersNew, noPrize); err != nil {
		return out, err
	}
	// The kind and a lottery's odds before the meta is unfenced (lottery.go).
	if err := writeKind(ctx, r.rdb, campaign, kind); err != nil {
		return out, err
	}
	args = append(args, len(infl))
	for _, f := range infl {
		keys = append(keys, rkeys.Request(campaign, f.requestID))
		args = append(args, f.claimID, f.sku, f.value, f.user)
	}
	// The points prices before the meta (points.go).
	if err := writePointsPrices(ctx, r.rdb, campaign, prices); err != nil {
		return out, err
	}
	// The push escrows, still fenced, so no claim runs without what pushes hold (push.go).
	if err := writePushEscrows(ctx, r.rdb, campaign, token, skus, escrows); err != nil {
		return out, err
	}
	raw, err := scripts.Rebuild.Run(ctx, r.rdb, keys, args...).Result()
	if err != nil {
		return out, fmt.Errorf("rebuild script: %w", err)
	}
	res, ok := raw.([]any)
	if !ok {
		return out, errors.New("another recovery took the campaign over")
	}
	if len(res) != 5 {
		return out, fmt.Errorf("rebuild script returned %d values", len(res))
	}
	num := func(v any) int64 { n, _ := v.(int64); return n }
	out.Taken, out.Spent, out.InFlight, out.InFlightValue, out.Dropped = num(res[0]), num(res[1]), num(res[2]), num(res[3]), num(res[4])
	out.Released = releasedBook
	if err := r.rebuildPartnerQuotas(ctx, campaign, pq, infl); err != nil {
		return out, err
	}
	return out, nil
}

// partnerBooks is what the books say of a campaign's partner quotas: each partner's
// quota and its claims that are rows.
type partnerBooks struct {
	quota, rows map[string]int64
}

func readPartnerBooks(ctx context.Context, tx pgx.Tx, campaign string) (partnerBooks, error) {
	b := partnerBooks{quota: map[string]int64{}, rows: map[string]int64{}}
	for _, q := range []struct {
		sql string
		m   map[string]int64
	}{
		{`SELECT partner_id, quota FROM partner_quotas WHERE campaign_id = $1`, b.quota},
		{`SELECT substr(channel, 9), count(*) FROM claims WHERE campaign_id = $1 AND channel LIKE 'partner:%'
			GROUP BY channel`, b.rows},
	} {
		rows, err := tx.Query(ctx, q.sql, campaign)
		if err != nil {
			return b, err
		}
		for rows.Next() {
			var p string
			var n int64
			if err := rows.Scan(&p, &n); err != nil {
				rows.Close()
				return b, err
			}
			q.m[p] = n
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return b, err
		}
	}
	return b, nil
}

// rebuildPartnerQuotas writes the campaign's partner quota hash (rkeys.PartnerQuotas)
// back: each partner's quota from the books, and as taken its rows plus its in-flight
// claims that are not voided. It runs after rebuild.lua, still fenced (no claim can
// take from a quota meanwhile); a void between the record check and the write can only
// leave one unit counted too many, which under-sells.
func (r *Recoverer) rebuildPartnerQuotas(ctx context.Context, campaign string, b partnerBooks, infl []inFlight) error {
	taken := map[string]int64{}
	for p, n := range b.rows {
		taken[p] += n
	}
	var partnerInfl []inFlight
	for _, f := range infl {
		if len(f.channel) > 8 && f.channel[:8] == "partner:" {
			partnerInfl = append(partnerInfl, f)
		}
	}
	if len(partnerInfl) > 0 {
		pipe := r.rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(partnerInfl))
		for i, f := range partnerInfl {
			cmds[i] = pipe.Get(ctx, rkeys.Request(campaign, f.requestID))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("rebuild partner quotas: %w", err)
		}
		for i, f := range partnerInfl {
			// As rebuild.lua: a voided claim is not counted; one whose record is gone is.
			if v := cmds[i].Val(); len(v) > 0 && v[0] == 'V' {
				continue
			}
			taken[f.channel[8:]]++
		}
	}
	key := rkeys.PartnerQuotas(campaign)
	_, err := r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		for partner, q := range b.quota {
			p.HSet(ctx, key, rkeys.PartnerQuotaField(partner), q)
		}
		for partner, n := range taken {
			p.HSet(ctx, key, rkeys.PartnerTakenField(partner), n)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rebuild partner quotas: %w", err)
	}
	return nil
}

func (r *Recoverer) loadHash(ctx context.Context, tx pgx.Tx, key, query string, arg any) error {
	rows, err := tx.Query(ctx, query, arg)
	if err != nil {
		return err
	}
	defer rows.Close()
	batch := make([]any, 0, 2*r.cfg.Chunk)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := r.rdb.HSet(ctx, key, batch...).Err()
		batch = batch[:0]
		return err
	}
	for rows.Next() {
		var k string
		var v int64
		if err := rows.Scan(&k, &v); err != nil {
			return err
		}
		batch = append(batch, k, v)
		if len(batch) >= 2*r.cfg.Chunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return flush()
}

func (r *Recoverer) loadSet(ctx context.Context, tx pgx.Tx, key, query string, arg any) error {
	rows, err := tx.Query(ctx, query, arg)
	if err != nil {
		return err
	}
	defer rows.Close()
	batch := make([]any, 0, r.cfg.Chunk)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := r.rdb.SAdd(ctx, key, batch...).Err()
		batch = batch[:0]
		return err
	}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return err
		}
		batch = append(batch, k)
		if len(batch) >= r.cfg.Chunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return flush()
}

// restoreRecords writes an "S" (settled) idempotency record for each row whose record
// Redis no longer has (SET NX: a record that survived is never overwritten). The record
// lives as long as claim.lua would have kept it: until the campaign's end plus the grace.
func (r *Recoverer) restoreRecords(ctx context.Context, tx pgx.Tx, campaign string, ends time.Time) (int64, error) {
	ttl := ends.Add(r.cfg.AcceptGrace).Sub(r.now())
	if ttl <= 0 {
		return 0, nil
	}
	// A lottery draw that won nothing has the record claim.lua wrote for it: value 0,
	// claimed and expires both its time, no SKU (internal/claim idem.go).
	rows, err := tx.Query(ctx, `SELECT claim_id, request_id, value, claimed_at, expires_at, sku, user_id, device_id
		FROM claims WHERE campaign_id = $1
		UNION ALL
		SELECT draw_id, request_id, 0, drawn_at, drawn_at, '', user_id, device_id
		FROM draws WHERE campaign_id = $1 AND outcome = 'no_prize'`, campaign)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var restored int64
	pipe := r.rdb.Pipeline()
	var cmds []*redis.BoolCmd
	flush := func() error {
		if len(cmds) == 0 {
			return nil
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		for _, c := range cmds {
			if c.Val() {
				restored++
			}
		}
		cmds = cmds[:0]
		return nil
	}
	for rows.Next() {
		var claimID, reqID, sku, user, dev string
		var value int64
		var claimed, expires time.Time
		if err := rows.Scan(&claimID, &reqID, &value, &claimed, &expires, &sku, &user, &dev); err != nil {
			return restored, err
		}
		// The layout claim.lua writes: state, claim, value, claimed, expires, outbox id
		// (unknown now; only void.lua uses it, and never on an "S" record), fingerprint.
		rec := string(claim.AppendIdem(nil, &claim.Idem{State: claim.IdemSettled, ClaimID: claimID, Value: value,
			ClaimedAtMs: claimed.UnixMilli(), ExpiresAtMs: expires.UnixMilli(), SKU: sku, UserID: user, DeviceID: dev}))
		cmds = append(cmds, pipe.SetNX(ctx, rkeys.Request(campaign, reqID), rec, ttl))
		if len(cmds) >= r.cfg.Chunk {
			if err := flush(); err != nil {
				return restored, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return restored, err
	}
	return restored, flush()
}

// restoreSegment reloads a segment's members from Postgres when Redis has lost the set:
// without it every claim of a segment campaign would be refused as not_eligible (and
// that refusal remembered for the request_id).
func (r *Recoverer) restoreSegment(ctx context.Context, tx pgx.Tx, seg string) error {
	live := rkeys.Segment(seg)
	n, err := r.rdb.Exists(ctx, live).Result()
	if err != nil || n == 1 {
		return err
	}
	load := live + ":recover"
	if err := r.rdb.Del(ctx, load).Err(); err != nil {
		return err
	}
	if err := r.loadSet(ctx, tx, load, `SELECT user_id FROM segment_members WHERE segment = $1`, seg); err != nil {
		return err
	}
	if err := r.rdb.Rename(ctx, load, live).Err(); err != nil && err.Error() != "ERR no such key" {
		return err
	}
	return nil
}
