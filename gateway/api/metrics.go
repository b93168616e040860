package api

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/internal/claim"
)

// MaxCampaignSeries bounds the per-campaign series: this many campaigns that answer
// claims (an existing campaign: an unknown_campaign answer never takes a place) get
// series of their own; a campaign idle for IdleCampaign gives its place to the next
// one; the rest are counted under campaign="other". A bot spraying made-up campaign ids
// therefore cannot grow /metrics.
const MaxCampaignSeries = 20

// Routes of the public listener, as the latency histogram's route label.
const (
	RouteClaim  = iota // POST /v1/claims
	RouteGet           // GET /v1/claims/{id}
	RouteRedeem        // POST /v1/claims/{id}/redeem
	RouteTime          // GET /v1/time
	RoutePage          // GET /h5/... (the claim page and its assets)
	RouteOther         // anything else (404s, 405s)
	nRoutes
)

var routeNames = [nRoutes]string{"claim", "get_claim", "redeem", "time", "h5", "other"}

// statusClasses label non-claim routes' outcomes (the claim route has its own reasons).
var statusClasses = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// Metrics count claim outcomes and time every answer. Every label value is fixed ahead
// of time (one per outcome, route, status class); no request value ever becomes a
// label, except a campaign id among the first MaxCampaignSeries (campaignSeries).
type Metrics struct {
	byCode      map[int]prometheus.Counter
	unavailable prometheus.Counter
	invalid     prometheus.Counter
	// unauthenticated and mismatch count refused end-user tokens (auth.go).
	unauthenticated, mismatch prometheus.Counter

	// latency of the claim route by outcome code; claimLatencyInvalid and
	// claimLatencyUnavailable for the outcomes decided without the script.
	claimLatency            map[int]prometheus.Observer
	claimLatencyInvalid     prometheus.Observer
	claimLatencyUnavailable prometheus.Observer
	// latency of the other routes by status class.
	routeLatency [nRoutes][6]prometheus.Observer

	campaigns *campaignSeries
}

// LatencyBuckets are the request-latency histogram's buckets (seconds): fine below the
// claim objective (CONTRACT.md: p99 under 50 ms), coarse above it.
var LatencyBuckets = []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// NewMetrics registers the API's metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashgate_gateway_claims_total",
		Help: "Claim requests answered, by outcome (accepted, a rejection reason, invalid_request, unavailable, ...).",
	}, []string{"outcome"})
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "flashgate_gateway_request_seconds",
		Help: "Public API answers, by route and outcome (the claim route: accepted or the reason; others: the status class), " +
			"from the request fully read to the answer handed to the server for writing.",
		Buckets: LatencyBuckets,
	}, []string{"route", "outcome"})
	perCampaign := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashgate_gateway_campaign_claims_total",
		Help: "Claims answered by campaign and outcome; at most " + strconv.Itoa(MaxCampaignSeries) +
			" campaigns have their own series (one idle for 10 minutes gives its place to the next), the rest are campaign=\"other\".",
	}, []string{"campaign", "outcome"})
	m := &Metrics{byCode: make(map[int]prometheus.Counter, len(answers)),
		claimLatency: make(map[int]prometheus.Observer, len(answers))}
	for code, a := range answers {
		m.byCode[code] = vec.WithLabelValues(a.label)
		m.claimLatency[code] = lat.WithLabelValues(routeNames[RouteClaim], a.label)
	}
	m.unavailable = vec.WithLabelValues(answerUnavailable.label)
	m.invalid = vec.WithLabelValues(labelInvalid)
	m.unauthenticated = vec.WithLabelValues("unauthenticated")
	m.mismatch = vec.WithLabelValues("user_mismatch")
	m.claimLatencyInvalid = lat.WithLabelValues(routeNames[RouteClaim], labelInvalid)
	m.claimLatencyUnavailable = lat.WithLabelValues(routeNames[RouteClaim], answerUnavailable.label)
	for r := range nRoutes {
		for c, name := range statusClasses {
			m.routeLatency[r][c] = lat.WithLabelValues(routeNames[r], name)
		}
	}
	m.campaigns = newCampaignSeries(perCampaign, MaxCampaignSeries)
	if reg != nil {
		reg.MustRegister(vec, lat, perCampaign)
	}
	return m
}

func (m *Metrics) outcome(code int) prometheus.Counter {
	if c, ok := m.byCode[code]; ok {
		return c
	}
	return m.unavailable
}

