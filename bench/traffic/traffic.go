// Package traffic owns bench's model of flash-sale clients: which user claims which SKU
// from which device and IP, which requests are client retries (same request_id, same
// body), which are bot farms and which are malformed. The sequence it produces is a pure
// function of its Config (and so of --seed): two runs with the same seed send the same
// requests in the same order, which is what makes a load test repeatable.
package traffic

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/flashgate/flashgate/internal/claim"
)

// Kind says what a request stands for.
type Kind uint8

// Kinds of request.
const (
	// Normal is a distinct user on their own device and IP.
	Normal Kind = iota
	// Bot is an account of a bot farm: many accounts on a few devices and IPs.
	Bot
	// Retry repeats an earlier Normal or Bot request byte for byte (same request_id), as
	// a client does after a timeout.
	Retry
	// Invalid is a malformed request the gateway must refuse with a 4xx.
	Invalid
)

var kindNames = [...]string{"normal", "bot", "retry", "invalid"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Mix is the share of each non-normal kind, each in [0, 1]; the rest is Normal.
type Mix struct {
	Bots, Retries, Invalid float64
}

// ParseMix reads "bots=5%,retries=10%,invalid=1%" (a share may also be a fraction like
// 0.05). Missing kinds are 0; "none" or "" is all normal.
func ParseMix(s string) (Mix, error) {
	var m Mix
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return m, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return m, fmt.Errorf("mix: %q is not kind=share (like bots=5%%)", part)
		}
		f, err := ParseShare(v)
		if err != nil {
			return m, fmt.Errorf("mix: %s: %w", k, err)
		}
		switch strings.TrimSpace(k) {
		case "bots", "bot":
			m.Bots = f
		case "retries", "retry":
			m.Retries = f
		case "invalid":
			m.Invalid = f
		default:
			return m, fmt.Errorf("mix: unknown kind %q (want bots, retries, invalid)", k)
		}
	}
	return m, m.validate()
}

// ParseShare reads "5%" or "0.05" as 0.05.
func ParseShare(v string) (float64, error) {
	v = strings.TrimSpace(v)
	pct := strings.HasSuffix(v, "%")
	f, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
	if err != nil || math.IsNaN(f) {
		return 0, fmt.Errorf("%q is not a share like 5%% or 0.05", v)
	}
	if pct {
		f /= 100
	}
	if f < 0 || f > 1 {
		return 0, fmt.Errorf("%q is outside 0%%..100%%", v)
	}
	return f, nil
}

func (m Mix) validate() error {
	if m.Bots+m.Retries+m.Invalid > 1 {
		return fmt.Errorf("mix: bots+retries+invalid = %.1f%%, more than 100%%", 100*(m.Bots+m.Retries+m.Invalid))
	}
	return nil
}

func (m Mix) String() string {
	return fmt.Sprintf("bots=%g%%,retries=%g%%,invalid=%g%%", m.Bots*100, m.Retries*100, m.Invalid*100)
}

// Config describes the clients. Zero values take the defaults documented per field.
type Config struct {
	Campaign string
	SKUs     []string
	// Users is the number of distinct real users (default 100000). Each has its own
	// device and IP.
	Users int
	// Seed makes the sequence repeatable.
	Seed uint64
	Mix  Mix
	// ZipfS is the skew of SKU choice: SKU k (0-based, in the order given) is chosen
	// with weight 1/(k+1)^ZipfS. Default 1.1; a negative value means uniform.
	ZipfS float64
	// BotUsers is the number of accounts the bot farms hold (default Users/10, at
	// least 100); BotDevices and BotIPs are the devices and IPs they share (default 20
	// and 4).
	BotUsers, BotDevices, BotIPs int
	// RetryWindow is how many recent requests a retry may repeat (default 256): clients
	// retry soon after their first try.
	RetryWindow int
	// IDPrefix starts every request_id (default "r<seed>"); bench ramp gives each step
	// its own so steps never replay each other.
	IDPrefix string
}

// Request is one request to send. Body is owned by the Request.
type Request struct {
	Seq  uint64
	Kind Kind
	// Orig is the Seq of the request a Retry repeats, and OrigKind its kind.
	Orig     uint64
	OrigKind Kind
	// Invalid names the malformation of an Invalid request.
	Invalid                          string
	RequestID, User, SKU, Device, IP string
	ContentType                      string
	Body                             []byte
}

// Model produces the request sequence. It is not safe for concurrent use: one
// generator goroutine draws from it in schedule order.
type Model struct {
	cfg    Config
	rng    *rand.Rand
	cdf    []float64
	recent []*Request
	nRec   int
	seq    uint64
}

// Errors of New, each naming the field.
var errNoSKUs = errors.New("traffic: SKUs: at least one SKU is required")

