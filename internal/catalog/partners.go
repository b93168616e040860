package catalog

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/rkeys"
)

// Partners (CONTRACT.md "End users, owners and partners"; DESIGN.md "Partners"). A
// partner back end claims for its own users with X-Partner-Key. Postgres is the record
// of partners, their key digests and their quota per campaign; Redis holds the quotas
// the claim script reads (rkeys.PartnerQuotas) and what each partner has taken. The
// gateway answers X-Partner-Key from an in-memory index of key digests that it reloads
// from Postgres every PartnerRefresh, so a key is never looked up in Postgres on the
// claim path (an unknown-key flood costs a SHA-256 and a map lookup).

// PartnerKeyPrefix starts every partner key, so a leaked key is recognisable (secret
// scanners, logs) and never mistaken for a user token.
const PartnerKeyPrefix = "fgp_"

// PartnerRefresh is how often a gateway reloads the partner key index from Postgres:
// a key registered or rotated through another gateway works here (and a rotated key
// stops working here) at most this long after its PUT.
const PartnerRefresh = 5 * time.Second

// MaxPartnerIDLen keeps "<partner>:<user_id>" readable and a partner id short.
const MaxPartnerIDLen = 32

// PartnerRef is what a valid key identifies.
type PartnerRef struct {
	ID string
	// Channel is "partner:<id>": the claims' channel and the claim script's argument.
	Channel string
}

// Partner is a partner as the admin API shows it. The key is never part of it.
type Partner struct {
	ID      string           `json:"partner_id"`
	Name    string           `json:"name"`
	Channel string           `json:"channel"`
	Quotas  map[string]int64 `json:"quotas"`
	// Taken is how many claims the partner has taken per campaign (Redis; absent when
	// Redis could not be read).
	Taken        map[string]int64 `json:"taken,omitempty"`
	KeyRotatedAt time.Time        `json:"key_rotated_at"`
	CreatedAt    time.Time        `json:"created_at"`
	UpdatedAt    time.Time        `json:"updated_at"`
}

// PartnerPut is the body of PUT /admin/v1/partners/{id}.
type PartnerPut struct {
	Name string `json:"name"`
	// Quotas replaces the partner's quotas (campaign → claims); absent: unchanged.
	Quotas map[string]int64 `json:"quotas"`
	// RotateKey issues a new key; the old one stops working.
	RotateKey bool `json:"rotate_key"`
}

// PartnerPutResult is the answer of a PUT: the partner, and its key when one was issued
// (a new partner or rotate_key) - the only time the key is ever shown.
type PartnerPutResult struct {
	Partner
	Key     string `json:"key,omitempty"`
	Created bool   `json:"created"`
	// Warmed is false when Postgres has the change but Redis could not be given the
	// quotas: repeat the PUT (without rotate_key) to warm them.
	Warmed bool `json:"warmed"`
}

