package load

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/flashgate/flashgate/bench/record"
	"github.com/flashgate/flashgate/bench/traffic"
)

// Histogram ranges, in microseconds: 1 µs to 2 minutes covers every latency a request
// can have under the longest timeout.
const (
	histMin = 1
	histMax = 120 * 1_000_000
)

type outcomeKey struct {
	status        int
	reason, class string
}

// firstAnswer is the first definitive answer seen for a request_id (by the Seq of
// the request that introduced it), so a retry can be compared with it.
type firstAnswer struct {
	seq     uint64
	set     bool
	status  int
	reason  string
	claimID string
	draw    drawResult
}

const answerRing = 1 << 16

type second struct {
	sent, errors int64
	hist         *hdrhistogram.Histogram
}

type tick struct{ answered, accepted int64 }

// recorder owns every statistic of a run; only its goroutine touches them, so the
// workers hand it answers over a channel instead of sharing locked histograms.
type recorder struct {
	cfg  *Config
	tcfg traffic.Config
	base time.Time
	res  Result
	sent counter

	hist, lag, queue *hdrhistogram.Histogram
	seconds          []second
	ticks            []tick
	outcomes         map[outcomeKey]int64
	answers          []firstAnswer
	claims           map[string]string
	claimsFull       bool

	// The progress line's view of the last second.
	win                                 *hdrhistogram.Histogram
	winAnswered, winAccepted, winErrors int64
	lastSent                            int64
	lastTick                            time.Duration
}

func newRecorder(cfg *Config, tcfg traffic.Config, sch schedule, targets int) *recorder {
	secs := int(math.Ceil(cfg.Duration.Seconds()))
	r := &recorder{
		cfg:      cfg,
		tcfg:     tcfg,
		hist:     hdrhistogram.New(histMin, histMax, 3),
		lag:      hdrhistogram.New(histMin, histMax, 2),
		queue:    hdrhistogram.New(histMin, histMax, 2),
		win:      hdrhistogram.New(histMin, histMax, 2),
		seconds:  make([]second, secs),
		outcomes: map[outcomeKey]int64{},
		answers:  make([]firstAnswer, answerRing),
		claims:   map[string]string{},
	}
	r.res = Result{
		Label: cfg.Label, Target: cfg.Target, Campaign: tcfg.Campaign, SKUs: tcfg.SKUs,
		Rate: cfg.Rate, Duration: cfg.Duration.String(), Burst: cfg.Burst.String(),
		Connections: cfg.Connections, Seed: tcfg.Seed, Users: tcfg.Users, Mix: tcfg.Mix.String(),
		Intended: sch.n,
	}
	if targets > 1 {
		for _, t := range cfg.Targets() {
			r.res.PerTarget = append(r.res.PerTarget, TargetCounts{Target: t})
		}
	}
	return r
}

func (r *recorder) run(in <-chan *answer) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case a, ok := <-in:
			if !ok {
				return
			}
			r.add(a)
		case <-t.C:
			r.progress()
		}
	}
}

// class of an answer, and whether it counts against the error budget.
func classify(a *answer) string {
	r := a.req
	switch {
	case a.status == 0:
		return "error"
	case a.status == 200 && a.replayed:
		return "replayed"
	case a.status == 200 && a.draw == drawNone:
		return "no_prize"
	case a.status == 200:
		return "accepted"
	case r.Kind == traffic.Invalid && a.status >= 400 && a.status < 500:
		return "refused"
	case a.status == 409 || a.status == 429 || a.status == 403:
		return "rejected"
	}
	return "error"
}

