package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/flagenv"
	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/risk/decisionlog"
	"github.com/flashgate/flashgate/internal/rkeys"
)

const replayHelp = `riskctl replay --rules FILE [--campaign C] [--since 1h]

Reads the decisions recorded on flash.decisions since --since and re-decides them in
order under proposed rules, to show what the rules would have changed before they are
applied: accepted claims that would have been rejected (by which rule), rejections that
would have passed, would-be rejections under shadow mode, and the devices, IPs and users
most affected. Nothing is changed.

FILE holds key=value settings (the keys of rules set, one or more per line, # comments).
They are laid over the rules in force now for each campaign (its own and the global
ones); keys not in FILE keep their current value. freeze.* keys are refused: replay
does not simulate freezes (recorded blocks and freezes are taken as they were).

Velocity rules, shadow mode, and the per-user limit and stock (which depend on what
earlier claims took) are re-decided; decisions from one window before --since warm the
sliding windows. Other answers are taken as recorded.`

func replay(c *cmd, args []string) error {
	rulesFile := c.fs.String("rules", "", "file of proposed key=value rules (required)")
	campaign := campaignFlag(c)
	since := c.fs.String("since", "1h", "how far back (a duration like 30m, 1h)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *rulesFile == "" {
		return usagef("--rules: required (a file of key=value rules)")
	}
	if err := checkCampaign(*campaign); err != nil {
		return err
	}
	d, err := sinceFlag(*since)
	if err != nil {
		return err
	}
	as, err := readRulesFile(*rulesFile)
	if err != nil {
		return err
	}
	rdb, err := c.redis()
	if err != nil {
		return err
	}
	global, err := risk.ReadRules(c.ctx, rdb, "")
	if err != nil {
		return err
	}
	from := time.Now().Add(-d)
	brokers := flagenv.Brokers(c.brokers)
	entries, st, err := decisionlog.Read(c.ctx, brokers, "", from.UnixMilli(), *campaign)
	if err != nil {
		return err
	}
	camps := map[string]risk.ReplayCampaign{}
	var warm time.Duration
	for _, e := range entries {
		if _, ok := camps[e.CampaignID]; ok {
			continue
		}
		rc, err := replayCampaign(c, rdb, global, e.CampaignID, as)
		if err != nil {
			return err
		}
		camps[e.CampaignID] = rc
		warm = max(warm, rc.Rules.Device.Window, rc.Rules.IP.Window, rc.Rules.User.Window)
	}
	if warm > 0 && len(entries) > 0 {
		// The sliding windows need the claims accepted in the window before --since:
		// read again from one window (the longest proposed) earlier.
		if entries, st, err = decisionlog.Read(c.ctx, brokers, "", from.Add(-warm).UnixMilli(), *campaign); err != nil {
			return err
		}
	}
	ds := make([]risk.Decision, 0, len(entries))
	for _, e := range entries {
		if _, ok := camps[e.CampaignID]; !ok {
			rc, err := replayCampaign(c, rdb, global, e.CampaignID, as)
			if err != nil {
				return err
			}
			camps[e.CampaignID] = rc
		}
		ds = append(ds, e.Decision)
	}
	rep := risk.Replay(ds, from.UnixMilli(), *campaign, camps)
	if st.Bad > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d records did not decode and were skipped (first: %v)", st.Bad, st.FirstErr))
	}
	proposed := make([]string, 0, len(as))
	for _, a := range as {
		v := risk.Unset
		if !a.Unset {
			v = risk.Format(a.Key, a.Value)
		}
		proposed = append(proposed, a.Key+"="+v)
	}
	out := struct {
		Since    time.Time `json:"since"`
		Campaign string    `json:"campaign,omitempty"`
		Rules    []string  `json:"proposed_rules"`
		risk.ReplayReport
	}{from.UTC().Truncate(time.Second), *campaign, proposed, rep}
	c.out(out, func(w io.Writer) {
		scope := "all campaigns"
		if *campaign != "" {
			scope = "campaign " + *campaign
		}
		fmt.Fprintf(w, "replay of %d decisions since %s (%s) with %s\n", rep.Decisions, out.Since.Format(time.RFC3339), scope, strings.Join(proposed, " "))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "OUTCOME\tRECORDED\tPROPOSED\t")
		for _, k := range outcomeKeys(rep.Recorded, rep.Proposed) {
			fmt.Fprintf(tw, "%s\t%d\t%d\t\n", k, rep.Recorded[k], rep.Proposed[k])
		}
		tw.Flush()
		fmt.Fprintf(w, "accepted -> rejected: %d %s\n", sum(rep.Newly), bracket(rep.Newly))
		fmt.Fprintf(w, "rejected -> accepted: %d %s\n", sum(rep.Freed), bracket(rep.Freed))
		if len(rep.Shadow) > 0 {
			fmt.Fprintf(w, "would-be rejections let through by shadow mode: %d %s\n", sum(rep.Shadow), bracket(rep.Shadow))
		}
		for _, t := range []struct {
			name string
			l    []risk.Affected
		}{{"devices", rep.Devices}, {"ips", rep.IPs}, {"users", rep.Users}} {
			if len(t.l) == 0 {
				continue
			}
			parts := make([]string, len(t.l))
			for i, a := range t.l {
				parts[i] = a.Value + " (" + strconv.Itoa(a.Changed) + ")"
			}
			fmt.Fprintf(w, "most affected %s: %s\n", t.name, strings.Join(parts, ", "))
		}
		for _, n := range rep.Notes {
			fmt.Fprintln(w, "note:", n)
		}
	})
	return nil
}