// ValidPartnerID reports whether id is 1-32 characters of [A-Za-z0-9_-]: no ':' (it
// separates the partner from its user) and no '.'.
func ValidPartnerID(id string) bool {
	if len(id) == 0 || len(id) > MaxPartnerIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// MaxPartnerQuota bounds one quota, like a SKU's stock.
const MaxPartnerQuota = 1_000_000_000

func (p *PartnerPut) validate(id string) error {
	if !ValidPartnerID(id) {
		return fieldErr("id", "must be 1-%d characters of [A-Za-z0-9_-]", MaxPartnerIDLen)
	}
	if strings.TrimSpace(p.Name) == "" || len(p.Name) > 200 {
		return fieldErr("name", "required, at most 200 characters")
	}
	if len(p.Quotas) > 10000 {
		return fieldErr("quotas", "at most 10000 campaigns")
	}
	for _, c := range sortedCampaigns(p.Quotas) {
		q := p.Quotas[c]
		switch {
		case !ValidID(c):
			return fieldErr("quotas."+c, "campaign id "+idRule)
		case q < 0 || q > MaxPartnerQuota:
			return fieldErr("quotas."+c, "must be 0..%d, got %d", MaxPartnerQuota, q)
		}
	}
	return nil
}

func sortedCampaigns(m map[string]int64) []string {
	out := make([]string, 0, len(m))
	for c := range m {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// newPartnerKey returns a fresh key (256 bits from the CSPRNG) and its digest.
func newPartnerKey() (string, [sha256.Size]byte, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", [sha256.Size]byte{}, fmt.Errorf("partner key: %w", err)
	}
	key := PartnerKeyPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	return key, sha256.Sum256([]byte(key)), nil
}

// PutPartner registers or updates a partner: Postgres first (one transaction), then the
// quotas in Redis, then this gateway's key index.
func (c *Catalog) PutPartner(ctx context.Context, id string, in *PartnerPut) (*PartnerPutResult, error) {
	if err := in.validate(id); err != nil {
		return nil, err
	}
	tx, err := c.pg.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("put partner %s: %w", id, err)
	}
	defer tx.Rollback(ctx)
	res := &PartnerPutResult{}
	var rotated time.Time
	err = tx.QueryRow(ctx, `SELECT key_rotated_at FROM partners WHERE id = $1 FOR UPDATE`, id).Scan(&rotated)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		res.Created = true
	case err != nil:
		return nil, fmt.Errorf("put partner %s: %w", id, err)
	}
	var digest [sha256.Size]byte
	if res.Created || in.RotateKey {
		if res.Key, digest, err = newPartnerKey(); err != nil {
			return nil, err
		}
	}
	if in.Quotas != nil && len(in.Quotas) > 0 {
		camps := sortedCampaigns(in.Quotas)
		var known []string
		if err := pgxCollect(ctx, tx, &known, `SELECT id FROM campaigns WHERE id = ANY($1)`, camps); err != nil {
			return nil, fmt.Errorf("put partner %s: %w", id, err)
		}
		have := make(map[string]bool, len(known))
		for _, k := range known {
			have[k] = true
		}
		for _, cp := range camps {
			if !have[cp] {
				return nil, fieldErr("quotas."+cp, "unknown campaign %q (PUT /admin/v1/campaigns/%s first)", cp, cp)
			}
		}
	}
	switch {
	case res.Created:
		// ON CONFLICT: two first PUTs at once; the loser fails and its caller retries
		// (the partner then exists and keeps the winner's key).
		_, err = tx.Exec(ctx, `INSERT INTO partners (id, name, key_sha256) VALUES ($1, $2, $3)`, id, in.Name, digest[:])
	case in.RotateKey:
		_, err = tx.Exec(ctx, `UPDATE partners SET name = $2, key_sha256 = $3, key_rotated_at = now(), updated_at = now()
			WHERE id = $1`, id, in.Name, digest[:])
	default:
		_, err = tx.Exec(ctx, `UPDATE partners SET name = $2, updated_at = now() WHERE id = $1`, id, in.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("put partner %s: %w", id, err)
	}
	// Every campaign whose quota may change: the old ones and the new ones.
	var touched []string
	if err := pgxCollect(ctx, tx, &touched, `SELECT campaign_id FROM partner_quotas WHERE partner_id = $1`, id); err != nil {
		return nil, fmt.Errorf("put partner %s quotas: %w", id, err)
	}
	if in.Quotas != nil {
		if _, err := tx.Exec(ctx, `DELETE FROM partner_quotas WHERE partner_id = $1`, id); err != nil {
			return nil, fmt.Errorf("put partner %s quotas: %w", id, err)
		}
		rows := make([][]any, 0, len(in.Quotas))
		for _, cp := range sortedCampaigns(in.Quotas) {
			rows = append(rows, []any{id, cp, in.Quotas[cp]})
			touched = append(touched, cp)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"partner_quotas"}, []string{"partner_id", "campaign_id", "quota"},
			pgx.CopyFromRows(rows)); err != nil {
			return nil, fmt.Errorf("put partner %s quotas: %w", id, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("put partner %s: %w", id, err)
	}
	// From here the change is the record. The key (if any) must reach the caller even
	// when Redis fails: it is never shown again.
	res.Warmed = c.warmPartnerQuotas(ctx, id, touched) == nil
	// This gateway knows the new key at once; others within PartnerRefresh. A failed
	// reload here is caught up by WatchPartners.
	_ = c.RefreshPartners(ctx)
	p, err := c.Partner(ctx, id)
	if err != nil {
		p = &Partner{ID: id, Name: in.Name, Channel: "partner:" + id, Quotas: in.Quotas}
	}
	res.Partner = *p
	return res, nil
}

// pgxCollect runs a one-text-column query into out.
func pgxCollect(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, out *[]string, sql string, args ...any) error {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	v, err := pgx.CollectRows(rows, pgx.RowTo[string])
	*out = append(*out, v...)
	return err
}

// warmPartnerQuotas writes one partner's quota in each of campaigns into Redis from
// Postgres (removing it where it has none). What the partner has taken is never
// touched: it is Redis's to count.
func (c *Catalog) warmPartnerQuotas(ctx context.Context, partner string, campaigns []string) error {
	if len(campaigns) == 0 {
		return nil
	}
	rows, err := c.pg.Query(ctx, `SELECT campaign_id, quota FROM partner_quotas WHERE partner_id = $1`, partner)
	if err != nil {
		return fmt.Errorf("warm partner %s: %w", partner, err)
	}
	quotas := map[string]int64{}
	for rows.Next() {
		var cp string
		var q int64
		if err := rows.Scan(&cp, &q); err != nil {
			rows.Close()
			return fmt.Errorf("warm partner %s: %w", partner, err)
		}
		quotas[cp] = q
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("warm partner %s: %w", partner, err)
	}
	// One campaign's hash per call: each campaign is its own slot.
	for _, cp := range campaigns {
		k := rkeys.PartnerQuotas(cp)
		if q, ok := quotas[cp]; ok {
			err = c.rdb.HSet(ctx, k, rkeys.PartnerQuotaField(partner), q).Err()
		} else {
			err = c.rdb.HDel(ctx, k, rkeys.PartnerQuotaField(partner)).Err()
		}
		if err != nil {
			return fmt.Errorf("warm partner %s quota in %s: %w", partner, cp, err)
		}
	}
	return nil
}

// campaignPartnerQuotas reads every partner quota of a campaign, for its warm.
func (c *Catalog) campaignPartnerQuotas(ctx context.Context, campaign string) (map[string]int64, error) {
	rows, err := c.pg.Query(ctx, `SELECT partner_id, quota FROM partner_quotas WHERE campaign_id = $1`, campaign)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var p string
		var q int64
		if err := rows.Scan(&p, &q); err != nil {
			return nil, err
		}
		out[p] = q
	}
	return out, rows.Err()
}

// queuePartnerQuotas adds the quotas to a campaign's warm (its MULTI).
func queuePartnerQuotas(ctx context.Context, p redis.Pipeliner, campaign string, quotas map[string]int64) {
	if len(quotas) == 0 {
		return
	}
	vals := make([]any, 0, 2*len(quotas))
	for partner, q := range quotas {
		vals = append(vals, rkeys.PartnerQuotaField(partner), q)
	}
	p.HSet(ctx, rkeys.PartnerQuotas(campaign), vals...)
}

const partnerColumns = `p.id, p.name, p.key_rotated_at, p.created_at, p.updated_at,
	coalesce((SELECT json_object_agg(q.campaign_id, q.quota) FROM partner_quotas q WHERE q.partner_id = p.id), '{}')`

func scanPartner(row pgx.Row) (*Partner, error) {
	var p Partner
	if err := row.Scan(&p.ID, &p.Name, &p.KeyRotatedAt, &p.CreatedAt, &p.UpdatedAt, &p.Quotas); err != nil {
		return nil, err
	}
	p.Channel = "partner:" + p.ID
	return &p, nil
}

// Partner reads one partner (without its key) and what it has taken per campaign.
func (c *Catalog) Partner(ctx context.Context, id string) (*Partner, error) {
	if !ValidPartnerID(id) {
		return nil, ErrNotFound
	}
	p, err := scanPartner(c.pg.QueryRow(ctx, `SELECT `+partnerColumns+` FROM partners p WHERE p.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("partner %s: %w", id, err)
	}
	c.partnerTaken(ctx, []*Partner{p})
	return p, nil
}

// Partners lists every partner (without keys), by id.
func (c *Catalog) Partners(ctx context.Context) ([]*Partner, error) {
	rows, err := c.pg.Query(ctx, `SELECT `+partnerColumns+` FROM partners p ORDER BY p.id`)
	if err != nil {
		return nil, fmt.Errorf("partners: %w", err)
	}
	defer rows.Close()
	out := []*Partner{}
	for rows.Next() {
		p, err := scanPartner(rows)
		if err != nil {
			return nil, fmt.Errorf("partners: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("partners: %w", err)
	}
	c.partnerTaken(ctx, out)
	return out, nil
}

// partnerTaken fills in Taken from Redis; on a Redis error it is left out.
func (c *Catalog) partnerTaken(ctx context.Context, ps []*Partner) {
	type q struct {
		p   *Partner
		cp  string
		cmd *redis.StringCmd
	}
	var qs []q
	pipe := c.rdb.Pipeline()
	for _, p := range ps {
		for cp := range p.Quotas {
			qs = append(qs, q{p, cp, pipe.HGet(ctx, rkeys.PartnerQuotas(cp), rkeys.PartnerTakenField(p.ID))})
		}
	}
	if len(qs) == 0 {
		return
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return
	}
	for _, x := range qs {
		n, err := x.cmd.Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			continue
		}
		if x.p.Taken == nil {
			x.p.Taken = map[string]int64{}
		}
		x.p.Taken[x.cp] = n
	}
}

// partnerIndex is the in-memory key index: digest → partner, and the partner ids (which
// an app user_id may not use as its prefix).
type partnerIndex struct {
	byDigest map[[sha256.Size]byte]PartnerRef
	ids      map[string]bool
}

// RefreshPartners reloads the key index from Postgres.
func (c *Catalog) RefreshPartners(ctx context.Context) error {
	rows, err := c.pg.Query(ctx, `SELECT id, key_sha256 FROM partners`)
	if err != nil {
		return fmt.Errorf("partner keys: %w", err)
	}
	defer rows.Close()
	idx := &partnerIndex{byDigest: map[[sha256.Size]byte]PartnerRef{}, ids: map[string]bool{}}
	for rows.Next() {
		var id string
		var d []byte
		if err := rows.Scan(&id, &d); err != nil {
			return fmt.Errorf("partner keys: %w", err)
		}
		if len(d) != sha256.Size {
			continue
		}
		idx.byDigest[[sha256.Size]byte(d)] = PartnerRef{ID: id, Channel: "partner:" + id}
		idx.ids[id] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("partner keys: %w", err)
	}
	c.partners.Store(idx)
	return nil
}

// WatchPartners loads the key index and reloads it every PartnerRefresh until ctx ends.
// A failed load keeps the last index (partners keep claiming through a Postgres outage;
// a key rotated meanwhile keeps working here until the next good load).
func (c *Catalog) WatchPartners(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(PartnerRefresh)
	defer t.Stop()
	failing := false
	for {
		lctx, cancel := context.WithTimeout(ctx, PartnerRefresh)
		err := c.RefreshPartners(lctx)
		cancel()
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			failing = true
			log.Warn("partner keys could not be loaded; keeping the last ones", "err", err)
		case err == nil && failing:
			failing = false
			log.Info("partner keys loaded again")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// PartnerByKey returns the partner whose key this is. The key is hashed and the digest
// looked up: comparing digests, not keys, means the lookup's timing can tell at most
// something about a SHA-256 digest, from which the key cannot be recovered.
// It returns the partner's id and channel ("partner:<id>").
func (c *Catalog) PartnerByKey(key []byte) (id, channel string, ok bool) {
	idx := c.partners.Load()
	if idx == nil {
		return "", "", false
	}
	ref, ok := idx.byDigest[sha256.Sum256(key)]
	return ref.ID, ref.Channel, ok
}

// IsPartner reports whether id is a registered partner (as of the last index load).
func (c *Catalog) IsPartner(id []byte) bool {
	idx := c.partners.Load()
	return idx != nil && idx.ids[string(id)]
}

// partnersIndex is the field Catalog keeps the index in.
type partnersIndex = atomic.Pointer[partnerIndex]
