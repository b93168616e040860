// Package audit owns the audit trail in Postgres (table risk_audit) - riskctl's changes
// and, since issue 14, the admin API's (Record, under the admin token's name) - and the
// one way riskctl changes live risk state in Redis: Apply makes the Redis change and
// the audit row one step - both happen or neither does (docs/RISK.md "Audit").
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// Actions recorded in risk_audit.action (the table's CHECK lists them: migrations
// 0002 and 0005).
const (
	ActionRules   = "rules.set"
	ActionShadow  = "shadow"
	ActionBlock   = "block"
	ActionUnblock = "unblock"
	ActionRevoke  = "revoke"
	// The admin API's changes (gateway/admin), audited under the admin token's name.
	ActionBusinessLine = "admin.business_line"
	ActionCampaign     = "admin.campaign"
	ActionPause        = "admin.pause"
	ActionResume       = "admin.resume"
	ActionSegment      = "admin.segment"
	ActionReconcile    = "admin.reconcile"
	// ActionDeliveryRetry: an operator made a dead-lettered prize delivery due again.
	ActionDeliveryRetry = "admin.delivery_retry"
)

// State is what a change reads and writes, as it is shown and audited (key → value).
type State map[string]string

// Equal reports whether two states are the same.
func (s State) Equal(o State) bool {
	if len(s) != len(o) {
		return false
	}
	for k, v := range s {
		if w, ok := o[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Change is one audited change of Redis state.
type Change struct {
	Actor, Action, Scope, Reason string
	// Keys are the Redis keys Read reads and Write writes; they are WATCHed, so a
	// concurrent change between the read and the write aborts and retries this one.
	Keys []string
	// Read returns the current state.
	Read func(ctx context.Context, c redis.Cmdable) (State, error)
	// Plan returns the state to write given the current one, or an error that leaves
	// everything unchanged (a *risk.FieldError for bad input).
	Plan func(old State) (State, error)
	// Write queues the Redis writes that turn from into to (also used to undo).
	Write func(ctx context.Context, p redis.Pipeliner, from, to State) error
	// Keep records the new state as the current state of Scope in risk_state (0008), in
	// the same transaction as the audit row: Postgres is the record recovery rebuilds
	// Redis's risk state from (internal/risk/riskstate).
	Keep bool
}

// StateLock is the advisory lock key that orders Apply's changes (shared) against a
// rebuild of Redis's risk state from risk_state (exclusive): a rebuild never writes a
// state older than one a change has just made in Redis.
const StateLock = "riskctl:state"

// Result is what a change did.
type Result struct {
	Old, New State
	Changed  bool // false: the state already was the planned one; nothing written, no row
	ID       int64
	At       time.Time
}

// ErrInconsistent means Redis was changed but the audit row could not be committed and
// undoing the Redis change failed too: a person must look (the message says what).
var ErrInconsistent = errors.New("audit: Redis changed without an audit row")

// Apply makes one audited change:
//
//  1. begin a Postgres transaction and take a transaction-scoped advisory lock on the
//     scope, so two riskctl runs on the same scope take turns (and the audit trail's
//     old values chain);
//  2. WATCH the keys, read the old state, plan the new one;
//  3. insert the audit row (inside a savepoint), then MULTI/EXEC the Redis writes - if
//     another writer touched the keys in between, EXEC aborts, the savepoint is rolled
//     back and 2-3 are retried;
//  4. commit. If the commit fails after Redis changed, the Redis change is undone (only
//     if the keys still hold what was written) and the error returned; if that undo
//     fails too, ErrInconsistent says so.
//
// So an audit row is committed if and only if the Redis change was made, except in the
// double failure that ErrInconsistent reports. Postgres being down fails the change
// before Redis is touched.
func Apply(ctx context.Context, pg *pgxpool.Pool, rdb *redis.Client, ch Change) (Result, error) {
	var res Result
	tx, err := pg.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("audit: begin: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // after Commit it is a no-op
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "riskctl:"+ch.Scope); err != nil {
		return res, fmt.Errorf("audit: lock %s: %w", ch.Scope, err)
	}
	if ch.Keep {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))`, StateLock); err != nil {
			return res, fmt.Errorf("audit: lock %s: %w", StateLock, err)
		}
	}
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			return res, fmt.Errorf("audit: %s changed concurrently 5 times in a row; try again", ch.Scope)
		}
		err = rdb.Watch(ctx, func(rtx *redis.Tx) error {
			old, err := ch.Read(ctx, rtx)
			if err != nil {
				return err
			}
			nw, err := ch.Plan(old)
			if err != nil {
				return err
			}
			res.Old, res.New = old, nw
			if old.Equal(nw) {
				res.Changed = false
				return nil
			}
			sp, err := tx.Begin(ctx)
			if err != nil {
				return fmt.Errorf("audit: savepoint: %w", err)
			}
			oj, _ := json.Marshal(old)
			nj, _ := json.Marshal(nw)
			if err := sp.QueryRow(ctx, `INSERT INTO risk_audit (actor, action, scope, old, new, reason)
				VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, at`,
				ch.Actor, ch.Action, ch.Scope, oj, nj, ch.Reason).Scan(&res.ID, &res.At); err != nil {
				return fmt.Errorf("audit: insert: %w", err)
			}
			if ch.Keep {
				if err := keep(ctx, sp, ch.Scope, nw, nj, res.ID, res.At); err != nil {
					return err
				}
			}
			_, err = rtx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				return ch.Write(ctx, p, old, nw)
			})
			if err != nil {
				_ = sp.Rollback(ctx)
				return err
			}
			res.Changed = true
			return sp.Commit(ctx)
		}, ch.Keys...)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return res, err
		}
		break
	}
	if !res.Changed {
		return res, nil
	}
	if err := tx.Commit(ctx); err != nil {
		if uerr := undo(rdb, ch, res); uerr != nil {
			return res, fmt.Errorf("%w: %s was set to %v but the audit commit failed (%v) and restoring %v failed too (%v)",
				ErrInconsistent, ch.Scope, res.New, err, res.Old, uerr)
		}
		return res, fmt.Errorf("audit: commit failed, the Redis change was undone: %w", err)
	}
	return res, nil
}

// keep upserts the scope's current state (see Change.Keep).
func keep(ctx context.Context, tx pgx.Tx, scope string, nw State, nj []byte, id int64, at time.Time) error {
	var exp *time.Time
	if v, ok := nw["block.expires_at"]; ok {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return fmt.Errorf("audit: %s: block.expires_at %q: %w", scope, v, err)
		}
		exp = &t
	}
	if _, err := tx.Exec(ctx, `INSERT INTO risk_state (scope, state, expires_at, audit_id, updated_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (scope) DO UPDATE SET state = EXCLUDED.state, expires_at = EXCLUDED.expires_at,
		  audit_id = EXCLUDED.audit_id, updated_at = EXCLUDED.updated_at`, scope, nj, exp, id, at); err != nil {
		return fmt.Errorf("audit: record state of %s: %w", scope, err)
	}
	return nil
}

// undo restores the old state if the keys still hold the new one (someone else's later
// change is never overwritten).
func undo(rdb *redis.Client, ch Change, res Result) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return rdb.Watch(ctx, func(rtx *redis.Tx) error {
		cur, err := ch.Read(ctx, rtx)
		if err != nil {
			return err
		}
		if !cur.Equal(res.New) {
			return fmt.Errorf("%s changed again since (now %v); not overwriting", ch.Scope, cur)
		}
		_, err = rtx.TxPipelined(ctx, func(p redis.Pipeliner) error { return ch.Write(ctx, p, res.New, res.Old) })
		return err
	}, ch.Keys...)
}

// Row is one audit row.
type Row struct {
	ID     int64     `json:"id"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Scope  string    `json:"scope"`
	Old    State     `json:"old"`
	New    State     `json:"new"`
	Reason string    `json:"reason,omitempty"`
}

// List returns the audit rows since a time, oldest first, optionally of one scope
// (exact) and at most limit rows (the newest ones).
func List(ctx context.Context, pg *pgxpool.Pool, since time.Time, scope string, limit int) ([]Row, error) {
	return ListBy(ctx, pg, Filter{Since: since, Scope: scope, Limit: limit})
}

// Filter selects audit rows: at or after Since, of one Scope and one Actor when set,
// at most Limit (the newest ones).
type Filter struct {
	Since        time.Time
	Scope, Actor string
	Limit        int
}

// ListBy returns the rows the filter selects, oldest first.
func ListBy(ctx context.Context, pg *pgxpool.Pool, f Filter) ([]Row, error) {
	rows, err := pg.Query(ctx, `SELECT id, at, actor, action, scope, old, new, reason FROM (
		SELECT * FROM risk_audit WHERE at >= $1 AND ($2 = '' OR scope = $2) AND ($3 = '' OR actor = $3)
		ORDER BY id DESC LIMIT $4
	) r ORDER BY id`, f.Since, f.Scope, f.Actor, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Row, error) {
		var a Row
		err := r.Scan(&a.ID, &a.At, &a.Actor, &a.Action, &a.Scope, &a.Old, &a.New, &a.Reason)
		a.At = a.At.UTC()
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	return out, nil
}

// Querier is what Record writes through: a pool, or a transaction that commits the
// audit row together with the change it records.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Record appends one audit row for a change made outside Apply (the admin API's
// Postgres-and-Redis changes, riskctl revoke's Postgres change).
func Record(ctx context.Context, q Querier, actor, action, scope string, old, nw State, reason string) (Row, error) {
	if old == nil {
		old = State{}
	}
	if nw == nil {
		nw = State{}
	}
	oj, _ := json.Marshal(old)
	nj, _ := json.Marshal(nw)
	r := Row{Actor: actor, Action: action, Scope: scope, Old: old, New: nw, Reason: reason}
	if err := q.QueryRow(ctx, `INSERT INTO risk_audit (actor, action, scope, old, new, reason)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, at`, actor, action, scope, oj, nj, reason).Scan(&r.ID, &r.At); err != nil {
		return r, fmt.Errorf("audit: insert: %w", err)
	}
	r.At = r.At.UTC()
	return r, nil
}