// New validates cfg and returns a model positioned at the first request.
func New(cfg Config) (*Model, error) {
	if !ValidID(cfg.Campaign) {
		return nil, fmt.Errorf("traffic: Campaign %q: must be 1-64 characters of [A-Za-z0-9._:-]", cfg.Campaign)
	}
	if len(cfg.SKUs) == 0 {
		return nil, errNoSKUs
	}
	for _, s := range cfg.SKUs {
		if !ValidID(s) {
			return nil, fmt.Errorf("traffic: SKUs: %q must be 1-64 characters of [A-Za-z0-9._:-]", s)
		}
	}
	if err := cfg.Mix.validate(); err != nil {
		return nil, fmt.Errorf("traffic: %w", err)
	}
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&cfg.Users, 100000)
	def(&cfg.BotUsers, max(cfg.Users/10, 100))
	def(&cfg.BotDevices, 20)
	def(&cfg.BotIPs, 4)
	def(&cfg.RetryWindow, 256)
	if cfg.ZipfS == 0 {
		cfg.ZipfS = 1.1
	}
	if cfg.IDPrefix == "" {
		cfg.IDPrefix = "r" + strconv.FormatUint(cfg.Seed, 36)
	}
	switch {
	case cfg.Users < 1 || cfg.Users > 1<<30:
		return nil, fmt.Errorf("traffic: Users=%d, want 1..%d", cfg.Users, 1<<30)
	case cfg.BotUsers < 1, cfg.BotDevices < 1, cfg.BotIPs < 1 || cfg.BotIPs > 256:
		return nil, fmt.Errorf("traffic: BotUsers=%d BotDevices=%d BotIPs=%d, want each at least 1 (BotIPs at most 256)",
			cfg.BotUsers, cfg.BotDevices, cfg.BotIPs)
	case cfg.RetryWindow < 1:
		return nil, fmt.Errorf("traffic: RetryWindow=%d, want at least 1", cfg.RetryWindow)
	case len(cfg.IDPrefix) > 40 || !ValidID(cfg.IDPrefix):
		return nil, fmt.Errorf("traffic: IDPrefix %q: at most 40 characters of [A-Za-z0-9._:-]", cfg.IDPrefix)
	}
	m := &Model{
		cfg:    cfg,
		rng:    rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		recent: make([]*Request, cfg.RetryWindow),
	}
	m.cdf = zipfCDF(len(cfg.SKUs), cfg.ZipfS)
	return m, nil
}

// zipfCDF is the cumulative distribution of weights 1/(k+1)^s over n items.
func zipfCDF(n int, s float64) []float64 {
	cdf := make([]float64, n)
	var sum float64
	for k := range n {
		w := 1.0
		if s > 0 {
			w = 1 / math.Pow(float64(k+1), s)
		}
		sum += w
		cdf[k] = sum
	}
	for k := range cdf {
		cdf[k] /= sum
	}
	return cdf
}

// Weights returns each SKU's probability under the model's skew, in SKU order.
func (m *Model) Weights() []float64 {
	w := make([]float64, len(m.cdf))
	prev := 0.0
	for i, c := range m.cdf {
		w[i], prev = c-prev, c
	}
	return w
}

// Config returns the configuration with defaults filled in.
func (m *Model) Config() Config { return m.cfg }

func (m *Model) sku() string {
	u := m.rng.Float64()
	for i, c := range m.cdf {
		if u < c {
			return m.cfg.SKUs[i]
		}
	}
	return m.cfg.SKUs[len(m.cfg.SKUs)-1]
}

// Next returns the next request of the sequence.
func (m *Model) Next() *Request {
	seq := m.seq
	m.seq++
	u := m.rng.Float64()
	mix := m.cfg.Mix
	switch {
	case u < mix.Invalid:
		return m.invalid(seq)
	case u < mix.Invalid+mix.Retries && m.nRec > 0:
		orig := m.recent[m.rng.IntN(min(m.nRec, len(m.recent)))]
		return &Request{Seq: seq, Kind: Retry, Orig: orig.Seq, OrigKind: orig.Kind,
			RequestID: orig.RequestID, User: orig.User, SKU: orig.SKU, Device: orig.Device, IP: orig.IP,
			ContentType: orig.ContentType, Body: orig.Body}
	}
	r := &Request{Seq: seq, Kind: Normal, SKU: m.sku(), ContentType: "application/json"}
	// A retry drawn before anything could be repeated falls through to a normal
	// request, so the shares hold over a run but the very first requests are fresh.
	if u >= mix.Invalid+mix.Retries && u < mix.Invalid+mix.Retries+mix.Bots {
		r.Kind = Bot
		n := m.rng.IntN(m.cfg.BotUsers)
		r.User = "b-" + strconv.Itoa(n)
		r.Device = "bd-" + strconv.Itoa(m.rng.IntN(m.cfg.BotDevices))
		// 198.18.0.0/15 is reserved for benchmarks (RFC 2544): farms sit at its top.
		r.IP = "198.19.255." + strconv.Itoa(m.rng.IntN(m.cfg.BotIPs))
	} else {
		n := m.rng.IntN(m.cfg.Users)
		r.User = "u-" + strconv.Itoa(n)
		r.Device = "d-" + strconv.Itoa(n)
		r.IP = userIP(n)
	}
	r.RequestID = m.cfg.IDPrefix + "-" + strconv.FormatUint(seq, 36)
	r.Body = appendBody(make([]byte, 0, 160), m.cfg.Campaign, r.SKU, r.User, r.Device, r.RequestID)
	m.recent[m.nRec%len(m.recent)] = r
	m.nRec++
	return r
}

