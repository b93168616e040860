package recovery

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
)

// Lottery draws after a Redis loss (DESIGN.md "Lottery", "Redis-loss recovery"). A draw
// that won nothing is no claims row, only a draws row (outcome no_prize), yet it took one
// from the user's per_user_limit and its request_id must keep its outcome; and a
// lottery's meta carries its kind and odds, which claim.lua draws by. rebuild.lua writes
// neither, so this file gives the rebuild what the books say of them:
//
//   - the kind and the odds field, written into the (fenced) meta before rebuild.lua
//     unfences the campaign, so the first claim after the rebuild is a draw again;
//   - the no-prize draws in the per-user counts, the idempotency records and the
//     committed check of the outbox (rebuild.go's queries);
//   - the no-prize draws still in the outbox, counted per user here rather than by
//     rebuild.lua, which would add them to the campaign's "taken" (claims only).

// campaignKind is a campaign's kind and, for a lottery, its odds field as claim.lua and
// the gateway's route read it (internal/catalog OddsField; recovery cannot import the
// catalog, which imports it).
type campaignKind struct {
	kind, odds string
}

func (k campaignKind) lottery() bool { return k.kind == "lottery" }

// maxOddsSearch bounds the prize orders tried when the books' row order does not give
// back the stored odds version (orders of up to 8 prizes: 40,320 hashes at most).
const maxOddsSearch = 8

// readKind reads the campaign's kind and rebuilds a lottery's odds field from the books.
// The odds field's version is the SHA-256 of its text, which lists the prizes in the
// order of the campaign's definition; Postgres keeps the weights and the version but no
// order, so the rows are tried in the order they were written (a PUT rewrites them in
// its order), then sorted, then every order of up to maxOddsSearch prizes - each checked
// against the stored version, so a field is written only when it is the one the draws
// were made under.
func readKind(ctx context.Context, tx pgx.Tx, campaign string) (campaignKind, error) {
	var k campaignKind
	var w0 *int64
	var ver *string
	if err := tx.QueryRow(ctx, `SELECT kind, no_prize_weight, odds_version FROM campaigns WHERE id = $1`, campaign).
		Scan(&k.kind, &w0, &ver); err != nil {
		return k, err
	}
	if !k.lottery() {
		return k, nil
	}
	if w0 == nil || ver == nil {
		return k, fmt.Errorf("lottery %s has no odds in the books (no_prize_weight or odds_version is NULL)", campaign)
	}
	rows, err := tx.Query(ctx, `SELECT sku, coalesce(weight, 0) FROM campaign_skus WHERE campaign_id = $1 ORDER BY ctid`, campaign)
	if err != nil {
		return k, err
	}
	type prize struct {
		sku    string
		weight int64
	}
	prizes, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (prize, error) {
		var p prize
		err := r.Scan(&p.sku, &p.weight)
		return p, err
	})
	if err != nil {
		return k, err
	}
	field := func(order []prize) string {
		var b strings.Builder
		b.WriteString(strconv.FormatInt(*w0, 10))
		for _, p := range order {
			b.WriteByte('\t')
			b.WriteString(p.sku)
			b.WriteByte('\t')
			b.WriteString(strconv.FormatInt(p.weight, 10))
		}
		rest := b.String()
		sum := sha256.Sum256([]byte(rest))
		if hex.EncodeToString(sum[:8]) != *ver {
			return ""
		}
		return *ver + "\t" + rest
	}
	if k.odds = field(prizes); k.odds != "" {
		return k, nil
	}
	sorted := append([]prize(nil), prizes...)
	for i := 1; i < len(sorted); i++ { // insertion sort by sku: a handful of prizes
		for j := i; j > 0 && sorted[j].sku < sorted[j-1].sku; j-- {
			sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
		}
	}
	if k.odds = field(sorted); k.odds != "" {
		return k, nil
	}
	if len(prizes) <= maxOddsSearch {
		// Heap's algorithm over every order.
		a := append([]prize(nil), prizes...)
		c := make([]int, len(a))
		for i := 0; i < len(a); {
			if c[i] < i {
				if i%2 == 0 {
					a[0], a[i] = a[i], a[0]
				} else {
					a[c[i]], a[i] = a[i], a[c[i]]
				}
				if k.odds = field(a); k.odds != "" {
					return k, nil
				}
				c[i]++
				i = 0
			} else {
				c[i] = 0
				i++
			}
		}
	}
	return k, fmt.Errorf("lottery %s: no order of its %d prizes gives back its odds version %s", campaign, len(prizes), *ver)
}

// writeKind writes the kind (and a lottery's odds) into the campaign's meta, still
// fenced: claim.lua reads no "bl" from a lost meta, and the gateway's route answers 503
// while "recovering" is set, so nothing is decided on the meta before rebuild.lua
// completes it. A meta that survived (a restart) already holds the same values.
func writeKind(ctx context.Context, rdb *redis.Client, campaign string, k campaignKind) error {
	if k.kind == "" {
		return nil
	}
	fields := []any{"kind", k.kind}
	if k.odds != "" {
		fields = append(fields, "odds", k.odds)
	}
	if err := rdb.HSet(ctx, rkeys.Meta(campaign), fields...).Err(); err != nil {
		return fmt.Errorf("restore kind and odds: %w", err)
	}
	return nil
}

// countNoPrizeInFlight adds to the rebuilt per-user counts the draws that won nothing and
// are still only in the outbox (not draws rows in the snapshot), unless their record says
// they were voided (void.lua gives the count back) - as rebuild.lua does for claims. It
// runs before rebuild.lua swaps the copy in, with the campaign fenced; a void between the
// record check and the swap can only leave one draw counted too many, which refuses a
// draw rather than allowing one beyond the limit.
func (r *Recoverer) countNoPrizeInFlight(ctx context.Context, campaign, usersNew string, draws []inFlight) error {
	if len(draws) == 0 {
		return nil
	}
	pipe := r.rdb.Pipeline()
	recs := make([]*redis.StringCmd, len(draws))
	for i, d := range draws {
		recs[i] = pipe.Get(ctx, rkeys.Request(campaign, d.requestID))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read no-prize draws in flight: %w", err)
	}
	add := r.rdb.Pipeline()
	for i, d := range draws {
		if v := recs[i].Val(); v != "" {
			if st, id := claim.IdemState(v); id != d.claimID || st == claim.IdemVoided || st == claim.IdemRejected {
				continue
			}
		}
		add.HIncrBy(ctx, usersNew, d.user, 1)
	}
	if add.Len() == 0 {
		return nil
	}
	if _, err := add.Exec(ctx); err != nil {
		return fmt.Errorf("count no-prize draws in flight: %w", err)
	}
	return nil
}
