package settle

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/claim"
)

func rec(campaign, claimID string) claim.Record {
	return claim.Record{Version: 1, ClaimID: claimID, RequestID: "r-" + claimID, CampaignID: campaign,
		BusinessLine: "bl", SKU: "s", UserID: "u", DeviceID: "d", IP: "1.2.3.4", Value: 50,
		ClaimedAtMs: 1_700_000_000_000, ExpiresAtMs: 1_700_000_000_000 + 3600_000, OutboxID: "1-0"}
}

func TestGroup(t *testing.T) {
	type in struct{ campaign, claim string }
	tests := []struct {
		name string
		in   []in
		want map[string][]string // campaign -> claim ids, in order
		nth  []string            // campaigns in order of first appearance
	}{
		{name: "empty", in: nil, want: map[string][]string{}, nth: nil},
		{name: "one campaign keeps offset order", in: []in{{"a", "1"}, {"a", "2"}, {"a", "3"}},
			want: map[string][]string{"a": {"1", "2", "3"}}, nth: []string{"a"}},
		{name: "interleaved campaigns", in: []in{{"b", "1"}, {"a", "2"}, {"b", "3"}, {"a", "4"}},
			want: map[string][]string{"a": {"2", "4"}, "b": {"1", "3"}}, nth: []string{"b", "a"}},
		{name: "a redelivered claim in the same batch is kept once, first position",
			in:   []in{{"a", "1"}, {"a", "2"}, {"a", "1"}, {"b", "9"}, {"a", "2"}},
			want: map[string][]string{"a": {"1", "2"}, "b": {"9"}}, nth: []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var items []*item
			for i, x := range tt.in {
				items = append(items, &item{rec: rec(x.campaign, x.claim), offset: int64(i)})
			}
			groups := group(items)
			got := map[string][]string{}
			var nth []string
			for _, g := range groups {
				nth = append(nth, g.campaign)
				for _, it := range g.items {
					if it.rec.CampaignID != g.campaign {
						t.Fatalf("claim %s of campaign %s grouped under %s", it.rec.ClaimID, it.rec.CampaignID, g.campaign)
					}
					got[g.campaign] = append(got[g.campaign], it.rec.ClaimID)
				}
			}
			if !reflect.DeepEqual(got, tt.want) || !reflect.DeepEqual(nth, tt.nth) {
				t.Fatalf("group: got %v in order %v; want %v in order %v", got, nth, tt.want, tt.nth)
			}
			if len(groups) > 0 && groups[0].items[0].offset != 0 {
				t.Fatalf("first claim kept at offset %d, want 0", groups[0].items[0].offset)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	good := rec("c", "c.1")
	tests := []struct {
		name    string
		mutate  func(r *claim.Record)
		raw     string
		wantErr error
	}{
		{name: "valid", mutate: func(*claim.Record) {}},
		{name: "not json", raw: "{", wantErr: claim.ErrMalformed},
		{name: "future version", mutate: func(r *claim.Record) { r.Version = claim.Version + 1 }, wantErr: claim.ErrVersion},
		{name: "missing user", mutate: func(r *claim.Record) { r.UserID = "" }, wantErr: claim.ErrMissingData},
		{name: "NUL in ip", mutate: func(r *claim.Record) { r.IP = "1.2\x00" }, wantErr: errUnwritable},
		{name: "NUL in claim id", mutate: func(r *claim.Record) { r.ClaimID = "c.\x001" }, wantErr: errUnwritable},
		{name: "expiry past year 9999", mutate: func(r *claim.Record) { r.ExpiresAtMs = maxStorableMs + 1 }, wantErr: errUnwritable},
		{name: "expiry at the last storable second", mutate: func(r *claim.Record) { r.ExpiresAtMs = maxStorableMs }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.raw)
			if tt.mutate != nil {
				r := good
				tt.mutate(&r)
				b = r.AppendJSON(nil)
			}
			_, err := decode(b)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("decode: got %v; want %v", err, tt.wantErr)
			}
		})
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	ok := Config{Brokers: []string{"127.0.0.1:19092"}, Group: "g"}
	tests := []struct {
		name   string
		mutate func(c *Config)
		field  string
	}{
		{"no brokers", func(c *Config) { c.Brokers = nil }, "Brokers"},
		{"blank broker", func(c *Config) { c.Brokers = []string{"127.0.0.1:1", " "} }, "Brokers[1]"},
		{"broker without port", func(c *Config) { c.Brokers = []string{"localhost"} }, "Brokers[0]"},
		{"bad topic", func(c *Config) { c.Topic = "flash claims" }, "Topic"},
		{"no group", func(c *Config) { c.Group = " " }, "Group"},
		{"group with space", func(c *Config) { c.Group = "a b" }, "Group"},
		{"session too short", func(c *Config) { c.SessionTimeout = time.Second }, "SessionTimeout"},
		{"batch negative", func(c *Config) { c.MaxBatch = -1 }, "MaxBatch"},
		{"batch too large", func(c *Config) { c.MaxBatch = maxBatchLimit + 1 }, "MaxBatch"},
		{"writers negative", func(c *Config) { c.Writers = -1 }, "Writers"},
		{"writers too many", func(c *Config) { c.Writers = maxWriters + 1 }, "Writers"},
		{"poll wait too long", func(c *Config) { c.PollWait = time.Minute }, "PollWait"},
		{"fetch min bytes negative", func(c *Config) { c.FetchMinBytes = -1 }, "FetchMinBytes"},
		{"fetch min bytes too large", func(c *Config) { c.FetchMinBytes = maxFetchMinBytes + 1 }, "FetchMinBytes"},
		{"retry min negative", func(c *Config) { c.RetryMin = -time.Second }, "RetryMin"},
		{"retry max below min", func(c *Config) { c.RetryMin, c.RetryMax = time.Second, time.Millisecond }, "RetryMax"},
		{"retry max huge", func(c *Config) { c.RetryMax = time.Hour }, "RetryMax"},
		{"redis timeout negative", func(c *Config) { c.RedisTimeout = -1 }, "RedisTimeout"},
		{"pg timeout negative", func(c *Config) { c.PGTimeout = -1 }, "PGTimeout"},
		{"drain negative", func(c *Config) { c.DrainTimeout = -1 }, "DrainTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mutate(&c)
			_, err := c.withDefaults()
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tt.field || !strings.Contains(err.Error(), tt.field+":") {
				t.Fatalf("got %v; want a ConfigError naming %s", err, tt.field)
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		got, err := ok.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		if got.MaxBatch != DefaultMaxBatch || got.Writers != DefaultWriters || got.PollWait != DefaultPollWait || got.FetchMinBytes != DefaultFetchMinBytes || got.RetryMax != DefaultRetryMax ||
			got.DrainTimeout != DefaultDrainTimeout {
			t.Fatalf("defaults not applied: %+v", got)
		}
	})
	t.Run("New refuses bad config and missing clients", func(t *testing.T) {
		if _, err := New(Config{Group: "g"}, nil, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "Brokers") {
			t.Fatalf("New with no brokers: %v", err)
		}
		if _, err := New(ok, nil, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "rdb") {
			t.Fatalf("New with no Redis client: %v", err)
		}
	})
}

// FuzzDecode: whatever a record holds, decode never panics, and what it accepts is a
// claim Postgres can store that survives its own encoding unchanged.
func FuzzDecode(f *testing.F) {
	good := rec("c", "c.1")
	f.Add(good.AppendJSON(nil))
	f.Add([]byte(`{"v":1,"claim_id":"a\u0000b"}`))
	f.Add([]byte(`{"v":1,"claim_id":"c.1","request_id":"r","campaign_id":"c","business_line":"b","sku":"s","user_id":"u","device_id":"d","value":1,"claimed_at_ms":1,"expires_at_ms":253402300800000}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decode(b)
		if err != nil {
			return
		}
		if strings.ContainsRune(r.ClaimID+r.RequestID+r.CampaignID+r.BusinessLine+r.SKU+r.UserID+r.DeviceID+r.IP+r.OutboxID, 0) {
			t.Fatalf("accepted a NUL: %+v", r)
		}
		if r.ExpiresAtMs > maxStorableMs {
			t.Fatalf("accepted an unstorable expiry %d", r.ExpiresAtMs)
		}
		again, err := decode(r.AppendJSON(nil))
		if err != nil || again != r {
			t.Fatalf("round trip: %+v -> %+v, %v", r, again, err)
		}
	})
}
