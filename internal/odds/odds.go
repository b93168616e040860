// Package odds owns a lottery's odds (issue 17): the probabilities a draw faces given the
// configured weights and the prizes still in stock, and the statistical check that the
// observed outcomes of many draws follow them (Pearson's chi-square goodness of fit).
//
// The odds a user faces are the configured ones with one rule (CONTRACT.md "Redemption
// kinds"): a prize out of stock passes its weight to no-prize. So with weights w_i,
// no-prize weight w_0 and the set S of prizes in stock, P(prize i) = w_i / W for i in S,
// P(no prize) = (w_0 + sum of w_j for j not in S) / W, with W = w_0 + sum of all w_i:
// the total never changes, so a prize running out never raises another prize's odds.
package odds

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// Prize is one prize of the table: its weight and whether any stock is left.
type Prize struct {
	SKU     string
	Weight  int64
	InStock bool
}

// Table is a lottery's configured odds.
type Table struct {
	Prizes  []Prize
	NoPrize int64 // the no-prize weight
}

// Total is the sum of every weight (the denominator of every probability).
func (t Table) Total() int64 {
	w := t.NoPrize
	for _, p := range t.Prizes {
		w += p.Weight
	}
	return w
}

// Validate checks what a campaign PUT must refuse: negative weights, a total of zero,
// and a total too large for the draw's integer arithmetic. Errors name the field the
// way the admin API reports it.
func (t Table) Validate() error {
	if t.NoPrize < 0 {
		return fmt.Errorf("no_prize_weight: %d is negative", t.NoPrize)
	}
	var total int64
	for i, p := range t.Prizes {
		if p.Weight < 0 {
			return fmt.Errorf("skus[%d].weight: %d is negative", i, p.Weight)
		}
		total += p.Weight
		if total > MaxTotal {
			return fmt.Errorf("skus[%d].weight: the weights add up to more than %d", i, int64(MaxTotal))
		}
	}
	if total+t.NoPrize > MaxTotal {
		return fmt.Errorf("no_prize_weight: the weights add up to more than %d", int64(MaxTotal))
	}
	if total+t.NoPrize == 0 {
		return errors.New("no_prize_weight: the weights add up to 0 (nothing could be drawn)")
	}
	return nil
}

// MaxTotal bounds the weights' sum so a draw's arithmetic stays exact in Lua's doubles
// (integers up to 2^53) and in int64.
const MaxTotal = 1 << 40

// Probabilities returns P(no prize) followed by P(prize i) for each prize in order,
// under the out-of-stock rule.
func (t Table) Probabilities() []float64 {
	total := float64(t.Total())
	out := make([]float64, 1+len(t.Prizes))
	if total == 0 {
		return out
	}
	none := float64(t.NoPrize)
	for i, p := range t.Prizes {
		if p.InStock {
			out[1+i] = float64(p.Weight) / total
		} else {
			none += float64(p.Weight)
		}
	}
	out[0] = none / total
	return out
}

// Pick maps a uniform integer r in [0, Total) to an outcome: 0 for no prize, 1+i for
// prize i - the same walk the draw makes in Lua (no prize first, then the prizes in
// order), so a test can compare the two. A prize out of stock maps to no prize.
func (t Table) Pick(r int64) int {
	if r < t.NoPrize {
		return 0
	}
	r -= t.NoPrize
	for i, p := range t.Prizes {
		if r < p.Weight {
			if p.InStock {
				return 1 + i
			}
			return 0
		}
		r -= p.Weight
	}
	return 0
}

// Fit is the result of a goodness-of-fit test.
type Fit struct {
	Draws      int64   `json:"draws"`
	ChiSquare  float64 `json:"chi_square"`
	DF         int     `json:"degrees_of_freedom"`
	PValue     float64 `json:"p_value"`
	Categories int     `json:"categories"` // after pooling the ones expected fewer than 5 times
}

// ChiSquare tests observed counts (no prize first, then the prizes, as Probabilities)
// against probabilities. Categories expected fewer than 5 times are pooled into one
// (the usual validity condition of the test), and a pool still expected fewer than 5
// times is folded into the least expected category; categories of probability 0 must be
// observed 0 times, or the fit is refused outright with p = 0.
func ChiSquare(observed []int64, probs []float64) (Fit, error) {
	if len(observed) != len(probs) {
		return Fit{}, fmt.Errorf("odds: %d observed categories for %d probabilities", len(observed), len(probs))
	}
	var n int64
	for _, o := range observed {
		if o < 0 {
			return Fit{}, errors.New("odds: a negative count")
		}
		n += o
	}
	f := Fit{Draws: n}
	if n == 0 {
		return f, errors.New("odds: no draws")
	}
	type cat struct{ e, o float64 }
	var big []cat
	var pool cat
	for i, p := range probs {
		e := p * float64(n)
		o := float64(observed[i])
		switch {
		case p == 0 && o > 0:
			f.ChiSquare, f.PValue = math.Inf(1), 0
			return f, nil
		case p == 0:
		case e < 5:
			pool.e += e
			pool.o += o
		default:
			big = append(big, cat{e, o})
		}
	}
	switch {
	case pool.e >= 5 || (pool.e > 0 && len(big) == 0):
		big = append(big, pool)
	case pool.e > 0:
		// Still too small alone: fold the pool into the least expected category.
		m := 0
		for i := range big {
			if big[i].e < big[m].e {
				m = i
			}
		}
		big[m].e += pool.e
		big[m].o += pool.o
	}
	var stat float64
	for _, c := range big {
		stat += (c.o - c.e) * (c.o - c.e) / c.e
	}
	cats := len(big)
	f.ChiSquare, f.Categories, f.DF = stat, cats, cats-1
	if f.DF < 1 {
		f.PValue = 1 // one category: nothing to test
		return f, nil
	}
	f.PValue = distuv.ChiSquared{K: float64(f.DF)}.Survival(stat)
	return f, nil
}
