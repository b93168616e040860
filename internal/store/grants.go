package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The least-privilege login roles of the binaries (docs/SECURITY.md). The dev stack
// creates them (scripts/stack.sh); production creates them with its own passwords. The
// owner of the schema (the role that migrates) grants them what Grants lists.
const (
	RoleGateway = "flashgate_gateway"
	RoleSettler = "flashgate_settler"
	RoleRiskctl = "flashgate_riskctl"
	RoleBench   = "flashgate_bench"
)

// Grants is every privilege of the binaries' roles, by role. Nothing else is granted:
// no role but the owner may DELETE or TRUNCATE claims or budget_ledger, or change the
// schema (Postgres 15 gives PUBLIC no CREATE on the public schema). A new table or a new
// query that needs more goes here in the same change.
var Grants = map[string][]string{
	RoleGateway: {
		// The admin API's catalog: business lines, campaigns and their SKUs, segments.
		`GRANT SELECT, INSERT, UPDATE ON business_lines, campaigns, segments TO flashgate_gateway`,
		`GRANT SELECT, INSERT, DELETE ON campaign_skus, segment_members TO flashgate_gateway`,
		// GET /v1/claims/{id}, reports, reconciliation and recovery read the books;
		// redeem writes a voucher off (its state and time, nothing else).
		`GRANT SELECT ON claims, budget_ledger, schema_migrations TO flashgate_gateway`,
		`GRANT UPDATE (state, redeemed_at) ON claims TO flashgate_gateway`,
		// Admin API changes are audited; GET /admin/v1/audit reads the trail (0005).
		`GRANT SELECT, INSERT ON risk_audit TO flashgate_gateway`,
		`GRANT USAGE ON SEQUENCE risk_audit_id_seq TO flashgate_gateway`,
		// The partner registry (PUT /admin/v1/partners/{id}) and the key lookup of
		// X-Partner-Key: a quota set is replaced whole.
		`GRANT SELECT, INSERT, UPDATE ON partners TO flashgate_gateway`,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON partner_quotas TO flashgate_gateway`,
		// The claim page's themes (gateway/h5): the admin API writes, the page reads.
		`GRANT SELECT, INSERT, UPDATE ON campaign_pages TO flashgate_gateway`,
		// Recovery and the catalog's warm rebuild Redis's risk state from its record (0008).
		`GRANT SELECT ON risk_state TO flashgate_gateway`,
		`GRANT INSERT ON events TO flashgate_gateway`,
		`GRANT SELECT ON deliveries TO flashgate_gateway`,
		`GRANT UPDATE (state, attempts, next_at, failed_at, lease_until) ON deliveries TO flashgate_gateway`,
		`GRANT USAGE ON SEQUENCE events_id_seq TO flashgate_gateway`,
		// The voucher's life (0011): redeem against an order and its rollback, transfer.
		`GRANT UPDATE (order_id, order_amount, order_category, user_id, hops) ON claims TO flashgate_gateway`,
		`GRANT UPDATE (min_spend, excluded_categories) ON campaign_skus TO flashgate_gateway`,
		`GRANT SELECT, INSERT, UPDATE ON redemptions TO flashgate_gateway`,
		// Lottery draws (0013): the odds route and the report read them.
		`GRANT SELECT ON draws TO flashgate_gateway`,
		`GRANT SELECT, INSERT ON transfers TO flashgate_gateway`,
		// The points mall (0010): tasks are the admin API's, grants write lots and ledger
		// rows, refusals are counted for the risk team, GET /v1/me/points reads.
		`GRANT SELECT, INSERT, UPDATE ON points_tasks, points_accounts TO flashgate_gateway`,
		`GRANT SELECT, INSERT ON points_lots, points_ledger, points_refusals TO flashgate_gateway`,
		`GRANT USAGE ON SEQUENCE points_ledger_id_seq TO flashgate_gateway`,
		// Push to tiers and partner code pools (0015): the gateway's pusher runs pushes;
		// the admin API imports codes.
		`GRANT SELECT, INSERT, UPDATE, DELETE ON pushes, push_users TO flashgate_gateway`,
		`GRANT SELECT, INSERT ON sku_codes TO flashgate_gateway`,
		// The grant's auto-freeze (0014): recorded once per grant.
		`GRANT SELECT, INSERT ON points_autofreeze TO flashgate_gateway`,
	},
	RoleSettler: {
		// Settlement writes claims and their ledger rows; expiry marks claims expired and
		// writes 'release' rows; relay, reconciliation and recovery read.
		`GRANT SELECT ON business_lines, campaigns, campaign_skus, segments, segment_members, schema_migrations TO flashgate_settler`,
		`GRANT SELECT, INSERT ON claims, budget_ledger TO flashgate_settler`,
		`GRANT UPDATE (state, expired_at) ON claims TO flashgate_settler`,
		`GRANT USAGE ON SEQUENCE budget_ledger_id_seq TO flashgate_settler`,
		// The insert trigger that voids claims of revoked users reads revocations (0005).
		`GRANT SELECT ON revocations TO flashgate_settler`,
		// Recovery rebuilds Redis's risk state from its record (0008).
		`GRANT SELECT ON risk_state TO flashgate_settler`,
		`GRANT SELECT, INSERT ON events TO flashgate_settler`,
		`GRANT UPDATE (published_at) ON events TO flashgate_settler`,
		`GRANT USAGE ON SEQUENCE events_id_seq TO flashgate_settler`,
		`GRANT SELECT, INSERT, UPDATE ON deliveries TO flashgate_settler`,
		// Every lottery draw is a row, written with its claim (0013).
		`GRANT SELECT, INSERT ON draws TO flashgate_settler`,
		`GRANT SELECT ON redemptions, transfers TO flashgate_settler`,
		// Points (0010): the hot balances' rebuild reads the record; confirming a
		// points_item claim writes its spend row and debits the lots.
		`GRANT SELECT ON points_tasks, points_lots, points_ledger, points_accounts TO flashgate_settler`,
		`GRANT INSERT ON points_ledger TO flashgate_settler`,
		`GRANT UPDATE (remaining) ON points_lots TO flashgate_settler`,
		`GRANT USAGE ON SEQUENCE points_ledger_id_seq TO flashgate_settler`,
		// A void after confirmation (0016): a spend records the lots it took from; the
		// give-back of a revoked points_item claim restores them once and re-drives its
		// hot step until done.
		`GRANT SELECT, INSERT ON points_debits, points_give_backs TO flashgate_settler`,
		`GRANT UPDATE (hot_done) ON points_give_backs TO flashgate_settler`,
		// Partner code pools (0015): the recovery rebuilds a pool from the codes no claim
		// holds (claims.partner_code is written with the claim row).
		`GRANT SELECT ON sku_codes, pushes TO flashgate_settler`,
	},
	RoleRiskctl: {
		// The audit trail: append and read, never change or delete a row.
		`GRANT SELECT, INSERT ON risk_audit TO flashgate_riskctl`,
		`GRANT USAGE ON SEQUENCE risk_audit_id_seq TO flashgate_riskctl`,
		`GRANT SELECT ON schema_migrations TO flashgate_riskctl`,
		// riskctl revoke: record the revocation and make the subject's unredeemed
		// vouchers due (the expirer then gives their value back), nothing else (0005).
		`GRANT SELECT, INSERT ON revocations TO flashgate_riskctl`,
		`GRANT SELECT ON claims TO flashgate_riskctl`,
		`GRANT UPDATE (expires_at, revoked_at) ON claims TO flashgate_riskctl`,
		// The record of the risk state it sets, beside each audit row (0008).
		`GRANT SELECT, INSERT, UPDATE ON risk_state TO flashgate_riskctl`,
		// riskctl points freeze|unfreeze (0010).
		`GRANT SELECT, INSERT, UPDATE ON points_accounts TO flashgate_riskctl`,
		// riskctl top points (0014): gains by account and the auto-freeze rule's hits.
		`GRANT SELECT ON points_lots, points_autofreeze TO flashgate_riskctl`,
	},
	RoleBench: {
		// bench verify reads the books; it writes nothing.
		`GRANT SELECT ON business_lines, campaigns, campaign_skus, segments, segment_members, claims, budget_ledger, schema_migrations, events, deliveries, points_tasks, points_lots, points_ledger, points_accounts, points_refusals, points_autofreeze, draws, points_debits, points_give_backs TO flashgate_bench`,
	},
}

// Grant applies Grants to each role that exists (a deployment without a role simply
// has nothing to grant to it). GRANT is idempotent, so this runs after every migration
// by the owner. It must run as the owner of the tables.
func Grant(ctx context.Context, pool *pgxpool.Pool) error {
	roles := make([]string, 0, len(Grants))
	for r := range Grants {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	// Two owners granting the same object at once can fail with "tuple concurrently
	// updated": one transaction under an advisory lock serialises them.
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("grants: %w", err)
	}
	defer tx.Rollback(ctx) // a no-op after Commit
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, grantLock); err != nil {
		return fmt.Errorf("grants: %w", err)
	}
	for _, role := range roles {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil {
			return fmt.Errorf("grants: %w", err)
		}
		if !exists {
			continue
		}
		for _, g := range Grants[role] {
			if _, err := tx.Exec(ctx, g); err != nil {
				return fmt.Errorf("grants to %s: %w", role, err)
			}
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("grants: %w", err)
	}
	return nil
}

// grantLock is the advisory lock key of Grant ("flashgrt").
const grantLock = 0x666c617368677274

// LatestVersion is the highest migration version this binary embeds.
func LatestVersion() uint {
	var latest uint
	entries, _ := fs.ReadDir(migrations, "migrations")
	for _, e := range entries {
		n, _, ok := strings.Cut(e.Name(), "_")
		if !ok {
			continue
		}
		if v, err := strconv.ParseUint(n, 10, 32); err == nil && uint(v) > latest {
			latest = uint(v)
		}
	}
	return latest
}

// SchemaVersion reads the database's migration version (0 when none was applied) and
// whether the last migration failed half-way (dirty).
func SchemaVersion(ctx context.Context, pool *pgxpool.Pool) (uint, bool, error) {
	var v int64
	var dirty bool
	err := pool.QueryRow(ctx, `SELECT version, dirty FROM schema_migrations LIMIT 1`).Scan(&v, &dirty)
	var pe *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows), errors.As(err, &pe) && pe.Code == "42P01": // undefined_table
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("schema version: %w", err)
	}
	return uint(v), dirty, nil
}

// CanMigrate reports whether the connected role may change the schema (the owner, or a
// superuser): only such a role migrates at start.
func CanMigrate(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	var ok bool
	if err := pool.QueryRow(ctx, `SELECT has_schema_privilege(current_user, 'public', 'CREATE')`).Scan(&ok); err != nil {
		return false, fmt.Errorf("schema privileges: %w", err)
	}
	return ok, nil
}

// Prepare is what every binary does with Postgres at start. Connected as the schema's
// owner it applies pending migrations and the grants (a fresh dev database works on
// first start). Connected as a least-privilege role it changes nothing: it checks the
// schema is at least at the version this binary needs, and fails clearly if it is
// behind or a migration failed half-way - the owner must migrate first (`make up`, or
// bin/migrate with the owner's URL).
func Prepare(ctx context.Context, pool *pgxpool.Pool) error {
	owner, err := CanMigrate(ctx, pool)
	if err != nil {
		return err
	}
	if !owner {
		return CheckVersion(ctx, pool)
	}
	// Nothing to apply when the schema is at (or, from a newer binary, past) this
	// binary's version: migrating would then only take the migration lock.
	if v, dirty, err := SchemaVersion(ctx, pool); err != nil || dirty || v < LatestVersion() {
		if err := Migrate(pool); err != nil {
			return err
		}
	}
	return Grant(ctx, pool)
}

// CheckVersion fails unless the schema is at LatestVersion or later and not dirty.
func CheckVersion(ctx context.Context, pool *pgxpool.Pool) error {
	v, dirty, err := SchemaVersion(ctx, pool)
	if err != nil {
		return err
	}
	return versionOK(v, dirty, LatestVersion())
}

func versionOK(v uint, dirty bool, want uint) error {
	switch {
	case dirty:
		return fmt.Errorf("schema migration %d failed half-way (dirty); the schema owner must fix and rerun it (bin/migrate)", v)
	case v < want:
		return fmt.Errorf("schema is at version %d, this binary needs %d; this role may not migrate: "+
			"run the migrations as the schema owner first (make up, or bin/migrate with the owner's FLASH_PG_URL)", v, want)
	}
	return nil
}