// observeClaim times a claim answered with a script code (or -1: unavailable, -2:
// invalid) and counts it for its campaign.
func (m *Metrics) observeClaim(start time.Time, code int, campaign []byte) {
	d := time.Since(start).Seconds()
	switch code {
	case codeInvalid:
		m.claimLatencyInvalid.Observe(d)
		return
	case codeUnavailable:
		m.claimLatencyUnavailable.Observe(d)
	default:
		if o, ok := m.claimLatency[code]; ok {
			o.Observe(d)
		} else {
			m.claimLatencyUnavailable.Observe(d)
		}
	}
	if len(campaign) > 0 {
		m.campaigns.count(campaign, code, start.Unix())
	}
}

// ObserveRoute times an answer of a route other than the claim, by its status class.
func (m *Metrics) ObserveRoute(route int, start time.Time, status int) {
	c := status / 100
	if c < 1 || c > 5 {
		c = 0
	}
	if route < 0 || route >= nRoutes {
		route = RouteOther
	}
	m.routeLatency[route][c].Observe(time.Since(start).Seconds())
}

const (
	codeUnavailable = -1
	codeInvalid     = -2
)

// campaignSeries holds the per-campaign counters of at most max campaigns. Reads take
// an immutable map from an atomic pointer (no lock, no allocation); a new campaign is
// added under the mutex by copying the map. When every place is taken, a campaign
// idle for IdleCampaign gives its place (and its series) to the next new one, so the
// series follow the sales that are running; while all are busy, newcomers are "other".
type campaignSeries struct {
	vec       *prometheus.CounterVec
	max       int
	mu        sync.Mutex
	known     atomic.Pointer[map[string]*campaignCounters]
	other     *campaignCounters
	lastEvict atomic.Int64 // unix seconds of the last look for an idle campaign
}

// IdleCampaign is how long a campaign keeps its own series without a claim once every
// place is taken.
const IdleCampaign = 10 * time.Minute

type campaignCounters struct {
	name        string
	byCode      map[int]prometheus.Counter
	unavailable prometheus.Counter
	last        atomic.Int64 // unix seconds of its last claim
}

func newCampaignSeries(vec *prometheus.CounterVec, max int) *campaignSeries {
	s := &campaignSeries{vec: vec, max: max}
	empty := map[string]*campaignCounters{}
	s.known.Store(&empty)
	s.other = s.counters("other")
	return s
}

func (s *campaignSeries) counters(campaign string) *campaignCounters {
	c := &campaignCounters{name: campaign, byCode: make(map[int]prometheus.Counter, len(answers)),
		unavailable: s.vec.WithLabelValues(campaign, answerUnavailable.label)}
	for code, a := range answers {
		c.byCode[code] = s.vec.WithLabelValues(campaign, a.label)
	}
	return c
}

func (s *campaignSeries) count(campaign []byte, code int, now int64) {
	known := *s.known.Load()
	c, ok := known[str(campaign)]
	if !ok {
		c = s.admit(campaign, code, len(known), now)
	}
	if c.last.Load() != now { // one write a second, not one per claim
		c.last.Store(now)
	}
	if n, ok := c.byCode[code]; ok {
		n.Inc()
		return
	}
	c.unavailable.Inc()
}

// admit gives campaign a place when one is free (or an idle campaign's can be taken)
// and the campaign exists, else "other".
func (s *campaignSeries) admit(campaign []byte, code, seen int, now int64) *campaignCounters {
	if code == claim.CodeUnknownCampaign || code == codeUnavailable || string(campaign) == "other" {
		return s.other
	}
	if seen >= s.max {
		// Full: look for an idle campaign at most once a second, however many claims
		// of campaigns without a place arrive.
		if last := s.lastEvict.Load(); last >= now || !s.lastEvict.CompareAndSwap(last, now) {
			return s.other
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	known := *s.known.Load()
	if c, ok := known[string(campaign)]; ok {
		return c
	}
	var evict *campaignCounters
	if len(known) >= s.max {
		for _, c := range known {
			if idle := c.last.Load(); idle < now-int64(IdleCampaign/time.Second) && (evict == nil || idle < evict.last.Load()) {
				evict = c
			}
		}
		if evict == nil {
			return s.other
		}
	}
	name := string(campaign)
	next := make(map[string]*campaignCounters, len(known)+1)
	for k, v := range known {
		if v != evict {
			next[k] = v
		}
	}
	if evict != nil {
		s.vec.DeleteLabelValues(evict.name, answerUnavailable.label)
		for _, a := range answers {
			s.vec.DeleteLabelValues(evict.name, a.label)
		}
	}
	c := s.counters(name)
	c.last.Store(now) // not idle before its first count
	next[name] = c
	s.known.Store(&next)
	return c
}

func appendStr(buf []byte, s string) []byte { return claim.AppendString(buf, s) }

func (m *Metrics) observeRoute(ctx *fasthttp.RequestCtx, route int) {
	m.ObserveRoute(route, ctx.Time(), ctx.Response.StatusCode())
}
