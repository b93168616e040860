// Package riskstate rebuilds Redis's risk state - rules (global and per campaign,
// shadow mode included), blocks, and the freezes an unblock lifted - from its record
// in Postgres (table risk_state, migration 0008, written by riskctl in the same
// transaction as each audit row: audit.Apply with Keep), and keeps the marker that
// tells claim.lua the risk state is there (risk.FieldWarm in the global rules hash).
//
// Issue 21.4: after Redis lost its data a blocked device's next claim was accepted. Now
// claim.lua answers NOT_WARM (503, nothing taken, nothing remembered) while the marker
// is absent, and whoever finds it absent or stamped with another Redis server's run id
// - every Recoverer pass (gateway and settler), and the catalog's warm before it writes
// a campaign - rebuilds first (DESIGN.md "Risk state survives Redis").
package riskstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/risk/audit"
	"github.com/flashgate/flashgate/internal/rkeys"
)

// Result is what a rebuild wrote.
type Result struct {
	RunID         string `json:"run_id"`
	Rules         int    `json:"rule_levels"`    // rules hashes written (global, campaigns)
	Blocks        int    `json:"blocks"`         // blocks in force written
	Lifted        int    `json:"lifted"`         // lifted blocks removed (if present)
	FreezesLifted int    `json:"freezes_lifted"` // freezes older than their unblock removed
}

// Warm reports whether Redis holds the risk state of its record, rebuilt on the server
// with run id runID.
func Warm(ctx context.Context, rdb redis.Cmdable, runID string) (bool, error) {
	v, err := rdb.HGet(ctx, rkeys.RiskGlobalRules, risk.FieldWarm).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("risk state marker: %w", err)
	}
	return v == runID, nil
}

// Ensure rebuilds the risk state unless the marker says it is there on the server with
// run id runID (the caller reads it with recovery.RunID, the one reader of it).
func Ensure(ctx context.Context, pg *pgxpool.Pool, rdb *redis.Client, runID string) (bool, Result, error) {
	ok, err := Warm(ctx, rdb, runID)
	if err != nil || ok {
		return false, Result{RunID: runID}, err
	}
	res, err := Rebuild(ctx, pg, rdb, runID)
	return true, res, err
}

type row struct {
	scope string
	state map[string]string
	at    time.Time
}

