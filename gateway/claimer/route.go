package claimer

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/rkeys"
)

// A route is what the gateway must know about a campaign to build the claim script's
// KEYS: the business line and segment whose keys live outside the campaign's tag, and
// the key strings themselves, built once instead of per claim.
//
// Routes are cached. The script re-checks the business line and segment against the
// campaign's meta on every claim and answers CodeStale if the cache is behind (a
// campaign changed before it started), so a stale route costs one retry, never a wrong
// key.
type route struct {
	campaign string
	bl       string
	meta     string
	users    string
	blKey    string
	outbox   string
	inflight string
	rejects  string
	segKey   string // the meta key when the campaign has no segment
	// riskRules and shadowRejects are the campaign's risk keys (docs/RISK.md).
	riskRules     string
	shadowRejects string
	skuKeys       map[string]string
	expiresAt     time.Time
	missing       bool // negative entry: no such campaign
}

func (rt *route) skuKey(sku string) string {
	if k, ok := rt.skuKeys[sku]; ok {
		return k
	}
	return rkeys.SKU(rt.campaign, sku)
}

type routes struct {
	rdb      *redis.Client
	ttl      time.Duration
	negative time.Duration

	mu sync.RWMutex
	m  map[string]*route
}

func newRoutes(rdb *redis.Client, ttl, negative time.Duration) *routes {
	return &routes{rdb: rdb, ttl: ttl, negative: negative, m: make(map[string]*route)}
}

// get returns the campaign's route, or nil if the campaign does not exist.
func (rs *routes) get(ctx context.Context, campaign string, now time.Time) (*route, error) {
	rs.mu.RLock()
	rt := rs.m[campaign]
	rs.mu.RUnlock()
	if rt != nil && now.Before(rt.expiresAt) {
		if rt.missing {
			return nil, nil
		}
		return rt, nil
	}
	rt, err := rs.load(ctx, campaign, now)
	if err != nil {
		return nil, err
	}
	rs.mu.Lock()
	if len(rs.m) > 100_000 {
		// Negative entries for hostile campaign ids must not grow without bound.
		rs.m = make(map[string]*route)
	}
	rs.m[rt.campaign] = rt
	rs.mu.Unlock()
	if rt.missing {
		return nil, nil
	}
	return rt, nil
}

func (rs *routes) invalidate(campaign string) {
	rs.mu.Lock()
	delete(rs.m, campaign)
	rs.mu.Unlock()
}

func (rs *routes) load(ctx context.Context, campaign string, now time.Time) (*route, error) {
	// The caller's string may view a request buffer; the cache keeps its own copy.
	campaign = strings.Clone(campaign)
	pipe := rs.rdb.Pipeline()
	meta := pipe.HMGet(ctx, rkeys.Meta(campaign), "bl", "seg")
	skus := pipe.SMembers(ctx, rkeys.SKUs(campaign))
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, err
	}
	vals := meta.Val()
	bl, _ := vals[0].(string)
	if bl == "" {
		return &route{campaign: campaign, missing: true, expiresAt: now.Add(rs.negative)}, nil
	}
	seg, _ := vals[1].(string)
	rt := &route{
		campaign:      campaign,
		bl:            bl,
		meta:          rkeys.Meta(campaign),
		users:         rkeys.Users(campaign),
		blKey:         rkeys.BusinessLine(bl),
		outbox:        rkeys.Outbox(campaign),
		inflight:      rkeys.Inflight(campaign),
		rejects:       rkeys.Rejections(campaign),
		riskRules:     rkeys.RiskRules(campaign),
		shadowRejects: rkeys.ShadowRejections(campaign),
		skuKeys:       make(map[string]string, len(skus.Val())),
		expiresAt:     now.Add(rs.ttl),
	}
	rt.segKey = rt.meta
	if seg != "" {
		rt.segKey = rkeys.Segment(seg)
	}
	for _, s := range skus.Val() {
		rt.skuKeys[s] = rkeys.SKU(campaign, s)
	}
	return rt, nil
}
