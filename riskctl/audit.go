package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/risk/audit"
)

const auditHelp = `riskctl audit [--since 24h] [--scope S] [--actor NAME] [--limit 200]

Lists the audited changes - riskctl's (rules, shadow mode, blocks, unblocks, revokes)
and the admin API's (admin.*, under the admin token's name) - oldest first: when, who,
what, and the values before and after. --scope is "global", "campaign:C", "device:D",
"ip:A", "user:U", "business_line:B" or "segment:S".`

func auditCmd(c *cmd, args []string) error {
	since := c.fs.String("since", "24h", "how far back (a duration like 30m, 24h, 7d)")
	scope := c.fs.String("scope", "", "only this scope")
	actor := c.fs.String("actor", "", "only changes made by this actor")
	limit := c.fs.Int("limit", 200, "at most this many rows (the newest)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	d, err := sinceFlag(*since)
	if err != nil {
		return err
	}
	if *limit < 1 || *limit > 100_000 {
		return usagef("--limit %d: want 1 .. 100000", *limit)
	}
	pg, err := c.postgres()
	if err != nil {
		return err
	}
	rows, err := audit.ListBy(c.ctx, pg, audit.Filter{Since: time.Now().Add(-d), Scope: *scope, Actor: *actor, Limit: *limit})
	if err != nil {
		return err
	}
	if rows == nil {
		rows = []audit.Row{}
	}
	c.out(map[string]any{"rows": rows}, func(w io.Writer) {
		if len(rows) == 0 {
			fmt.Fprintf(w, "no changes in the last %s\n", *since)
			return
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "#\tAT\tACTOR\tACTION\tSCOPE\tCHANGE\t")
		for _, r := range rows {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t\n", r.ID, r.At.Format(time.RFC3339), r.Actor, r.Action, r.Scope, stateDiff(r.Old, r.New))
		}
		tw.Flush()
	})
	return nil
}

// sinceFlag parses a --since duration: positive, at most 90 days.
func sinceFlag(s string) (time.Duration, error) {
	d, err := risk.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, usagef("--since %q: want a positive duration like 10m, 24h, 7d", s)
	}
	if d > 90*24*time.Hour {
		return 0, usagef("--since %q: at most 90d", s)
	}
	return d, nil
}

// stateDiff prints "key: old → new" for the keys that differ.
func stateDiff(old, nw audit.State) string {
	keys := map[string]bool{}
	for k := range old {
		keys[k] = true
	}
	for k := range nw {
		keys[k] = true
	}
	ks := make([]string, 0, len(keys))
	for k := range keys {
		if old[k] != nw[k] {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	parts := make([]string, 0, len(ks))
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s: %s → %s", k, dash(old[k]), dash(nw[k])))
	}
	return strings.Join(parts, "; ")
}