func (r *recorder) add(a *answer) {
	res := &r.res
	res.Answered++
	switch a.req.Kind {
	case traffic.Normal:
		res.Kinds.Normal++
	case traffic.Bot:
		res.Kinds.Bot++
	case traffic.Retry:
		res.Kinds.Retry++
	case traffic.Invalid:
		res.Kinds.Invalid++
	}
	class := classify(a)
	reason := a.reason
	if a.status == 200 {
		reason = "accepted"
		switch {
		case a.replayed:
			reason = "replayed"
		case a.draw == drawNone:
			reason = "no_prize"
		case a.draw == drawWon:
			reason = "won"
		}
	} else if reason == "" {
		reason = "http_" + strconv.Itoa(a.status)
	}
	r.outcomes[outcomeKey{a.status, reason, class}]++
	if r.res.PerTarget != nil {
		pt := &r.res.PerTarget[a.target]
		pt.Answered++
		switch class {
		case "accepted":
			pt.Accepted++
		case "error":
			pt.Errors++
		}
	}
	if r.cfg.Observe != nil {
		r.cfg.Observe(Observation{Target: a.target, Status: a.status, Reason: a.reason, Replayed: a.replayed,
			Due: r.base.Add(a.at), Done: r.base.Add(a.done)})
	}

	lat := a.done - a.at
	sec := int(a.at / time.Second)
	for sec >= len(r.seconds) {
		r.seconds = append(r.seconds, second{})
	}
	s := &r.seconds[sec]
	s.sent++
	// A transport error other than a timeout has no meaningful latency (the
	// connection was refused or dropped); a timeout's latency is recorded, so the top
	// percentiles show a server that stopped answering.
	if a.status != 0 || a.reason == "timeout" {
		us := max(lat.Microseconds(), histMin)
		_ = r.hist.RecordValue(min(us, histMax))
		if s.hist == nil {
			s.hist = hdrhistogram.New(histMin, histMax, 2)
		}
		_ = s.hist.RecordValue(min(us, histMax))
		_ = r.win.RecordValue(min(us, histMax))
	}
	_ = r.lag.RecordValue(min(max(a.lag.Microseconds(), histMin), histMax))
	_ = r.queue.RecordValue(min(max((a.pickup-a.dispatch).Microseconds(), histMin), histMax))

	done := int(a.done / time.Second)
	for done >= len(r.ticks) {
		r.ticks = append(r.ticks, tick{})
	}
	r.ticks[done].answered++
	r.winAnswered++

	switch class {
	case "accepted", "replayed", "no_prize":
		switch {
		case class == "accepted":
			res.Accepted++
			r.ticks[done].accepted++
			r.winAccepted++
			if a.draw == drawWon {
				res.Won++
			}
		case class == "no_prize":
			res.NoPrize++
		default:
			res.Replayed++
		}
		if a.req.Kind == traffic.Invalid {
			res.InvalidAccepted++
			r.violation("a malformed request (%s, request_id %s) was answered 200 with %s", a.req.Invalid, a.req.RequestID, a.claimID)
		}
		r.checkClaimID(a)
		if r.cfg.Record != nil {
			e := &record.Entry{ClaimID: a.claimID, RequestID: a.req.RequestID, Campaign: r.tcfg.Campaign,
				User: a.req.User, SKU: a.req.SKU, Value: a.value, Replayed: a.replayed}
			switch a.draw {
			case drawWon:
				// The prize drawn, not the sku asked for (a lottery ignores it).
				e.Result, e.SKU = record.ResultWon, a.sku
			case drawNone:
				// A draw that won nothing: a draws row, no claim (bench verify).
				e.Result, e.ClaimID, e.DrawID, e.SKU, e.Value = record.ResultNoPrize, "", a.claimID, "", 0
			}
			r.cfg.Record.Add(e)
		}
	case "rejected":
		res.Rejected++
	case "refused":
		res.Refused++
	case "error":
		if a.status == 503 && r.cfg.Record != nil && a.req.Kind != traffic.Invalid {
			r.cfg.Record.Add(&record.Entry{RequestID: a.req.RequestID, Campaign: r.tcfg.Campaign,
				User: a.req.User, SKU: a.req.SKU, Status: 503})
		}
		res.Errors++
		s.errors++
		r.winErrors++
		if a.reason == "timeout" {
			res.Timeouts++
		}
	}
	if a.req.Kind != traffic.Invalid {
		r.checkReplay(a)
	}
}

