package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/risk/audit"
)

const revokeHelp = `riskctl revoke user|device VALUE --reason TEXT

Voids a cheater's holdings: every voucher of the user (or claimed from the device)
that is not redeemed yet is revoked - GET shows it "revoked", redeem answers 409
revoked - and its value goes back to the campaign's and business line's budgets. The
settler's expirer gives the value back on its next pass, through the same once-per-
claim path as an expired voucher (release.lua's released set, the ledger's "release"
row). A revoked points-mall item gives its points back to the user once (the
settler's points holds pass; points whose lot expired meanwhile stay expired). Claims
accepted before the revocation that are still settling are revoked as they reach
Postgres. Redeemed vouchers are spent and stay so. Audited.

Revoking does not stop new claims: block the user or device too (riskctl block); a
blocked or frozen user cannot redeem either.`

func revoke(c *cmd, args []string) error {
	reason := c.fs.String("reason", "", "why (required; in the audit and the revocation record)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	kind, value, err := target(pos)
	if err != nil {
		return err
	}
	column := ""
	switch kind {
	case risk.User:
		column = "user_id"
	case risk.Device:
		column = "device_id"
	default:
		return usagef("%q: want user or device (vouchers are held by users and claimed from devices)", pos[0])
	}
	switch {
	case strings.TrimSpace(*reason) == "":
		return usagef("--reason: required (why are the vouchers revoked?)")
	case len(*reason) > 500:
		return usagef("--reason: longer than 500 characters")
	}
	pg, err := c.postgres()
	if err != nil {
		return err
	}
	scope := kind.String() + ":" + value
	tx, err := pg.Begin(c.ctx)
	if err != nil {
		return fmt.Errorf("revoke: begin: %w", err)
	}
	defer tx.Rollback(c.ctx) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(c.ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "riskctl:"+scope); err != nil {
		return fmt.Errorf("revoke: lock %s: %w", scope, err)
	}
	// The revocation first: a claim the settler inserts from now on, accepted before
	// it, is voided by the insert trigger (migration 0005) once this commits.
	if _, err := tx.Exec(c.ctx, `INSERT INTO revocations (kind, value, actor, reason) VALUES ($1, $2, $3, $4)`,
		kind.String(), value, c.actor, *reason); err != nil {
		return fmt.Errorf("revoke: record: %w", err)
	}
	// Due now: the expirer picks them (state 'settled', expires_at <= now()) and gives
	// their value back once.
	voidSQL := `UPDATE claims SET revoked_at = now(), expires_at = LEAST(expires_at, now())
		WHERE ` + column + ` = $1 AND state = 'settled' AND revoked_at IS NULL RETURNING value`
	n, total, err := voidRows(c, tx, voidSQL, value)
	if err != nil {
		return err
	}
	old := audit.State{"unredeemed": strconv.Itoa(n), "value": strconv.FormatInt(total, 10)}
	nw := audit.State{"unredeemed": "0", "revoked": strconv.Itoa(n), "value_returned": strconv.FormatInt(total, 10)}
	row, err := audit.Record(c.ctx, tx, c.actor, audit.ActionRevoke, scope, old, nw, *reason)
	if err != nil {
		return err
	}
	if err := tx.Commit(c.ctx); err != nil {
		return fmt.Errorf("revoke: commit: %w", err)
	}
	// A claim the settler committed between this transaction's start and its commit
	// was neither seen by the UPDATE nor by the trigger (the revocation was not yet
	// visible to it): a second pass, after the commit, catches it.
	late, lateValue, err := voidRows(c, pg, voidSQL, value)
	if err != nil {
		return fmt.Errorf("revoke: recorded and %d vouchers voided, but the second pass failed (run it again): %w", n, err)
	}
	n, total = n+late, total+lateValue
	c.out(map[string]any{"scope": scope, "revoked": n, "value": total, "audit_id": row.ID}, func(w io.Writer) {
		fmt.Fprintf(w, "revoked %s: %d unredeemed vouchers worth %d voided; their value goes back to the budgets on the expirer's next pass (audit #%d)\n",
			scope, n, total, row.ID)
	})
	return nil
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// voidRows runs the void UPDATE and counts and sums what it voided.
func voidRows(c *cmd, q querier, sql, value string) (int, int64, error) {
	rows, err := q.Query(c.ctx, sql, value)
	if err != nil {
		return 0, 0, fmt.Errorf("revoke: void: %w", err)
	}
	defer rows.Close()
	n, total := 0, int64(0)
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return 0, 0, fmt.Errorf("revoke: void: %w", err)
		}
		n, total = n+1, total+v
	}
	if err := rows.Err(); err != nil {
		return 0, 0, fmt.Errorf("revoke: void: %w", err)
	}
	return n, total, nil
}
