// Package console owns the operations page (CONTRACT.md "Faces"): GET /console/ on the
// admin listener serves its assets (embedded; uPlot is pinned and vendored, see
// web/README.md), and GET /admin/v1/console/overview and /admin/v1/console/risk serve
// what it shows, behind the admin token like every /admin/v1/ route. The page keeps
// the token in sessionStorage and sends it in the Authorization header, never in a URL.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"mime"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/reconcile"
	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/risk/decisionlog"
)

//go:embed web
var webFS embed.FS

// MaxCampaigns is how many campaigns the overview shows: those open now (the most
// recently opened first), then those opening within a day (the soonest first), then
// those ended within the last hour.
const MaxCampaigns = 12

// Deps are what the console reads.
type Deps struct {
	PG         *pgxpool.Pool
	Catalog    *catalog.Catalog
	Reconciler *reconcile.Reconciler // nil: no reconciliation state shown
	Gatherer   prometheus.Gatherer
	Brokers    []string // for the risk top (flash.decisions); nil: not shown
	Log        *slog.Logger
}

// Server serves the console.
type Server struct {
	d      Deps
	assets map[string]asset

	mu     sync.Mutex
	recon  map[string]reconCached
	riskAt time.Time
	risk   []byte
	// The last overview, shared by every viewer for OverviewTTL: the figures join the
	// campaign's settled rows, so viewers must not multiply the queries.
	overAt time.Time
	over   []byte
}

// OverviewTTL is how long one overview answers every viewer.
const OverviewTTL = 900 * time.Millisecond

// RiskWindow is how far back the console's risk top looks. It reads every decision of
// the window from flash.decisions, so it is short; `riskctl top --since` looks further.
const RiskWindow = 2 * time.Minute

type asset struct {
	body  []byte
	ctype string
}

type reconCached struct {
	v  any
	at time.Time
}

// New builds the console.
func New(d Deps) (*Server, error) {
	if d.PG == nil || d.Catalog == nil || d.Gatherer == nil {
		return nil, errors.New("console: PG, Catalog and Gatherer are required")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	assets, err := newAssets()
	if err != nil {
		return nil, err
	}
	return &Server{d: d, assets: assets, recon: map[string]reconCached{}}, nil
}

// newAssets reads the embedded files the console serves.
func newAssets() (map[string]asset, error) {
	assets := map[string]asset{}
	err := fs.WalkDir(webFS, "web", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		name := strings.TrimPrefix(p, "web/")
		if strings.HasSuffix(name, ".json") || strings.HasSuffix(name, ".md") {
			return nil // build inputs, not served
		}
		b, err := webFS.ReadFile(p)
		if err != nil {
			return err
		}
		ct := mime.TypeByExtension(path.Ext(name))
		if ct == "" {
			ct = "text/plain; charset=utf-8"
		}
		assets[name] = asset{body: b, ctype: ct}
		return nil
	})
	if err != nil || assets["index.html"].body == nil {
		return nil, errors.New("console: embedded assets are missing")
	}
	return assets, nil
}

const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves /console/ and its assets.
func (s *Server) Handler(ctx *fasthttp.RequestCtx) {
	p := string(ctx.Path())
	if p == "/console" {
		ctx.Redirect("/console/", fasthttp.StatusMovedPermanently)
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		writeJSON(ctx, fasthttp.StatusMethodNotAllowed, []byte(`{"error":"method_not_allowed"}`))
		return
	}
	name := strings.TrimPrefix(p, "/console/")
	if name == "" {
		name = "index.html"
	}
	a, ok := s.assets[name]
	if !ok {
		writeJSON(ctx, fasthttp.StatusNotFound, []byte(`{"error":"not_found"}`))
		return
	}
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Type", a.ctype)
	ctx.SetBody(a.body)
}