// checkClaimID: one claim_id belongs to one request_id, whatever the retries. A
// lottery's draw_id (a no-prize draw) is checked the same way: a won draw's draw_id is
// its claim_id, so the two share one space.
func (r *recorder) checkClaimID(a *answer) {
	if a.claimID == "" {
		r.res.DuplicateClaimIDs++
		if a.draw == drawNone {
			r.violation("a no_prize 200 for request_id %s carried no draw_id", a.req.RequestID)
		} else {
			r.violation("a 200 for request_id %s carried no claim_id", a.req.RequestID)
		}
		return
	}
	if r.claimsFull {
		return
	}
	if prev, ok := r.claims[a.claimID]; ok {
		if prev != a.req.RequestID {
			r.res.DuplicateClaimIDs++
			r.violation("claim_id %s was handed to request_id %s and to %s", a.claimID, prev, a.req.RequestID)
		}
		return
	}
	// Bounded memory on very long runs: past 4M accepted claims the cross-check stops
	// (bench verify still checks uniqueness in Postgres).
	if len(r.claims) >= 4_000_000 {
		r.claimsFull = true
		return
	}
	r.claims[a.claimID] = a.req.RequestID
}

// checkReplay compares a definitive answer (200, 409, 403, 429) with the first
// definitive answer for the same request_id. Retries and originals may complete in
// either order, so whichever arrives first is stored and the other compared with it.
// 503 (and transport errors) are not answers: "nothing was taken, retry".
func (r *recorder) checkReplay(a *answer) {
	switch a.status {
	case 200, 409, 403, 429:
	default:
		return
	}
	key := a.req.Seq
	if a.req.Kind == traffic.Retry {
		key = a.req.Orig
	}
	slot := &r.answers[key%answerRing]
	if !slot.set || slot.seq != key {
		*slot = firstAnswer{seq: key, set: true, status: a.status, reason: a.reason, claimID: a.claimID, draw: a.draw}
		return
	}
	same := slot.status == a.status
	if same && a.status == 200 {
		same = slot.claimID == a.claimID && slot.draw == a.draw
	} else if same {
		same = slot.reason == a.reason
	}
	if !same && (!remembered(slot.status, slot.reason) || !remembered(a.status, a.reason)) {
		// One of the two was a rejection the gateway decides anew on every retry
		// (DESIGN.md "Which rejections are remembered"): a later attempt may get another
		// answer. Keep the remembered one: that is what every retry must get from now on.
		if !remembered(slot.status, slot.reason) {
			*slot = firstAnswer{seq: key, set: true, status: a.status, reason: a.reason, claimID: a.claimID, draw: a.draw}
		}
		return
	}
	if !same {
		r.res.ReplayMismatches++
		r.violation("request_id %s answered %d %s then %d %s", a.req.RequestID,
			slot.status, slot.reason+slot.claimID+slot.draw.String(), a.status, a.reason+a.claimID+a.draw.String())
	}
}

// remembered reports whether an answer is kept for the request_id and so must be what
// every retry gets: a 200, and the rejections DESIGN.md "Which rejections are
// remembered" lists (budget_exhausted, user_limit, ended, not_eligible, partner_quota).
// sold_out, not_started and paused are decided anew on a retry, and the risk answers
// (403, 429) were never remembered.
func remembered(status int, reason string) bool {
	switch {
	case status == 403 || status == 429:
		return false
	case status == 409:
		return reason != "sold_out" && reason != "not_started" && reason != "paused"
	}
	return true
}

func (r *recorder) violation(format string, args ...any) {
	if len(r.res.Violations) < 50 {
		r.res.Violations = append(r.res.Violations, fmt.Sprintf(format, args...))
	}
}

func (r *recorder) progress() {
	w := r.cfg.Progress
	now := time.Since(r.base)
	span := (now - r.lastTick).Seconds()
	if span <= 0 {
		span = 1
	}
	sent := r.sent.Load()
	if w != nil {
		label := ""
		if r.cfg.Label != "" {
			label = r.cfg.Label + " "
		}
		p99 := "-"
		if r.win.TotalCount() > 0 {
			p99 = fmtMs(float64(r.win.ValueAtQuantile(99)) / 1000)
		}
		fmt.Fprintf(w, "%s%4ds  sent %s/s  answered %s/s  accepted %s/s  p99 %s  errors %d  in flight %d\n",
			label, int(now.Round(time.Second)/time.Second),
			fmtInt(float64(sent-r.lastSent)/span), fmtInt(float64(r.winAnswered)/span),
			fmtInt(float64(r.winAccepted)/span), p99, r.winErrors, sent-r.res.Answered)
	}
	r.lastSent, r.lastTick = sent, now
	r.win.Reset()
	r.winAnswered, r.winAccepted, r.winErrors = 0, 0, 0
}

