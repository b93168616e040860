package load

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Step is how the ramp raises the rate: by Add requests/s or by Factor.
type Step struct {
	Add    float64
	Factor float64
}

// ParseStep reads "1000" or "+1000" (add) and "x1.5" (multiply).
func ParseStep(s string) (Step, error) {
	s = strings.TrimSpace(s)
	if f, ok := strings.CutPrefix(s, "x"); ok {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || !(v > 1) || v > 100 {
			return Step{}, fmt.Errorf("step %q: a factor must be more than 1 and at most 100, like x1.5", s)
		}
		return Step{Factor: v}, nil
	}
	v, err := ParseRate(strings.TrimPrefix(s, "+"))
	if err != nil {
		return Step{}, fmt.Errorf("step %q: want +N (add N/s) or xF (multiply by F)", s)
	}
	return Step{Add: v}, nil
}

func (s Step) next(rate float64) float64 {
	if s.Factor > 1 {
		return rate * s.Factor
	}
	return rate + s.Add
}

func (s Step) String() string {
	if s.Factor > 1 {
		return "x" + strconv.FormatFloat(s.Factor, 'g', -1, 64)
	}
	return "+" + strconv.FormatFloat(s.Add, 'g', -1, 64)
}

// RampConfig is a ramp: fixed-rate steps of StepDuration, from Start, raised by Step
// until a step breaks the Objective or MaxRate is passed; then Refine bisection steps
// between the highest rate that held and the lowest that broke.
type RampConfig struct {
	// Run is the template of each step; its Rate, Duration, Burst and Label are set
	// per step, and its traffic's IDPrefix and Seed are varied so steps never replay
	// each other's request_ids.
	Run          Config
	Start        float64
	Step         Step
	StepDuration time.Duration
	MaxRate      float64
	Objective    Objective
	Refine       int
	// Pause between steps lets queues drain so one step's backlog does not count
	// against the next.
	Pause time.Duration
	// Warmup, when set, offers the Start rate for this long before the first step and
	// judges nothing: connections are opened, caches and pools filled, code paths
	// warmed, so a cold start is not mistaken for the deployment's limit. Its answers are
	// still recorded (and verified) like any other.
	Warmup time.Duration
	// Progress gets a line per step (and the runs' own progress lines).
	Progress io.Writer
}

// RampStep is one step's verdict and measurements.
type RampStep struct {
	Rate   float64  `json:"rate"`
	Held   bool     `json:"held"`
	Why    []string `json:"why,omitempty"`
	Result *Result  `json:"result"`
}

// RampResult is the outcome of a ramp.
type RampResult struct {
	Objective    string     `json:"objective"`
	Start        float64    `json:"start"`
	Step         string     `json:"step"`
	StepDuration string     `json:"step_duration"`
	MaxRate      float64    `json:"max_rate"`
	Steps        []RampStep `json:"steps"`
	// HighestHeld is the highest rate whose step held the objective (0: none did).
	HighestHeld float64 `json:"highest_held"`
	// HeldResult is that step's result (accepted/s, latencies).
	HeldResult *Result `json:"-"`
	// WarmupResult is the warm-up's measurements (not judged), if there was one.
	WarmupResult *Result `json:"warmup,omitempty"`
	// LowestBroken is the lowest rate that broke it (0: none did).
	LowestBroken float64 `json:"lowest_broken"`
	// Limit says what ended the ramp: "objective", "generator" (bench could not send
	// faster on this machine: the deployment's limit is above HighestHeld),
	// "max_rate" or "interrupted".
	Limit string `json:"limit"`
}

// Validate reports what is wrong with the configuration, without running anything (so
// a caller can refuse bad flags before it creates output folders).
func (c RampConfig) Validate() error { return c.validate() }

func (c *RampConfig) validate() error {
	if c.StepDuration == 0 {
		c.StepDuration = 10 * time.Second
	}
	if c.Pause == 0 {
		c.Pause = time.Second
	}
	switch {
	case !(c.Start > 0):
		return fmt.Errorf("ramp start %v: want more than 0", c.Start)
	case c.Step.Factor <= 1 && !(c.Step.Add > 0):
		return fmt.Errorf("ramp step: want +N or xF")
	case c.MaxRate < c.Start:
		return fmt.Errorf("ramp max rate %v: below the start %v", c.MaxRate, c.Start)
	case c.StepDuration < 500*time.Millisecond:
		return fmt.Errorf("ramp step duration %s: want at least 500ms", c.StepDuration)
	case c.Warmup < 0 || c.Warmup > 10*time.Minute:
		return fmt.Errorf("ramp warm-up %s: want 0..10m", c.Warmup)
	case c.Refine < 0 || c.Refine > 10:
		return fmt.Errorf("ramp refine %d: want 0..10", c.Refine)
	case len(c.Objective.Bounds) == 0:
		return fmt.Errorf("ramp: an objective (--slo) is required")
	}
	if c.Run.LagBudget == 0 {
		c.Run.LagBudget = c.Objective.LagBudget()
	}
	c.Run.Rate, c.Run.Duration = c.Start, c.StepDuration
	return c.Run.validate()
}

