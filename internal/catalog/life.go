package catalog

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// The voucher's life fields of the campaign PUT (CONTRACT.md "Redemption kinds" and
// "Issuance and the voucher's life"; migration 0011): per SKU min_spend and
// excluded_categories (checked by redeem against an order), per campaign transferable
// and max_transfers (checked by transfer). They live in their own columns, written
// after the SKU rows; none may change once the campaign has started.

// MaxExcludedCategories bounds a SKU's excluded_categories.
const MaxExcludedCategories = 100

// DefaultMaxTransfers is max_transfers when the PUT leaves it out.
const DefaultMaxTransfers = 1

func (c *Campaign) validateLife() error {
	if c.MaxTransfers != nil && (*c.MaxTransfers < 0 || *c.MaxTransfers > 100) {
		return fieldErr("max_transfers", "must be 0..100, got %d", *c.MaxTransfers)
	}
	if c.MaxTransfers != nil && !c.Transferable {
		return fieldErr("max_transfers", "only with \"transferable\": true")
	}
	for i, s := range c.SKUs {
		f := "skus[" + strconv.Itoa(i) + "]"
		if s.MinSpend < 0 || s.MinSpend > 1_000_000_000_000 {
			return fieldErr(f+".min_spend", "must be 0..1000000000000, got %d", s.MinSpend)
		}
		if len(s.ExcludedCategories) > MaxExcludedCategories {
			return fieldErr(f+".excluded_categories", "at most %d categories", MaxExcludedCategories)
		}
		seen := make(map[string]bool, len(s.ExcludedCategories))
		for j, cat := range s.ExcludedCategories {
			if !ValidID(cat) {
				return fieldErr(f+".excluded_categories["+strconv.Itoa(j)+"]", idRule)
			}
			if seen[cat] {
				return fieldErr(f+".excluded_categories["+strconv.Itoa(j)+"]", "duplicate category %q", cat)
			}
			seen[cat] = true
		}
	}
	return nil
}

// maxTransfers is the effective most-hops limit.
func (c *Campaign) maxTransfers() int64 {
	if !c.Transferable {
		return DefaultMaxTransfers
	}
	if c.MaxTransfers == nil {
		return DefaultMaxTransfers
	}
	return *c.MaxTransfers
}

type skuLife struct {
	minSpend int64
	excluded []string
}

type lifeRow struct {
	transferable bool
	maxTransfers int64
	skus         map[string]skuLife
}

// readLife reads a stored campaign's life fields (nil for a new campaign), before the
// PUT rewrites its SKU rows.
func readLife(ctx context.Context, tx pgx.Tx, id string, exists bool) (*lifeRow, error) {
	if !exists {
		return nil, nil
	}
	var l lifeRow
	if err := tx.QueryRow(ctx, `SELECT transferable, max_transfers FROM campaigns WHERE id = $1`, id).
		Scan(&l.transferable, &l.maxTransfers); err != nil {
		return nil, fmt.Errorf("read transfer settings: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT sku, min_spend, excluded_categories FROM campaign_skus WHERE campaign_id = $1`, id)
	if err != nil {
		return nil, fmt.Errorf("read SKU redeem rules: %w", err)
	}
	defer rows.Close()
	l.skus = map[string]skuLife{}
	for rows.Next() {
		var sku string
		var s skuLife
		if err := rows.Scan(&sku, &s.minSpend, &s.excluded); err != nil {
			return nil, fmt.Errorf("read SKU redeem rules: %w", err)
		}
		l.skus[sku] = s
	}
	return &l, rows.Err()
}

// storeLife writes the life fields and records in cp.lifeFrozen the first one that
// differs from what was stored (refused by the warm once the campaign has started).
func storeLife(ctx context.Context, tx pgx.Tx, cp *Campaign, prev *lifeRow) error {
	cp.lifeFrozen = ""
	if prev != nil {
		switch {
		case prev.transferable != cp.Transferable:
			cp.lifeFrozen = "transferable"
		case prev.maxTransfers != cp.maxTransfers():
			cp.lifeFrozen = "max_transfers"
		}
		for i, s := range cp.SKUs {
			if cp.lifeFrozen != "" {
				break
			}
			p := prev.skus[s.SKU]
			f := "skus[" + strconv.Itoa(i) + "]"
			switch {
			case p.minSpend != s.MinSpend:
				cp.lifeFrozen = f + ".min_spend"
			case !slices.Equal(sortedCopy(p.excluded), sortedCopy(s.ExcludedCategories)):
				cp.lifeFrozen = f + ".excluded_categories"
			}
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE campaigns SET transferable = $2, max_transfers = $3 WHERE id = $1`,
		cp.ID, cp.Transferable, cp.maxTransfers()); err != nil {
		return fmt.Errorf("put campaign %s transfer settings: %w", cp.ID, err)
	}
	for _, s := range cp.SKUs {
		if s.MinSpend == 0 && len(s.ExcludedCategories) == 0 {
			continue // the column defaults
		}
		ex := s.ExcludedCategories
		if ex == nil {
			ex = []string{}
		}
		if _, err := tx.Exec(ctx, `UPDATE campaign_skus SET min_spend = $3, excluded_categories = $4
			WHERE campaign_id = $1 AND sku = $2`, cp.ID, s.SKU, s.MinSpend, ex); err != nil {
			return fmt.Errorf("put campaign %s SKU %s redeem rules: %w", cp.ID, s.SKU, err)
		}
	}
	return nil
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