func (r *recorder) finish(interrupted bool, queueFull int64, elapsed time.Duration) *Result {
	res := &r.res
	res.Interrupted = interrupted
	res.Sent = r.sent.Load()
	res.Elapsed = elapsed.Seconds()
	res.Latency = percentiles(r.hist)
	res.hist = r.hist
	if b, err := r.hist.Encode(hdrhistogram.V2CompressedEncodingCookieBase); err == nil {
		res.Histogram = base64.StdEncoding.EncodeToString(b)
	}
	window := r.cfg.Duration.Seconds()
	res.SentPerSec = float64(res.Sent) / window
	span := math.Max(window, elapsed.Seconds())
	res.AnsweredPerSec = float64(res.Answered) / span
	res.AcceptedPerSec = float64(res.Accepted) / span
	if res.Won+res.NoPrize > 0 {
		res.DrawsPerSec = float64(res.Won+res.NoPrize) / span
	}
	for k, n := range r.outcomes {
		res.Outcomes = append(res.Outcomes, Outcome{Status: k.status, Reason: k.reason, Class: k.class, Count: n})
	}
	sortOutcomes(res.Outcomes)

	n := max(len(r.seconds), len(r.ticks))
	res.Seconds = make([]Second, n)
	for i := range res.Seconds {
		s := Second{T: i}
		if i < len(r.seconds) {
			s.Sent, s.Errors = r.seconds[i].sent, r.seconds[i].errors
			if h := r.seconds[i].hist; h != nil {
				s.Latency = percentiles(h)
			}
		}
		if i < len(r.ticks) {
			s.Answered, s.Accepted = r.ticks[i].answered, r.ticks[i].accepted
		}
		res.Seconds[i] = s
	}

	sc := &res.Schedule
	sc.Lag = percentiles(r.lag)
	sc.QueueWait = percentiles(r.queue)
	sc.QueueFull = queueFull
	sc.LagBudgetMs = ms(r.cfg.LagBudget)
	sc.Kept = true
	var notes []string
	if sc.Lag.P99 > sc.LagBudgetMs {
		sc.Kept = false
		notes = append(notes, "schedule lag p99 "+fmtMs(sc.Lag.P99)+" > "+fmtMs(sc.LagBudgetMs)+": bench is short of CPU")
	}
	if queueFull > 0 {
		sc.Kept = false
		notes = append(notes, strconv.FormatInt(queueFull, 10)+" requests found every connection busy and the queue full: raise --connections")
	}
	if interrupted || res.Sent < res.Intended {
		sc.Kept = false
		notes = append(notes, "sent "+strconv.FormatInt(res.Sent, 10)+" of "+strconv.FormatInt(res.Intended, 10)+" scheduled")
	}
	if sc.Kept {
		notes = append(notes, "lag p99 "+fmtMs(sc.Lag.P99)+", max "+fmtMs(sc.Lag.Max))
	}
	sc.Note = strings.Join(notes, "; ")
	return res
}

func fmtMs(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v/1000, 'f', 2, 64) + "s"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64) + "ms"
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + "ms"
}

func fmtPct(f float64) string { return strconv.FormatFloat(f*100, 'g', 3, 64) + "%" }

// fmtInt formats with thousands separators.
func fmtInt(f float64) string {
	n := int64(math.Round(f))
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// FmtMs, FmtPct and FmtInt are the number formats of bench's output.
func FmtMs(v float64) string  { return fmtMs(v) }
func FmtPct(f float64) string { return fmtPct(f) }
func FmtInt(f float64) string { return fmtInt(f) }