// Ramp runs the steps. It returns an error only for bad configuration.
func Ramp(ctx context.Context, cfg RampConfig) (*RampResult, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	out := &RampResult{Objective: cfg.Objective.String(), Start: cfg.Start, Step: cfg.Step.String(),
		StepDuration: cfg.StepDuration.String(), MaxRate: cfg.MaxRate}
	prefix := cfg.Run.Traffic.IDPrefix
	if prefix == "" {
		prefix = "r" + strconv.FormatUint(cfg.Run.Traffic.Seed, 36)
	}
	n := 0
	step := func(rate float64) (*RampStep, error) {
		n++
		rc := cfg.Run
		rc.Rate, rc.Duration = rate, cfg.StepDuration
		rc.Label = fmt.Sprintf("step %d @%s/s", n, fmtInt(rate))
		rc.Traffic.IDPrefix = prefix + "s" + strconv.Itoa(n)
		rc.Traffic.Seed = cfg.Run.Traffic.Seed + uint64(n)
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "-- %s for %s\n", rc.Label, cfg.StepDuration)
		}
		res, err := Run(ctx, rc)
		if err != nil {
			return nil, err
		}
		v := res.Judge(cfg.Objective)
		s := &RampStep{Rate: rate, Held: v.Held, Why: v.Why, Result: res}
		out.Steps = append(out.Steps, *s)
		if cfg.Progress != nil {
			verdict := "held"
			if !v.Held {
				verdict = "BROKE: " + strings.Join(v.Why, "; ")
			}
			fmt.Fprintf(cfg.Progress, "-- %s: p99 %s, accepted %s/s, errors %d: %s\n", rc.Label,
				fmtMs(res.Latency.P99), fmtInt(res.AcceptedPerSec), res.Errors, verdict)
		}
		if v.Held && rate > out.HighestHeld {
			out.HighestHeld, out.HeldResult = rate, res
		}
		if !v.Held && (out.LowestBroken == 0 || rate < out.LowestBroken) {
			out.LowestBroken = rate
		}
		return s, nil
	}
	pause := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(cfg.Pause):
			return true
		}
	}

	if cfg.Warmup > 0 {
		rc := cfg.Run
		rc.Rate, rc.Duration = cfg.Start, cfg.Warmup
		rc.Label = "warm-up @" + fmtInt(cfg.Start) + "/s"
		rc.Traffic.IDPrefix = prefix + "w"
		rc.Traffic.Seed = cfg.Run.Traffic.Seed + 1<<32
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "-- %s for %s (not judged)\n", rc.Label, cfg.Warmup)
		}
		res, err := Run(ctx, rc)
		if err != nil {
			return nil, err
		}
		out.WarmupResult = res
		if res.Interrupted || !pause() {
			out.Limit = "interrupted"
			return out, nil
		}
	}

	rate := cfg.Start
	var broke *RampStep
	for {
		s, err := step(rate)
		if err != nil {
			return nil, err
		}
		if s.Result.Interrupted {
			out.Limit = "interrupted"
			return out, nil
		}
		if !s.Held {
			broke = s
			break
		}
		next := math.Round(cfg.Step.next(rate))
		if next > cfg.MaxRate {
			out.Limit = "max_rate"
			return out, nil
		}
		rate = next
		if !pause() {
			out.Limit = "interrupted"
			return out, nil
		}
	}
	out.Limit = "objective"
	if !broke.Result.Schedule.Kept {
		out.Limit = "generator"
	}
	// Bisect between the highest rate that held and the one that broke.
	lo, hi := out.HighestHeld, broke.Rate
	for i := 0; i < cfg.Refine && lo > 0 && hi-lo > math.Max(lo*0.05, 1); i++ {
		if !pause() {
			out.Limit = "interrupted"
			return out, nil
		}
		mid := math.Round((lo + hi) / 2)
		s, err := step(mid)
		if err != nil {
			return nil, err
		}
		if s.Result.Interrupted {
			out.Limit = "interrupted"
			return out, nil
		}
		if s.Held {
			lo = mid
		} else {
			hi = mid
			if !s.Result.Schedule.Kept {
				out.Limit = "generator"
			}
		}
	}
	return out, nil
}
