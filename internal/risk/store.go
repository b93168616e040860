package risk

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/rkeys"
)

// RulesKey is the Redis hash of a level's rules: the global default when campaign is "".
func RulesKey(campaign string) string {
	if campaign == "" {
		return rkeys.RiskGlobalRules
	}
	return rkeys.RiskRules(campaign)
}

// ReadRules reads one level's rules from its hash. Fields that are not rule fields or do
// not parse are reported, not ignored: they would mean someone wrote the hash by hand.
func ReadRules(ctx context.Context, c redis.Cmdable, campaign string) (Rules, error) {
	key := RulesKey(campaign)
	h, err := c.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("read rules %s: %w", key, err)
	}
	return DecodeHash(key, h)
}

// FieldWarm is the field of the global rules hash (rkeys.RiskGlobalRules) that says
// Redis holds the risk state of its record in Postgres: the rebuild
// (internal/risk/riskstate) writes it, holding the run id of the Redis server it rebuilt
// on, after every other risk key; claim.lua answers NOT_WARM while it is absent. It is
// not a rule: DecodeHash skips it and WriteRules never touches it.
const FieldWarm = "warm"

// DecodeHash turns a rules hash into Rules.
func DecodeHash(key string, h map[string]string) (Rules, error) {
	r := make(Rules, len(h))
	for f, v := range h {
		if f == FieldWarm && key == rkeys.RiskGlobalRules {
			continue
		}
		s, ok := specByField[f]
		if !ok {
			return nil, fmt.Errorf("rules %s: unknown field %q", key, f)
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("rules %s: field %q=%q is not an integer", key, f, v)
		}
		r[s.Key] = n
	}
	return r, nil
}

// WriteRules queues the writes that turn a level's hash from old into new.
func WriteRules(ctx context.Context, p redis.Pipeliner, campaign string, old, new Rules) {
	key := RulesKey(campaign)
	var del []string
	var set []any
	for _, s := range Specs {
		ov, oo := old[s.Key]
		nv, no := new[s.Key]
		switch {
		case !no && oo:
			del = append(del, s.Field)
		case no && (!oo || ov != nv):
			set = append(set, s.Field, strconv.FormatInt(nv, 10))
		}
	}
	if len(del) > 0 {
		p.HDel(ctx, key, del...)
	}
	if len(set) > 0 {
		p.HSet(ctx, key, set...)
	}
}

// Kind is what a block or freeze applies to.
type Kind byte

// Kinds of blocked things.
const (
	Device Kind = rkeys.KindDevice
	IP     Kind = rkeys.KindIP
	User   Kind = rkeys.KindUser
)

// ParseKind reads device|ip|user.
func ParseKind(s string) (Kind, bool) {
	switch s {
	case "device":
		return Device, true
	case "ip":
		return IP, true
	case "user":
		return User, true
	}
	return 0, false
}

func (k Kind) String() string {
	switch k {
	case Device:
		return "device"
	case IP:
		return "ip"
	case User:
		return "user"
	}
	return "kind(" + string(k) + ")"
}

// NormalizeValue checks a blocked value the way the gateway will present it to the
// claim script: ids are 1-64 characters of [A-Za-z0-9._:-] (anything else can never
// match a claim), an IP is printed the way the gateway prints a client IP (IPv4-mapped
// IPv6 unmapped, IPv6 compressed), so a block of "::ffff:10.0.0.1" is a block of
// "10.0.0.1".
func NormalizeValue(k Kind, v string) (string, error) {
	if k == IP {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return "", fmt.Errorf("%q is not an IP address", v)
		}
		return a.Unmap().WithZone("").String(), nil
	}
	if !ValidID(v) {
		return "", fmt.Errorf("%q is not an id (1-64 characters of [A-Za-z0-9._:-])", v)
	}
	return v, nil
}

// ValidID reports whether s is a valid flashgate id.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// Entry is a block or a freeze as stored: the key's value is "reason\tactor\tat_ms" and
// its TTL is when it ends.
type Entry struct {
	Kind      Kind
	Value     string
	Frozen    bool // an auto-freeze set by the claim script, not a manual block
	Reason    string
	Actor     string
	At        time.Time
	ExpiresAt time.Time // zero: no expiry
}

// EncodeEntry is the stored value of a block.
func EncodeEntry(reason, actor string, at time.Time) string {
	return strings.ReplaceAll(reason, "\t", " ") + "\t" + actor + "\t" + strconv.FormatInt(at.UnixMilli(), 10)
}