// Rebuild writes every scope of risk_state into Redis, then the marker. It holds the
// exclusive StateLock meanwhile, so a riskctl change (shared lock) either committed
// before the read (and is rebuilt) or waits and writes Redis after the rebuild.
//
// Only scopes Postgres knows are written: a rules level is made exactly its record, a
// block in force is set with its remaining TTL, a lifted block is deleted and a freeze
// set before the unblock that lifted it too (a Redis that came back from an older copy
// may hold both). Idempotent: a failed rebuild leaves the marker absent and the next
// pass (or warm) repeats it.
func Rebuild(ctx context.Context, pg *pgxpool.Pool, rdb *redis.Client, runID string) (Result, error) {
	res := Result{RunID: runID}
	tx, err := pg.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("risk state rebuild: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // read-only; a no-op after Commit
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, audit.StateLock); err != nil {
		return res, fmt.Errorf("risk state rebuild: lock: %w", err)
	}
	q, err := tx.Query(ctx, `SELECT scope, state, updated_at FROM risk_state
		WHERE expires_at IS NULL OR expires_at > now() ORDER BY scope`)
	if err != nil {
		return res, fmt.Errorf("risk state rebuild: read: %w", err)
	}
	var rows []row
	for q.Next() {
		var r row
		var raw []byte
		if err := q.Scan(&r.scope, &raw, &r.at); err != nil {
			q.Close()
			return res, fmt.Errorf("risk state rebuild: read: %w", err)
		}
		if err := json.Unmarshal(raw, &r.state); err != nil {
			q.Close()
			return res, fmt.Errorf("risk state rebuild: scope %s: %w", r.scope, err)
		}
		rows = append(rows, r)
	}
	q.Close()
	if err := q.Err(); err != nil {
		return res, fmt.Errorf("risk state rebuild: read: %w", err)
	}

	// The freezes of lifted devices and users, to compare with their unblock's time.
	type lifted struct {
		kind  risk.Kind
		value string
		at    time.Time
		get   *redis.StringCmd
	}
	var lifts []*lifted
	rp := rdb.Pipeline()
	for _, r := range rows {
		kind, value, isBlock := blockScope(r.scope)
		if !isBlock || len(r.state) > 0 || kind == risk.IP {
			continue
		}
		l := &lifted{kind: kind, value: value, at: r.at}
		l.get = rp.Get(ctx, rkeys.Freeze(byte(kind), value))
		lifts = append(lifts, l)
	}
	if len(lifts) > 0 {
		if _, err := rp.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return res, fmt.Errorf("risk state rebuild: read freezes: %w", err)
		}
	}

	now := time.Now()
	p := rdb.Pipeline()
	for _, r := range rows {
		if campaign, ok := rulesScope(r.scope); ok {
			if err := queueRules(ctx, p, campaign, r.state); err != nil {
				return res, fmt.Errorf("risk state rebuild: scope %s: %w", r.scope, err)
			}
			res.Rules++
			continue
		}
		kind, value, ok := blockScope(r.scope)
		if !ok {
			return res, fmt.Errorf("risk state rebuild: unknown scope %q", r.scope)
		}
		key := rkeys.Block(byte(kind), value)
		member := "blk:" + string(byte(kind)) + ":" + value
		reason, has := r.state["block.reason"]
		exp, perr := time.Parse(time.RFC3339Nano, r.state["block.expires_at"])
		if has && perr == nil && exp.Sub(now) >= time.Millisecond {
			at, _ := time.Parse(time.RFC3339Nano, r.state["block.at"])
			p.Set(ctx, key, risk.EncodeEntry(reason, r.state["block.by"], at), exp.Sub(now))
			p.ZAdd(ctx, rkeys.RiskIndex, redis.Z{Score: float64(exp.UnixMilli()), Member: member})
			res.Blocks++
			continue
		}
		// Lifted (or ended): gone from Redis too. The index entry is scored into the
		// past and trimmed below (the recovering users may not ZREM).
		p.Del(ctx, key)
		p.ZAdd(ctx, rkeys.RiskIndex, redis.Z{Score: 0, Member: member})
		res.Lifted++
	}
	for _, l := range lifts {
		val, err := l.get.Result()
		if err != nil {
			continue // no freeze
		}
		e := risk.DecodeEntry(l.kind, l.value, true, val)
		if e.At.After(l.at) {
			continue // frozen again after the unblock: a freeze of its own
		}
		p.Del(ctx, rkeys.Freeze(byte(l.kind), l.value), rkeys.FreezeWindow(byte(l.kind), l.value))
		p.ZAdd(ctx, rkeys.RiskIndex, redis.Z{Score: 0, Member: "frz:" + string(byte(l.kind)) + ":" + l.value})
		res.FreezesLifted++
	}
	p.ZRemRangeByScore(ctx, rkeys.RiskIndex, "-inf", strconv.FormatInt(now.UnixMilli(), 10))
	if _, err := p.Exec(ctx); err != nil {
		return res, fmt.Errorf("risk state rebuild: write: %w", err)
	}
	// Last: the marker. Until it is written claim.lua decides nothing on risk state.
	if err := rdb.HSet(ctx, rkeys.RiskGlobalRules, risk.FieldWarm, runID).Err(); err != nil {
		return res, fmt.Errorf("risk state rebuild: marker: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("risk state rebuild: %w", err)
	}
	return res, nil
}

// queueRules makes a level's rules hash exactly state (rule key → value as written),
// leaving the marker field alone.
func queueRules(ctx context.Context, p redis.Pipeliner, campaign string, state map[string]string) error {
	key := risk.RulesKey(campaign)
	var set []any
	var del []string
	for _, s := range risk.Specs {
		v, ok := state[s.Key]
		if !ok {
			del = append(del, s.Field)
			continue
		}
		a, err := risk.ParseValue(s.Key, v)
		if err != nil {
			return err
		}
		set = append(set, s.Field, strconv.FormatInt(a.Value, 10))
	}
	for k := range state {
		if _, ok := risk.Lookup(k); !ok {
			return fmt.Errorf("unknown rule key %q", k)
		}
	}
	if len(del) > 0 {
		p.HDel(ctx, key, del...)
	}
	if len(set) > 0 {
		p.HSet(ctx, key, set...)
	}
	return nil
}

// rulesScope reads "global" or "campaign:<id>".
func rulesScope(scope string) (string, bool) {
	if scope == "global" {
		return "", true
	}
	if c, ok := strings.CutPrefix(scope, "campaign:"); ok && risk.ValidID(c) {
		return c, true
	}
	return "", false
}

// blockScope reads "device:<id>", "ip:<addr>" or "user:<id>".
func blockScope(scope string) (risk.Kind, string, bool) {
	k, v, ok := strings.Cut(scope, ":")
	if !ok {
		return 0, "", false
	}
	kind, ok := risk.ParseKind(k)
	if !ok {
		return 0, "", false
	}
	nv, err := risk.NormalizeValue(kind, v)
	if err != nil || nv != v {
		return 0, "", false
	}
	return kind, v, true
}