// AdminRoute serves GET /admin/v1/console/overview and /admin/v1/console/risk.
func (s *Server) AdminRoute(ctx *fasthttp.RequestCtx, parts []string) bool {
	if len(parts) != 2 || parts[0] != "console" || (parts[1] != "overview" && parts[1] != "risk") {
		return false
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		writeJSON(ctx, fasthttp.StatusMethodNotAllowed, []byte(`{"error":"method_not_allowed"}`))
		return true
	}
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b []byte
	var err error
	if parts[1] == "overview" {
		b, err = s.overviewJSON(c)
	} else {
		b, err = s.riskTop(c)
	}
	if err != nil {
		s.d.Log.Warn("console: request failed", "what", parts[1], "err", err)
		writeJSON(ctx, fasthttp.StatusServiceUnavailable, []byte(`{"error":"unavailable"}`))
		return true
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	writeJSON(ctx, fasthttp.StatusOK, b)
	return true
}

func (s *Server) overviewJSON(ctx context.Context) ([]byte, error) {
	s.mu.Lock()
	if s.over != nil && time.Since(s.overAt) < OverviewTTL {
		b := s.over
		s.mu.Unlock()
		return b, nil
	}
	s.mu.Unlock()
	o, err := s.overview(ctx)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.over, s.overAt = b, time.Now()
	s.mu.Unlock()
	return b, nil
}

// Overview is one refresh of the console.
type Overview struct {
	AtMs      int64            `json:"at_ms"`
	Campaigns []CampaignView   `json:"campaigns"`
	Outcomes  map[string]int64 `json:"gateway_claims_by_outcome"`
	// PerCampaign are this gateway's claim counters by campaign and outcome (its own
	// series for the first few campaigns, "other" for the rest): the page turns two
	// refreshes into rates.
	PerCampaign map[string]map[string]int64 `json:"gateway_claims_by_campaign"`
	// Latency is the claim route's histogram: cumulative counts per upper bound
	// (seconds); the page takes quantiles of the difference between two refreshes.
	Latency Histogram `json:"claim_latency"`
	// Fenced is this process's business lines being rebuilt after a Redis loss.
	Fenced float64 `json:"fenced_business_lines"`
}

// Histogram is cumulative bucket counts.
type Histogram struct {
	Bounds []float64 `json:"le"`
	Counts []uint64  `json:"counts"`
	Count  uint64    `json:"count"`
}

// CampaignView is one campaign's figures with its reconciliation (fence included).
type CampaignView struct {
	*catalog.Figures
	Reconciliation any `json:"reconciliation"`
}

func (s *Server) overview(ctx context.Context) (*Overview, error) {
	o := &Overview{AtMs: time.Now().UnixMilli(), Campaigns: []CampaignView{}, Outcomes: map[string]int64{},
		PerCampaign: map[string]map[string]int64{}}
	// Open sales first (the most recently opened first), then the next to open, then
	// those ended within the hour.
	rows, err := s.d.PG.Query(ctx, `SELECT id FROM campaigns WHERE ends_at > now() - interval '1 hour'
		AND starts_at < now() + interval '1 day'
		ORDER BY CASE WHEN starts_at <= now() AND ends_at > now() THEN 0 WHEN starts_at > now() THEN 1 ELSE 2 END,
			CASE WHEN starts_at > now() THEN starts_at END, starts_at DESC, id LIMIT $1`, MaxCampaigns)
	if err != nil {
		return nil, err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Each campaign on its own (four at a time), each bounded: one slow or failing
	// campaign is left out of this refresh instead of stalling the whole page.
	views := make([]*CampaignView, len(ids))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			f, err := s.d.Catalog.Figures(c, id)
			if err != nil {
				s.d.Log.Warn("console: campaign figures failed", "campaign", id, "err", err)
				return
			}
			views[i] = &CampaignView{Figures: f, Reconciliation: s.reconciliation(c, id, f)}
		})
	}
	wg.Wait()
	for _, v := range views {
		if v != nil {
			o.Campaigns = append(o.Campaigns, *v)
		}
	}
	if len(ids) > 0 && len(o.Campaigns) == 0 {
		return nil, errors.New("no campaign's figures could be read")
	}
	if err := s.gather(o); err != nil {
		return nil, err
	}
	return o, nil
}

