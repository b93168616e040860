package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// Partner code pools (DESIGN.md "Partner code pools"): the import of a SKU's external
// codes and the pool's counts. Postgres (sku_codes) is the record of every code
// imported; Redis holds the pool claim.lua pops from (rkeys.CodePool) and the set of
// every code it has ever been given (rkeys.CodesAll), so a re-import never puts back a
// code that was handed out.

// Bounds of one import.
const (
	// MaxCodesBody is the largest import body (413 beyond it).
	MaxCodesBody = 8 << 20
	// MaxCodesPerPut is the most codes one PUT carries (400 beyond it); append more with
	// further PUTs.
	MaxCodesPerPut = 100_000
	// MaxCodeLen is the longest code; claim.MaxCodeLen (the record's bound) is above it.
	MaxCodeLen = 64
	// codesChunk codes per codes.lua call, so one call never holds Redis long.
	codesChunk = 5_000
)

// ErrTooLarge: the import body is over MaxCodesBody (413).
var ErrTooLarge = errors.New("codes: body too large")

// CodesImport is the answer of an import.
type CodesImport struct {
	CampaignID string `json:"campaign_id"`
	SKU        string `json:"sku"`
	// Received: distinct codes in the body; New: of those, not imported before
	// (Postgres); Added: put into the pool now (Redis; a code already seen by Redis is
	// never put back, so a retried import adds what the failed one did not).
	Received int `json:"received"`
	New      int `json:"new"`
	Added    int `json:"added"`
	PoolCounts
}

// PoolCounts are a pool's counts - never its codes. Imported: codes in Postgres;
// HandedOut: codes Redis handed out (accepted claims holding one, settled or in flight);
// Left: codes in the pool; Settled: claim rows holding a code.
type PoolCounts struct {
	Imported  int64 `json:"imported"`
	HandedOut int64 `json:"handed_out"`
	Left      int64 `json:"left"`
	Settled   int64 `json:"settled"`
}

// validCode: 1-MaxCodeLen characters of [A-Za-z0-9._:+/=-] (what partners' codes are
// made of; no spaces, quotes or control characters, so a code is safe in JSON, CSV and a
// Redis reply as it is).
func validCode(c []byte) bool {
	if len(c) == 0 || len(c) > MaxCodeLen {
		return false
	}
	for _, b := range c {
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' ||
			b == '.' || b == '_' || b == ':' || b == '+' || b == '/' || b == '=' || b == '-') {
			return false
		}
	}
	return true
}

// ParseCodes reads an import body: one code a line (LF or CRLF), blank lines ignored,
// duplicates kept once, in their first order. A bad line is a *FieldError naming it.
func ParseCodes(body []byte) ([]string, error) {
	if len(body) > MaxCodesBody {
		return nil, ErrTooLarge
	}
	seen := map[string]bool{}
	var out []string
	for n := 1; len(body) > 0; n++ {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			continue
		}
		if !validCode(line) {
			return nil, fieldErr("codes[line "+strconv.Itoa(n)+"]",
				"a code is 1-%d characters of [A-Za-z0-9._:+/=-]", MaxCodeLen)
		}
		if seen[string(line)] {
			continue
		}
		if len(out) == MaxCodesPerPut {
			return nil, fieldErr("codes", "at most %d codes per PUT (send the rest in another PUT: codes are appended)", MaxCodesPerPut)
		}
		seen[string(line)] = true
		out = append(out, string(line))
	}
	if len(out) == 0 {
		return nil, fieldErr("codes", "no code (one code a line)")
	}
	return out, nil
}

// PutCodes appends codes to a SKU's pool: Postgres first (the record a rebuild after a
// Redis loss reads), then Redis. Appending is the only change: a code already imported
// is skipped, a code is never removed. A failure after the Postgres write is made good
// by the same PUT again (codes.lua adds only what Redis has not seen).
func (c *Catalog) PutCodes(ctx context.Context, campaign, sku string, body []byte) (*CodesImport, error) {
	if !ValidID(campaign) || !ValidID(sku) {
		return nil, ErrNotFound
	}
	codes, err := ParseCodes(body)
	if err != nil {
		return nil, err
	}
	var one int
	err = c.pg.QueryRow(ctx, `SELECT 1 FROM campaign_skus WHERE campaign_id = $1 AND sku = $2`, campaign, sku).Scan(&one)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("codes of %s/%s: %w", campaign, sku, err)
	}
	tag, err := c.pg.Exec(ctx, `INSERT INTO sku_codes (campaign_id, sku, code)
		SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING`, campaign, sku, codes)
	if err != nil {
		return nil, fmt.Errorf("codes of %s/%s: record: %w", campaign, sku, err)
	}
	out := &CodesImport{CampaignID: campaign, SKU: sku, Received: len(codes), New: int(tag.RowsAffected())}
	keys := []string{rkeys.SKU(campaign, sku), rkeys.CodePool(campaign, sku), rkeys.CodesAll(campaign, sku), rkeys.Meta(campaign)}
	for i := 0; i < len(codes); i += codesChunk {
		part := codes[i:min(i+codesChunk, len(codes))]
		args := make([]any, len(part))
		for j, s := range part {
			args[j] = s
		}
		res, err := scripts.Codes.Run(ctx, c.rdb, keys, args...).Int64Slice()
		if err != nil {
			return nil, fmt.Errorf("codes of %s/%s: pool: %w", campaign, sku, err)
		}
		switch res[0] {
		case -1:
			return nil, fmt.Errorf("codes of %s/%s: the campaign is not in Redis (PUT it again): %w", campaign, sku, ErrRecovering)
		case -2:
			return nil, fmt.Errorf("codes of %s/%s: %w", campaign, sku, ErrRecovering)
		}
		out.Added += int(res[0])
	}
	pc, err := c.Pool(ctx, campaign, sku)
	if err != nil {
		return nil, err
	}
	out.PoolCounts = *pc
	return out, nil
}

// Pool reads a SKU's pool counts (ErrNotFound for a SKU the campaign does not have).
func (c *Catalog) Pool(ctx context.Context, campaign, sku string) (*PoolCounts, error) {
	if !ValidID(campaign) || !ValidID(sku) {
		return nil, ErrNotFound
	}
	var pc PoolCounts
	var known bool
	err := c.pg.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM campaign_skus WHERE campaign_id = $1 AND sku = $2),
			(SELECT count(*) FROM sku_codes WHERE campaign_id = $1 AND sku = $2),
			(SELECT count(*) FROM claims WHERE campaign_id = $1 AND sku = $2 AND partner_code IS NOT NULL)`,
		campaign, sku).Scan(&known, &pc.Imported, &pc.Settled)
	if err != nil {
		return nil, fmt.Errorf("pool of %s/%s: %w", campaign, sku, err)
	}
	if !known {
		return nil, ErrNotFound
	}
	var left, all *redis.IntCmd
	if _, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		left = p.SCard(ctx, rkeys.CodePool(campaign, sku))
		all = p.SCard(ctx, rkeys.CodesAll(campaign, sku))
		return nil
	}); err != nil {
		return nil, fmt.Errorf("pool of %s/%s: %w", campaign, sku, err)
	}
	pc.Left = left.Val()
	pc.HandedOut = all.Val() - pc.Left
	return &pc, nil
}
