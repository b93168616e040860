package api

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/claim"
)

// The per-campaign series stay bounded: the first MaxCampaignSeries existing campaigns
// get their own, later ones and unknown campaign ids (a bot's spray) count as "other".
func TestCampaignSeriesBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	start := time.Now()
	for i := range MaxCampaignSeries + 5 {
		m.observeClaim(start, claim.CodeAccepted, []byte("camp-"+strconv.Itoa(i)))
	}
	for i := range 100 {
		m.observeClaim(start, claim.CodeUnknownCampaign, []byte("made-up-"+strconv.Itoa(i)))
	}
	// A campaign admitted early keeps its series.
	m.observeClaim(start, claim.CodeSoldOut, []byte("camp-0"))

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	campaigns := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "flashgate_gateway_campaign_claims_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "campaign" {
					campaigns[l.GetValue()] = true
				}
			}
		}
	}
	if len(campaigns) != MaxCampaignSeries+1 {
		t.Errorf("%d campaign label values, want %d (+ other): %v", len(campaigns), MaxCampaignSeries, campaigns)
	}
	for _, c := range []string{"camp-0", "camp-19", "other"} {
		if !campaigns[c] {
			t.Errorf("no series for campaign %q", c)
		}
	}
	if campaigns["camp-20"] || campaigns["made-up-0"] {
		t.Errorf("a campaign beyond the bound has its own series: %v", campaigns)
	}
	other := counterValue(t, m.campaigns.other.byCode[claim.CodeAccepted])
	if other != 5 {
		t.Errorf("other accepted = %v, want 5", other)
	}
	if got := counterValue(t, m.campaigns.other.byCode[claim.CodeUnknownCampaign]); got != 100 {
		t.Errorf("other unknown_campaign = %v, want 100", got)
	}
}

// Every answer of the claim handler lands in the latency histogram under its outcome,
// and the other routes under their status class.
func TestRequestLatencyHistogram(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := &Server{metrics: NewMetrics(reg), log: quietLog}
	body := `{"campaign_id":"cny-2027","sku":"rp-50","user_id":"u-1001","device_id":"d-9f2c","request_id":"6f1c2b"}`
	ctx := request("POST", "application/json", body, "192.0.2.7:5555")
	st := &reqState{out: make([]byte, 0, 512)}
	if status, msg := s.decode(ctx, st); status != 0 {
		t.Fatal(msg)
	}
	st.req.Outcome = claimer.Outcome{Code: claim.CodeSoldOut}
	s.respond(ctx, st, nil)
	s.respond(ctx, st, claimer.ErrUnavailable)
	bad := request("POST", "text/plain", "{}", "192.0.2.7:5555")
	s.Handler(bad)
	nf := request("GET", "", "", "192.0.2.7:5555")
	nf.Request.SetRequestURI("/nope")
	s.Handler(nf)

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "flashgate_gateway_request_seconds" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			var route, outcome string
			for _, l := range mt.GetLabel() {
				switch l.GetName() {
				case "route":
					route = l.GetValue()
				case "outcome":
					outcome = l.GetValue()
				}
			}
			if n := mt.GetHistogram().GetSampleCount(); n > 0 {
				got[route+"/"+outcome] = n
			}
		}
	}
	want := map[string]uint64{"claim/sold_out": 1, "claim/unavailable": 1, "claim/invalid_request": 1, "other/4xx": 1}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s observed %d times, want %d (all: %v)", k, got[k], n, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("observed series %v, want exactly %v", got, want)
	}
	if !strings.Contains(strings.Join(routeNames[:], ","), "h5") {
		t.Error("no h5 route label")
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// What timing and counting one claim costs the handler: the latency observation and
// the per-campaign counter (a lock-free map read once the campaign has its series).
// Measure on a quiet machine: go test -run '^$' -bench ObserveClaim -benchmem ./gateway/api
func BenchmarkObserveClaim(b *testing.B) {
	m := NewMetrics(nil)
	campaign := []byte("cny-2027")
	start := time.Now()
	m.observeClaim(start, claim.CodeAccepted, campaign)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.observeClaim(start, claim.CodeSoldOut, campaign)
		}
	})
}

// Once every place is taken, a campaign idle for IdleCampaign gives its place and its
// series to the next new campaign; busy campaigns keep theirs.
func TestCampaignSeriesIdleGivesWay(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	old := time.Now().Add(-IdleCampaign - time.Minute)
	for i := range MaxCampaignSeries {
		at := time.Now()
		if i == 3 {
			at = old // camp-3's last claim was long ago
		}
		m.observeClaim(at, claim.CodeAccepted, []byte("camp-"+strconv.Itoa(i)))
	}
	m.observeClaim(time.Now(), claim.CodeAccepted, []byte("next-sale"))
	known := *m.campaigns.known.Load()
	if len(known) != MaxCampaignSeries || known["next-sale"] == nil || known["camp-3"] != nil {
		names := []string{}
		for k := range known {
			names = append(names, k)
		}
		t.Fatalf("places %v: want next-sale in camp-3's place", names)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "campaign" && l.GetValue() == "camp-3" {
					t.Errorf("camp-3's series survived its eviction")
				}
			}
		}
	}
	// Everyone busy now: the next newcomer (a second later) is "other".
	m.observeClaim(time.Now().Add(time.Second), claim.CodeAccepted, []byte("third-sale"))
	if (*m.campaigns.known.Load())["third-sale"] != nil {
		t.Error("a busy campaign was evicted")
	}
	if got := counterValue(t, m.campaigns.other.byCode[claim.CodeAccepted]); got != 1 {
		t.Errorf("other accepted = %v, want 1", got)
	}
}