// reconciliation is the reconciler's report for a campaign, at most 3 s old (a check
// compares counters until they hold still; once a second per viewer would be too much).
func (s *Server) reconciliation(ctx context.Context, id string, f *catalog.Figures) any {
	if s.d.Reconciler == nil {
		return f.Reconciliation
	}
	s.mu.Lock()
	c, ok := s.recon[id]
	s.mu.Unlock()
	if ok && time.Since(c.at) < 3*time.Second {
		return c.v
	}
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var v any
	if rep, err := s.d.Reconciler.Campaign(rctx, id); err != nil {
		v = map[string]string{"state": "unknown", "error": err.Error()}
	} else {
		v = rep
	}
	s.mu.Lock()
	if len(s.recon) > 4*MaxCampaigns {
		clear(s.recon)
	}
	s.recon[id] = reconCached{v: v, at: time.Now()}
	s.mu.Unlock()
	return v
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// gather reads the gateway's own metrics: what the console derives from /metrics.
func (s *Server) gather(o *Overview) error {
	mfs, err := s.d.Gatherer.Gather()
	if err != nil {
		return err
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "flashgate_gateway_claims_total":
			for _, m := range mf.GetMetric() {
				o.Outcomes[label(m, "outcome")] = int64(m.GetCounter().GetValue())
			}
		case "flashgate_gateway_campaign_claims_total":
			for _, m := range mf.GetMetric() {
				c := label(m, "campaign")
				if o.PerCampaign[c] == nil {
					o.PerCampaign[c] = map[string]int64{}
				}
				if v := int64(m.GetCounter().GetValue()); v > 0 {
					o.PerCampaign[c][label(m, "outcome")] = v
				}
			}
		case "flashgate_gateway_request_seconds":
			for _, m := range mf.GetMetric() {
				if label(m, "route") != "claim" {
					continue
				}
				h := m.GetHistogram()
				if o.Latency.Bounds == nil {
					for _, b := range h.GetBucket() {
						o.Latency.Bounds = append(o.Latency.Bounds, b.GetUpperBound())
					}
					o.Latency.Counts = make([]uint64, len(o.Latency.Bounds))
				}
				for i, b := range h.GetBucket() {
					if i < len(o.Latency.Counts) {
						o.Latency.Counts[i] += b.GetCumulativeCount()
					}
				}
				o.Latency.Count += h.GetSampleCount()
			}
		case "flashgate_recovery_fenced_business_lines":
			for _, m := range mf.GetMetric() {
				o.Fenced += m.GetGauge().GetValue()
			}
		}
	}
	return nil
}

// RiskRow is one device, IP or user among the most active of a campaign.
type RiskRow struct {
	Value    string         `json:"value"`
	Attempts int            `json:"attempts"`
	Accepted int            `json:"accepted"`
	Rejected map[string]int `json:"rejected_by_reason"`
}

// riskTop is `riskctl top` over the last RiskWindow: the five busiest devices, IPs and
// users of each campaign, from flash.decisions. It reads the topic, so it is computed at
// most every 10 s whoever asks.
func (s *Server) riskTop(ctx context.Context) ([]byte, error) {
	s.mu.Lock()
	if s.risk != nil && time.Since(s.riskAt) < 10*time.Second {
		b := s.risk
		s.mu.Unlock()
		return b, nil
	}
	s.mu.Unlock()
	since := time.Now().Add(-RiskWindow)
	out := map[string]any{"since": since.UTC(), "campaigns": map[string]any{}}
	if len(s.d.Brokers) > 0 {
		entries, _, err := decisionlog.Read(ctx, s.d.Brokers, "", since.UnixMilli(), "")
		if err != nil {
			return nil, err
		}
		type acc = map[string]*RiskRow
		per := map[string]map[string]acc{}
		for _, e := range entries {
			if e.Replayed {
				continue
			}
			m := per[e.CampaignID]
			if m == nil {
				m = map[string]acc{"devices": {}, "ips": {}, "users": {}}
				per[e.CampaignID] = m
			}
			for kind, key := range map[string]string{"devices": e.DeviceID, "ips": e.IP, "users": e.UserID} {
				r := m[kind][key]
				if r == nil {
					r = &RiskRow{Value: key, Rejected: map[string]int{}}
					m[kind][key] = r
				}
				r.Attempts++
				if e.Accepted() {
					r.Accepted++
				} else {
					r.Rejected[risk.ReasonOf(e.Code)]++
				}
			}
		}
		camps := out["campaigns"].(map[string]any)
		for camp, kinds := range per {
			view := map[string][]RiskRow{}
			for kind, m := range kinds {
				list := make([]RiskRow, 0, len(m))
				for _, r := range m {
					list = append(list, *r)
				}
				sort.Slice(list, func(i, j int) bool {
					if list[i].Attempts != list[j].Attempts {
						return list[i].Attempts > list[j].Attempts
					}
					return list[i].Value < list[j].Value
				})
				if len(list) > 5 {
					list = list[:5]
				}
				view[kind] = list
			}
			camps[camp] = view
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.risk, s.riskAt = b, time.Now()
	s.mu.Unlock()
	return b, nil
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}
