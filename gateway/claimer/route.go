package claimer

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// pushes is the campaign's push escrow hash (DESIGN.md "Push").
	pushes string
	skus   map[string]*skuRoute
	// points: a points_item campaign's prices by SKU (points.go); nil for a voucher.
	points    map[string]int64
	expiresAt time.Time
	missing   bool // negative entry: no such campaign

	// What the short-circuit needs (DESIGN.md "The path of a claim"): the campaign's
	// window and paused flag as of the load, in Redis milliseconds.
	startsMs, endsMs int64
	paused           bool
	// dead is set when a notification (or this gateway's own void) said the campaign's
	// stock or definition changed: nothing concluded from this route may short-circuit
	// a claim any more. A dead route is still a correct source of key names.
	dead atomic.Bool
	// lottery is a lottery campaign's odds (lottery.go), nil for another kind.
	lottery *lotteryOdds
	// refreshing is held by the one caller that reloads an expired route; the others
	// keep using this one meanwhile.
	refreshing atomic.Bool
}

// skuRoute is one SKU's key and what the gateway has concluded about it.
type skuRoute struct {
	key string
	// pool is the SKU's partner code pool (DESIGN.md "Partner code pools"; claim.lua
	// reads it only when the SKU hash says the SKU has one).
	pool string
	// soldOut: claim.lua answered sold_out for this SKU (stock <= 0) while this route
	// was alive. Dies with the route: at the latest after RouteTTL, at once on a
	// notification.
	soldOut atomic.Bool
}

func (rt *route) skuKey(sku string) string {
	if s, ok := rt.skus[sku]; ok {
		return s.key
	}
	return rkeys.SKU(rt.campaign, sku)
}

func (rt *route) poolKey(sku string) string {
	if s, ok := rt.skus[sku]; ok {
		return s.pool
	}
	return rkeys.CodePool(rt.campaign, sku)
}

type routes struct {
	rdb      *redis.Client
	ttl      time.Duration
	negative time.Duration

	mu sync.RWMutex
	m  map[string]*route
	// epoch counts invalidations. A route whose load began before one is stored dead:
	// what it read may predate the change that was announced while it loaded.
	epoch atomic.Uint64
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
	// An expired route is reloaded by one caller; the others keep using it meanwhile
	// (for at most one more TTL), so a hot campaign's expiry is one Redis round trip,
	// not one per claim in flight at that moment.
	refresher := false
	if rt != nil && !rt.missing && now.Before(rt.expiresAt.Add(rs.ttl)) {
		if !rt.refreshing.CompareAndSwap(false, true) {
			return rt, nil
		}
		refresher = true
	}
	old := rt
	epoch := rs.epoch.Load()
	rt, err := rs.load(ctx, campaign, now)
	if err != nil {
		if refresher {
			old.refreshing.Store(false)
		}
		return nil, err
	}
	rs.mu.Lock()
	if len(rs.m) > 100_000 {
		// Negative entries for hostile campaign ids must not grow without bound.
		rs.m = make(map[string]*route)
	}
	if cur := rs.m[rt.campaign]; cur != nil && cur != old {
		// Another caller stored a newer route (or a notification removed old): keep
		// the map's; ours is as good for key names.
		rs.mu.Unlock()
		if rt.missing {
			return nil, nil
		}
		return rt, nil
	}
	if rs.epoch.Load() != epoch {
		// Something was invalidated while we loaded: what we read may predate the
		// change it announced. Good for key names, not for short-circuits.
		rt.dead.Store(true)
	} else {
		rs.m[rt.campaign] = rt
	}
	rs.mu.Unlock()
	if rt.missing {
		return nil, nil
	}
	return rt, nil
}

// invalidate forgets a campaign's route and kills it, so claims already holding it stop
// short-circuiting too.
func (rs *routes) invalidate(campaign string) {
	rs.mu.Lock()
	rs.epoch.Add(1)
	if rt := rs.m[campaign]; rt != nil {
		rt.dead.Store(true)
		delete(rs.m, campaign)
	}
	rs.mu.Unlock()
}

// invalidateAll kills every route (a subscription reconnect: notifications may have been
// missed).
func (rs *routes) invalidateAll() {
	rs.mu.Lock()
	rs.epoch.Add(1)
	for _, rt := range rs.m {
		rt.dead.Store(true)
	}
	rs.m = make(map[string]*route)
	rs.mu.Unlock()
}

func (rs *routes) load(ctx context.Context, campaign string, now time.Time) (*route, error) {
	// The caller's string may view a request buffer; the cache keeps its own copy.
	campaign = strings.Clone(campaign)
	pipe := rs.rdb.Pipeline()
	meta := pipe.HMGet(ctx, rkeys.Meta(campaign), "bl", "seg", "starts", "ends", "paused", rkeys.FieldRecovering, "kind", "odds")
	skus := pipe.SMembers(ctx, rkeys.SKUs(campaign))
	prices := pipe.HGetAll(ctx, rkeys.PointsPrices(campaign)) // points.go
	known := pipe.Exists(ctx, rkeys.Campaigns)
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, err
	}
	vals := meta.Val()
	bl, _ := vals[0].(string)
	if bl == "" {
		if vals[5] != nil || known.Val() == 0 {
			// A recovery is rebuilding the campaign (fence.lua left only its token), or
			// this Redis holds no campaign at all (it lost its data and no recovery has
			// started yet): the campaign may well exist - 503, retry; never cached.
			return nil, errRebuilding
		}
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
		pushes:        rkeys.Pushes(campaign),
		skus:          make(map[string]*skuRoute, len(skus.Val())),
		expiresAt:     now.Add(rs.ttl),
	}
	rt.startsMs, rt.endsMs = metaInt(vals[2]), metaInt(vals[3])
	rt.paused = vals[4] != nil && vals[4] != "0" && vals[4] != ""
	if kind, _ := vals[6].(string); kind == "lottery" {
		o, _ := vals[7].(string)
		if rt.lottery = parseOdds(o); rt.lottery == nil {
			// A lottery without readable odds cannot draw: retry, never a voucher claim.
			return nil, errRebuilding
		}
	}
	rt.segKey = rt.meta
	if seg != "" {
		rt.segKey = rkeys.Segment(seg)
	}
	for _, s := range skus.Val() {
		rt.skus[s] = &skuRoute{key: rkeys.SKU(campaign, s), pool: rkeys.CodePool(campaign, s)}
	}
	rt.points = parsePrices(prices.Val())
	return rt, nil
}

// errRebuilding: the campaign's state is being rebuilt (or is about to be): retry.
var errRebuilding = errors.New("campaign state is being rebuilt after a Redis loss")

func metaInt(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
