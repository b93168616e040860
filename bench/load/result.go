package load

import (
	"sort"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Percentiles of a latency distribution, in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

// At returns the value for a percentile the struct holds (50, 90, 99, 99.9, 100), or
// -1 for any other.
func (p Percentiles) At(q float64) float64 {
	switch q {
	case 50:
		return p.P50
	case 90:
		return p.P90
	case 99:
		return p.P99
	case 99.9:
		return p.P999
	case 100:
		return p.Max
	}
	return -1
}

// percentiles reads a histogram recorded in microseconds.
func percentiles(h *hdrhistogram.Histogram) Percentiles {
	if h.TotalCount() == 0 {
		return Percentiles{}
	}
	us := func(v int64) float64 { return float64(v) / 1000 }
	return Percentiles{
		Count: h.TotalCount(),
		P50:   us(h.ValueAtQuantile(50)),
		P90:   us(h.ValueAtQuantile(90)),
		P99:   us(h.ValueAtQuantile(99)),
		P999:  us(h.ValueAtQuantile(99.9)),
		Max:   us(h.Max()),
		Mean:  h.Mean() / 1000,
	}
}

// Second is one second of a run. Latency and Sent are by intended send time (what
// happened to the requests scheduled in that second); Answered and Accepted are by the
// time the answer arrived (the throughput the server delivered in that second).
type Second struct {
	T        int         `json:"t"`
	Sent     int64       `json:"sent"`
	Errors   int64       `json:"errors"`
	Latency  Percentiles `json:"latency"`
	Answered int64       `json:"answered"`
	Accepted int64       `json:"accepted"`
}

// Outcome counts answers of one status and reason. Class is accepted, no_prize (a
// lottery draw that won nothing), replayed, rejected (a business or velocity answer),
// refused (a 4xx to a request bench made invalid on purpose) or error.
type Outcome struct {
	Status int    `json:"status"`
	Reason string `json:"reason"`
	Class  string `json:"class"`
	Count  int64  `json:"count"`
}

// Schedule says whether the generator itself kept the schedule.
type Schedule struct {
	// Kept is false when the generator's own lag (p99) exceeded the budget, when its
	// queue in front of the connections filled, or when the run was interrupted: the
	// load offered was then less than asked and the latencies understate the truth.
	Kept bool `json:"kept"`
	// Lag is how late the scheduler handed requests to the connections (its own CPU).
	Lag Percentiles `json:"lag"`
	// QueueWait is how long requests then waited for a free connection; it is part of
	// their latency. Large values with a fast server mean too few --connections.
	QueueWait   Percentiles `json:"queue_wait"`
	QueueFull   int64       `json:"queue_full"`
	LagBudgetMs float64     `json:"lag_budget_ms"`
	Note        string      `json:"note,omitempty"`
}

// Verdict is an objective's judgement of a run.
type Verdict struct {
	Objective string   `json:"objective"`
	Held      bool     `json:"held"`
	Why       []string `json:"why,omitempty"`
}

// Result is everything a run measured.
type Result struct {
	Label       string    `json:"label,omitempty"`
	Target      string    `json:"target"`
	Campaign    string    `json:"campaign"`
	SKUs        []string  `json:"skus"`
	Rate        float64   `json:"rate"`
	Duration    string    `json:"duration"`
	Burst       string    `json:"burst"`
	Connections int       `json:"connections"`
	Seed        uint64    `json:"seed"`
	Users       int       `json:"users"`
	Mix         string    `json:"mix"`
	Started     time.Time `json:"started"`
	// Elapsed runs from the first intended send to the last answer, in seconds.
	Elapsed     float64 `json:"elapsed_s"`
	Interrupted bool    `json:"interrupted,omitempty"`

	Intended int64 `json:"intended"`
	Sent     int64 `json:"sent"`
	Answered int64 `json:"answered"`
	Accepted int64 `json:"accepted"`
	// NoPrize counts a lottery's first answers 200 "no_prize": a draw decided and
	// recorded that took nothing (not an accepted claim; a won draw is one). Won
	// counts the lottery's 200 "won" answers among Accepted; Won + NoPrize are the
	// draws answered. Both 0 for other kinds.
	NoPrize  int64 `json:"no_prize"`
	Won      int64 `json:"won"`
	Replayed int64 `json:"replayed"`
	Rejected int64 `json:"rejected"`
	Refused  int64 `json:"refused"`
	Errors   int64 `json:"errors"`
	Timeouts int64 `json:"timeouts"`

	SentPerSec     float64 `json:"sent_per_s"`
	AnsweredPerSec float64 `json:"answered_per_s"`
	AcceptedPerSec float64 `json:"accepted_per_s"`
	// DrawsPerSec is a lottery's draws answered (won + no prize, first answers) per
	// second, over the same span as AcceptedPerSec; 0 for other kinds.
	DrawsPerSec float64 `json:"draws_per_s,omitempty"`

	// PerTarget splits the answers by target when the run had several.
	PerTarget []TargetCounts `json:"per_target,omitempty"`

	Latency  Percentiles `json:"latency"`
	Outcomes []Outcome   `json:"outcomes"`
	Kinds    KindCounts  `json:"kinds"`
	Schedule Schedule    `json:"schedule"`
	Seconds  []Second    `json:"seconds"`

	// Violations seen on the wire: a retry answered differently from its first answer,
	// a claim_id handed to two request_ids, a malformed request accepted.
	ReplayMismatches  int64    `json:"replay_mismatches"`
	DuplicateClaimIDs int64    `json:"duplicate_claim_ids"`
	InvalidAccepted   int64    `json:"invalid_accepted"`
	Violations        []string `json:"violations,omitempty"`

	Verdict *Verdict `json:"verdict,omitempty"`
	// Histogram is the overall latency histogram (microseconds) in HdrHistogram's V2
	// compressed encoding, base64: any HdrHistogram tool can read or merge it.
	Histogram string `json:"histogram_hdr_v2"`

	hist *hdrhistogram.Histogram
}

// TargetCounts is one target's share of a run with several.
type TargetCounts struct {
	Target   string `json:"target"`
	Answered int64  `json:"answered"`
	Accepted int64  `json:"accepted"`
	Errors   int64  `json:"errors"`
}

// KindCounts is how many requests of each traffic kind were sent.
type KindCounts struct {
	Normal  int64 `json:"normal"`
	Bot     int64 `json:"bot"`
	Retry   int64 `json:"retry"`
	Invalid int64 `json:"invalid"`
}

// Violated reports whether the run saw a guarantee broken on the wire.
func (r *Result) Violated() bool {
	return r.ReplayMismatches > 0 || r.DuplicateClaimIDs > 0 || r.InvalidAccepted > 0
}

// ByReason sums the outcomes of one class (rejected, refused, error, ...) per reason.
func (r *Result) ByReason(class string) map[string]int64 {
	m := map[string]int64{}
	for _, o := range r.Outcomes {
		if o.Class == class {
			m[o.Reason] += o.Count
		}
	}
	return m
}

// Judge applies an objective to the run and stores the verdict.
func (r *Result) Judge(o Objective) *Verdict {
	v := &Verdict{Objective: o.String(), Held: true}
	fail := func(why string) { v.Held = false; v.Why = append(v.Why, why) }
	if r.Interrupted {
		fail("interrupted before the schedule ended")
	}
	if !r.Schedule.Kept {
		fail("bench fell behind its own schedule (" + r.Schedule.Note + "), so less load was offered than asked")
	}
	for _, b := range o.Bounds {
		got := r.quantile(b.Quantile)
		if got > b.Limit {
			fail(b.Name + " " + fmtMs(ms(got)) + " > " + b.Limit.String())
		}
	}
	if r.Intended > 0 {
		share := float64(r.Errors) / float64(r.Intended)
		if share > o.ErrorBudget {
			fail("errors " + fmtPct(share) + " > budget " + fmtPct(o.ErrorBudget))
		}
	}
	r.Verdict = v
	return v
}

func (r *Result) quantile(q float64) time.Duration {
	if r.hist != nil {
		if q >= 100 {
			return time.Duration(r.hist.Max()) * time.Microsecond
		}
		return time.Duration(r.hist.ValueAtQuantile(q)) * time.Microsecond
	}
	if v := r.Latency.At(q); v >= 0 {
		return time.Duration(v * 1e6)
	}
	return 0
}

func sortOutcomes(out []Outcome) {
	order := map[string]int{"accepted": 0, "no_prize": 1, "replayed": 2, "rejected": 3, "refused": 4, "error": 5}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if order[a.Class] != order[b.Class] {
			return order[a.Class] < order[b.Class]
		}
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		if a.Status != b.Status {
			return a.Status < b.Status
		}
		return a.Reason < b.Reason
	})
}