// replayCampaign is what the replay needs of a campaign: the proposed rules laid over
// those in force now, the per-user limit and the stock left.
func replayCampaign(c *cmd, rdb *redis.Client, global risk.Rules, campaign string, as []risk.Assignment) (risk.ReplayCampaign, error) {
	own, err := risk.ReadRules(c.ctx, rdb, campaign)
	if err != nil {
		return risk.ReplayCampaign{}, err
	}
	proposed := risk.Merge(global, own).Apply(as)
	if err := risk.Check(proposed); err != nil {
		return risk.ReplayCampaign{}, fmt.Errorf("campaign %s: %w", campaign, err)
	}
	rc := risk.ReplayCampaign{Rules: proposed.Effective(), StockLeft: map[string]int64{}}
	limit, err := rdb.HGet(c.ctx, rkeys.Meta(campaign), "limit").Int64()
	if err != nil && err != redis.Nil {
		return rc, fmt.Errorf("campaign %s: %w", campaign, err)
	}
	rc.PerUserLimit = limit
	if err == redis.Nil {
		rc.PerUserLimit = math.MaxInt64 // the campaign is gone from Redis: its limit is unknown
	}
	skus, err := rdb.SMembers(c.ctx, rkeys.SKUs(campaign)).Result()
	if err != nil {
		return rc, fmt.Errorf("campaign %s: %w", campaign, err)
	}
	for _, s := range skus {
		n, err := rdb.HGet(c.ctx, rkeys.SKU(campaign, s), "stock").Int64()
		if err != nil && err != redis.Nil {
			return rc, fmt.Errorf("campaign %s sku %s: %w", campaign, s, err)
		}
		rc.StockLeft[s] = n
	}
	return rc, nil
}

// readRulesFile reads key=value settings; a bad one is a usage error naming the file,
// the line and the key.
func readRulesFile(path string) ([]risk.Assignment, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("--rules: %v", err)
	}
	var args []string
	var lines []int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		for _, f := range strings.Fields(line) {
			args = append(args, f)
			lines = append(lines, n)
		}
	}
	if len(args) == 0 {
		return nil, usagef("--rules %s: no key=value settings in the file", path)
	}
	for i, a := range args {
		if _, err := risk.ParseAssignments([]string{a}); err != nil {
			return nil, usagef("--rules %s:%d: %v", path, lines[i], err)
		}
		if strings.HasPrefix(a, "freeze.") {
			k, _, _ := strings.Cut(a, "=")
			return nil, usagef("--rules %s:%d: %s: replay does not simulate freezes", path, lines[i], k)
		}
	}
	as, err := risk.ParseAssignments(args)
	if err != nil {
		return nil, usagef("--rules %s: %v", path, err)
	}
	return as, nil
}

func outcomeKeys(ms ...map[string]int) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range ms {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if (out[i] == risk.ResultAccepted) != (out[j] == risk.ResultAccepted) {
			return out[i] == risk.ResultAccepted
		}
		return out[i] < out[j]
	})
	return out
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func bracket(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	return "(" + intCounts(m) + ")"
}
