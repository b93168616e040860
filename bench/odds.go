package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/flagenv"
	"github.com/flashgate/flashgate/internal/store"
)

// cmdOdds is `bench odds --campaign C`: the lottery's fairness check from the books
// (DESIGN.md "Lottery"). It reads every draw of the campaign from Postgres, tests what
// the draws pointed at against the configured weights with Pearson's chi-square
// (internal/odds, categories expected fewer than 5 times pooled) and prints the
// p-value beside the campaign's figures: draws, wins per prize, win rate, value given,
// delivered, failed. Exit 0 when p >= --alpha, 2 when below (the draws do not follow
// the configured odds), 1 when it could not run.
func cmdOdds(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("odds", "odds --campaign C [--alpha 1e-4] [--json] [flags]", stdout, stderr)
	fe := flagenv.New(fs)
	var (
		pgURL, campaign string
		alpha           float64
		asJSON          bool
	)
	fe.PGURL(&pgURL, "Postgres URL")
	fs.StringVar(&campaign, "campaign", "", "lottery campaign to check (required)")
	fs.Float64Var(&alpha, "alpha", 1e-4, "fail (exit 2) when the chi-square p-value is below this; under correct odds a run fails with this probability")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	if code, stop := parse(fs, fe.Parse, args, stdout); stop {
		return code
	}
	if fs.NArg() > 0 {
		return usageErr(stderr, "odds", errUnexpectedArgs(fs.Args()))
	}
	if campaign == "" {
		return usageErr(stderr, "odds", fmt.Errorf("--campaign is required"))
	}
	if alpha <= 0 || alpha >= 1 {
		return usageErr(stderr, "odds", fmt.Errorf("--alpha %g: want 0 < alpha < 1", alpha))
	}
	pg, err := store.Open(ctx, pgURL, 2)
	if err != nil {
		return failed(stderr, "odds", err)
	}
	defer pg.Close()
	rep, err := catalog.Lottery(ctx, pg, campaign)
	switch {
	case errors.Is(err, catalog.ErrNotFound), errors.Is(err, catalog.ErrNotLottery):
		return usageErr(stderr, "odds", fmt.Errorf("campaign %s: %w", campaign, err))
	case err != nil:
		return failed(stderr, "odds", err)
	}
	if asJSON {
		json.NewEncoder(stdout).Encode(rep)
	} else {
		writeOdds(stdout, rep)
	}
	if rep.Fit != nil && rep.Fit.PValue < alpha {
		fmt.Fprintf(stderr, "bench odds: p-value %.3g < %g: the draws do not follow the configured odds\n", rep.Fit.PValue, alpha)
		return exitViolated
	}
	return exitHeld
}

func writeOdds(w io.Writer, r *catalog.LotteryReport) {
	fmt.Fprintf(w, "lottery %s (odds %s): %d draws, %d won (win rate %.4f%%), %d no prize, value given %d\n",
		r.CampaignID, r.OddsVersion, r.Draws, r.Won, 100*r.WinRate, r.NoPrize, r.ValueGiven)
	fmt.Fprintf(w, "deliveries: %d delivered, %d delivering, %d failed\n\n", r.Delivered, r.Delivering, r.Failed)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "band\tweight\tprobability\tpicked\texpected\twon\tvalue\tdelivered\tfailed")
	n := float64(r.Draws - r.OtherVersions)
	var total int64 = r.NoPrizeWeight
	for _, p := range r.Prizes {
		total += p.Weight
	}
	p0 := 0.0
	if total > 0 {
		p0 = float64(r.NoPrizeWeight) / float64(total)
	}
	fmt.Fprintf(tw, "(no prize)\t%d\t%.6f\t%d\t%.1f\t\t\t\t\n", r.NoPrizeWeight, p0, r.NoPrizePicked, p0*n)
	for _, p := range r.Prizes {
		fmt.Fprintf(tw, "%s\t%d\t%.6f\t%d\t%.1f\t%d\t%d\t%d\t%d\n", p.SKU, p.Weight, p.Probability, p.Picked, p.Probability*n,
			p.Won, p.Value, p.Delivered, p.Failed)
	}
	tw.Flush()
	if r.Fit == nil {
		fmt.Fprintln(w, "\nno draws: nothing to test")
		return
	}
	fmt.Fprintf(w, "\nchi-square %.3f, %d degrees of freedom (%d categories after pooling), p-value %.4g over %d draws\n",
		r.Fit.ChiSquare, r.Fit.DF, r.Fit.Categories, r.Fit.PValue, r.Fit.Draws)
	if r.OtherVersions > 0 {
		fmt.Fprintf(w, "(%d draws under other odds versions left out)\n", r.OtherVersions)
	}
}