// userIP spreads users over 198.18.0.0/16 (one address per user, modulo 65536).
func userIP(n int) string {
	return "198.18." + strconv.Itoa((n>>8)&255) + "." + strconv.Itoa(n&255)
}

func appendBody(b []byte, campaign, sku, user, device, reqID string) []byte {
	b = append(b, `{"campaign_id":`...)
	b = claim.AppendString(b, campaign)
	b = append(b, `,"sku":`...)
	b = claim.AppendString(b, sku)
	b = append(b, `,"user_id":`...)
	b = claim.AppendString(b, user)
	b = append(b, `,"device_id":`...)
	b = claim.AppendString(b, device)
	b = append(b, `,"request_id":`...)
	b = claim.AppendString(b, reqID)
	return append(b, '}')
}

// InvalidKinds are the malformations an Invalid request may carry, each refused by
// the gateway with the status given (CONTRACT.md: 400 / 413 / 415).
var InvalidKinds = []struct {
	Name   string
	Status int
}{
	{"missing_device", 400},
	{"bad_user_id", 400},
	{"long_request_id", 400},
	{"not_json", 400},
	{"unknown_field", 400},
	{"oversized", 413},
	{"not_json_content_type", 415},
}

func (m *Model) invalid(seq uint64) *Request {
	kind := InvalidKinds[m.rng.IntN(len(InvalidKinds))]
	n := m.rng.IntN(m.cfg.Users)
	r := &Request{Seq: seq, Kind: Invalid, Invalid: kind.Name, ContentType: "application/json",
		User: "u-" + strconv.Itoa(n), Device: "d-" + strconv.Itoa(n), IP: userIP(n), SKU: m.sku(),
		RequestID: m.cfg.IDPrefix + "-" + strconv.FormatUint(seq, 36)}
	c := m.cfg.Campaign
	switch kind.Name {
	case "missing_device":
		r.Body = []byte(`{"campaign_id":"` + c + `","sku":"` + r.SKU + `","user_id":"` + r.User + `","request_id":"` + r.RequestID + `"}`)
	case "bad_user_id":
		r.Body = appendBody(nil, c, r.SKU, r.User+" OR 1=1", r.Device, r.RequestID)
	case "long_request_id":
		r.Body = appendBody(nil, c, r.SKU, r.User, r.Device, r.RequestID+strings.Repeat("x", 65))
	case "not_json":
		r.Body = []byte("campaign_id=" + c + "&sku=" + r.SKU)
	case "unknown_field":
		r.Body = []byte(`{"campaign_id":"` + c + `","sku":"` + r.SKU + `","user_id":"` + r.User +
			`","device_id":"` + r.Device + `","request_id":"` + r.RequestID + `","value":1000000}`)
	case "oversized":
		r.Body = appendBody(nil, c, r.SKU, r.User, r.Device, r.RequestID)
		r.Body = append(r.Body[:len(r.Body)-1], `,"pad":"`...)
		r.Body = append(r.Body, strings.Repeat("A", 5000)...)
		r.Body = append(r.Body, `"}`...)
	case "not_json_content_type":
		r.ContentType = "text/plain"
		r.Body = appendBody(nil, c, r.SKU, r.User, r.Device, r.RequestID)
	}
	return r
}

// ExpectedStatus is the status the contract requires for an invalid request's
// malformation, or 0 if name is not one of InvalidKinds.
func ExpectedStatus(name string) int {
	for _, k := range InvalidKinds {
		if k.Name == name {
			return k.Status
		}
	}
	return 0
}

// ValidID reports whether id is 1-64 characters of [A-Za-z0-9._:-], the contract's rule
// for every id; bench checks its own inputs against it so it never sends a malformed
// request by accident.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}