func decodeEntry(e *Entry, v string) {
	f := strings.SplitN(v, "\t", 3)
	e.Reason = f[0]
	if len(f) > 1 {
		e.Actor = f[1]
	}
	if len(f) > 2 {
		if ms, err := strconv.ParseInt(f[2], 10, 64); err == nil {
			e.At = time.UnixMilli(ms).UTC()
		}
	}
}

// ReadEntry reads the block (frozen=false) or freeze of one value; ok is false if none.
func ReadEntry(ctx context.Context, c redis.Cmdable, k Kind, v string, frozen bool) (Entry, bool, error) {
	key := rkeys.Block(byte(k), v)
	if frozen {
		key = rkeys.Freeze(byte(k), v)
	}
	val, err := c.Get(ctx, key).Result()
	if err == redis.Nil {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, fmt.Errorf("read %s: %w", key, err)
	}
	ttl, err := c.PTTL(ctx, key).Result()
	if err != nil {
		return Entry{}, false, fmt.Errorf("read %s: %w", key, err)
	}
	e := Entry{Kind: k, Value: v, Frozen: frozen}
	decodeEntry(&e, val)
	if ttl > 0 {
		e.ExpiresAt = time.Now().Add(ttl).UTC().Truncate(time.Millisecond)
	}
	return e, true, nil
}

// indexMember is an entry's member in rkeys.RiskIndex.
func indexMember(k Kind, v string, frozen bool) string {
	if frozen {
		return "frz:" + string(k) + ":" + v
	}
	return "blk:" + string(k) + ":" + v
}

// IndexEntry queues recording a block (or freeze) in the index riskctl lists from,
// dropping what has expired; expiresAt zero removes it from the index.
func IndexEntry(ctx context.Context, p redis.Pipeliner, k Kind, v string, frozen bool, expiresAt time.Time) {
	p.ZRemRangeByScore(ctx, rkeys.RiskIndex, "-inf", strconv.FormatInt(time.Now().UnixMilli(), 10))
	if expiresAt.IsZero() {
		p.ZRem(ctx, rkeys.RiskIndex, indexMember(k, v, frozen))
		return
	}
	p.ZAdd(ctx, rkeys.RiskIndex, redis.Z{Score: float64(expiresAt.UnixMilli()), Member: indexMember(k, v, frozen)})
}

// ListEntries lists every block and freeze in force (of kind k, or all when k is 0),
// from the index that riskctl and claim.lua keep beside them.
func ListEntries(ctx context.Context, rdb *redis.Client, k Kind) ([]Entry, error) {
	members, err := rdb.ZRangeByScore(ctx, rkeys.RiskIndex, &redis.ZRangeBy{
		Min: "(" + strconv.FormatInt(time.Now().UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", rkeys.RiskIndex, err)
	}
	var out []Entry
	for _, m := range members {
		if len(m) < 7 || m[5] != ':' {
			continue
		}
		kind, frozen := Kind(m[4]), strings.HasPrefix(m, "frz:")
		if k != 0 && kind != k {
			continue
		}
		e, ok, err := ReadEntry(ctx, rdb, kind, m[6:], frozen)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		if out[i].Value != out[j].Value {
			return out[i].Value < out[j].Value
		}
		return !out[i].Frozen && out[j].Frozen
	})
	return out, nil
}

// ShadowCounts reads a campaign's would-be rejections let through by shadow mode, by
// reason.
func ShadowCounts(ctx context.Context, c redis.Cmdable, campaign string) (map[string]int64, error) {
	h, err := c.HGetAll(ctx, rkeys.ShadowRejections(campaign)).Result()
	if err != nil {
		return nil, fmt.Errorf("read shadow counts: %w", err)
	}
	out := make(map[string]int64, len(h))
	for f, v := range h {
		code, _ := strconv.Atoi(f)
		n, _ := strconv.ParseInt(v, 10, 64)
		out[ReasonOf(code)] += n
	}
	return out, nil
}

// DecodeEntry decodes a stored block or freeze value (as GET returns it); the expiry is
// not in the value (it is the key's TTL) and is left zero.
func DecodeEntry(k Kind, v string, frozen bool, val string) Entry {
	e := Entry{Kind: k, Value: v, Frozen: frozen}
	decodeEntry(&e, val)
	return e
}
