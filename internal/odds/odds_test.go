package odds

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// The seed's turntable: an iPhone at 1 in 100,000, thanks 90 %, phone credit the rest.
func turntable() Table {
	return Table{NoPrize: 90_000, Prizes: []Prize{
		{SKU: "iphone", Weight: 1, InStock: true},
		{SKU: "credit10", Weight: 9_999, InStock: true},
	}}
}

func TestProbabilitiesAndTheOutOfStockRule(t *testing.T) {
	tb := turntable()
	p := tb.Probabilities()
	if math.Abs(p[0]-0.9) > 1e-12 || math.Abs(p[1]-1e-5) > 1e-12 || math.Abs(p[2]-0.09999) > 1e-12 {
		t.Fatalf("probabilities %v", p)
	}
	tb.Prizes[0].InStock = false
	p = tb.Probabilities()
	if math.Abs(p[0]-0.90001) > 1e-12 || p[1] != 0 || math.Abs(p[2]-0.09999) > 1e-12 {
		t.Fatalf("iphone out of stock: %v (its weight must go to no prize, nowhere else)", p)
	}
	// Pick agrees with Probabilities over the whole range.
	counts := make([]int64, 3)
	for r := int64(0); r < tb.Total(); r++ {
		counts[tb.Pick(r)]++
	}
	if counts[0] != 90_001 || counts[1] != 0 || counts[2] != 9_999 {
		t.Fatalf("Pick over [0,total): %v", counts)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for _, c := range []struct {
		tb   Table
		want string
	}{
		{Table{NoPrize: -1, Prizes: []Prize{{Weight: 1}}}, "no_prize_weight"},
		{Table{NoPrize: 1, Prizes: []Prize{{Weight: 1}, {Weight: -3}}}, "skus[1].weight"},
		{Table{NoPrize: 0, Prizes: []Prize{{Weight: 0}}}, "add up to 0"},
		{Table{NoPrize: MaxTotal, Prizes: []Prize{{Weight: 1}}}, "more than"},
	} {
		err := c.tb.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %q", c.tb, err, c.want)
		}
	}
	if err := turntable().Validate(); err != nil {
		t.Fatal(err)
	}
}

// A fair sampler of 100,000 draws fits (p well above 0.001 in all but a rare run; the
// seed is fixed, so this run is deterministic); a sampler that doubles the credit's
// weight is caught with p < 1e-9.
func TestChiSquareAcceptsFairAndCatchesBiasedDraws(t *testing.T) {
	tb := turntable()
	probs := tb.Probabilities()
	rng := rand.New(rand.NewPCG(1, 2))
	fair := make([]int64, 3)
	biased := make([]int64, 3)
	biasedTb := Table{NoPrize: 90_000, Prizes: []Prize{{Weight: 1, InStock: true}, {Weight: 2 * 9_999, InStock: true}}}
	for i := 0; i < 100_000; i++ {
		fair[tb.Pick(rng.Int64N(tb.Total()))]++
		biased[biasedTb.Pick(rng.Int64N(biasedTb.Total()))]++
	}
	f, err := ChiSquare(fair, probs)
	if err != nil {
		t.Fatal(err)
	}
	if f.PValue < 0.001 || f.Draws != 100_000 {
		t.Fatalf("fair draws rejected: %+v (counts %v)", f, fair)
	}
	// The iPhone (expected 1) is folded into the credit: 2 categories, 1 degree of freedom.
	if f.Categories != 2 || f.DF != 1 {
		t.Fatalf("pooling: %+v", f)
	}
	b, _ := ChiSquare(biased, probs)
	if b.PValue > 1e-9 {
		t.Fatalf("biased draws passed: %+v (counts %v)", b, biased)
	}
	// A prize of probability 0 that was drawn (given beyond its stock) fails outright.
	tb.Prizes[0].InStock = false
	z, _ := ChiSquare([]int64{90_000, 1, 9_999}, tb.Probabilities())
	if z.PValue != 0 {
		t.Fatalf("a prize drawn at probability 0: %+v", z)
	}
}

// Known value: 1 degree of freedom, statistic 3.841 is the 5 % critical point.
func TestChiSquarePValueKnownPoint(t *testing.T) {
	// observed 60/40 against 50/50 of 100: stat = (10²/50)*2 = 4 → p ≈ 0.0455
	f, err := ChiSquare([]int64{60, 40}, []float64{0.5, 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(f.ChiSquare-4) > 1e-12 || math.Abs(f.PValue-0.0455) > 0.0002 {
		t.Fatalf("%+v", f)
	}
	if _, err := ChiSquare([]int64{1}, []float64{0.5, 0.5}); err == nil {
		t.Fatal("mismatched lengths accepted")
	}
	if _, err := ChiSquare([]int64{0, 0}, []float64{0.5, 0.5}); err == nil {
		t.Fatal("no draws accepted")
	}
}
