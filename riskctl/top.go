package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flashgate/flashgate/internal/flagenv"
	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/risk/decisionlog"
)

const topHelp = `riskctl top devices|ips|users [--campaign C] [--since 10m] [--limit 10]
riskctl top points [--since 10m] [--limit 10]

Shows, per campaign, the devices, client IPs or users with the most claim attempts in
the recent window, read from the decision log (flash.decisions): attempts, accepted,
rejected by reason, and would-be rejections in shadow mode. Retries of an answered
request are not counted as attempts.

"points" shows the points accounts that gained the most points in the window (from
Postgres): points gained, grants, the auto-freeze rule's hits (points.max in
points.window: enforced = frozen, shadow = only counted) and whether the account is
frozen now.`

type topRow struct {
	Value    string         `json:"value"`
	Attempts int            `json:"attempts"`
	Accepted int            `json:"accepted"`
	Rejected int            `json:"rejected"`
	Reasons  map[string]int `json:"rejected_by_reason"`
	Shadow   int            `json:"shadow_would_reject"`
}

type topView struct {
	Of        string              `json:"of"`
	Since     time.Time           `json:"since"`
	Decisions int                 `json:"decisions"`
	Bad       int                 `json:"undecodable_records"`
	Campaigns map[string][]topRow `json:"campaigns"`
}

func top(c *cmd, args []string) error {
	campaign := campaignFlag(c)
	since := c.fs.String("since", "10m", "how far back (a duration like 10m, 1h)")
	limit := c.fs.Int("limit", 10, "rows per campaign")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want devices, ips, users or points")
	}
	of := pos[0]
	if of == "points" {
		return topPoints(c, *campaign, *since, *limit)
	}
	if of != "devices" && of != "ips" && of != "users" {
		return usagef("%q: want devices, ips, users or points", of)
	}
	if err := checkCampaign(*campaign); err != nil {
		return err
	}
	d, err := sinceFlag(*since)
	if err != nil {
		return err
	}
	if *limit < 1 || *limit > 10_000 {
		return usagef("--limit %d: want 1 .. 10000", *limit)
	}
	from := time.Now().Add(-d)
	entries, st, err := decisionlog.Read(c.ctx, flagenv.Brokers(c.brokers), "", from.UnixMilli(), *campaign)
	if err != nil {
		return err
	}
	rows := map[string]map[string]*topRow{}
	v := topView{Of: of, Since: from.UTC().Truncate(time.Second), Bad: st.Bad, Campaigns: map[string][]topRow{}}
	for _, e := range entries {
		if e.Replayed || (*campaign != "" && e.CampaignID != *campaign) {
			continue
		}
		v.Decisions++
		key := e.DeviceID
		switch of {
		case "ips":
			key = e.IP
		case "users":
			key = e.UserID
		}
		m := rows[e.CampaignID]
		if m == nil {
			m = map[string]*topRow{}
			rows[e.CampaignID] = m
		}
		r := m[key]
		if r == nil {
			r = &topRow{Value: key, Reasons: map[string]int{}}
			m[key] = r
		}
		r.Attempts++
		if e.Accepted() {
			r.Accepted++
		} else {
			r.Rejected++
			r.Reasons[risk.ReasonOf(e.Code)]++
		}
		if e.Seen.Flags&risk.ShadowMode != 0 && e.Seen.Flags&risk.Hits != 0 {
			r.Shadow++
		}
	}
	for camp, m := range rows {
		list := make([]topRow, 0, len(m))
		for _, r := range m {
			list = append(list, *r)
		}
		sort.Slice(list, func(i, j int) bool {
			a, b := list[i], list[j]
			if a.Attempts != b.Attempts {
				return a.Attempts > b.Attempts
			}
			if a.Rejected != b.Rejected {
				return a.Rejected > b.Rejected
			}
			return a.Value < b.Value
		})
		if len(list) > *limit {
			list = list[:*limit]
		}
		v.Campaigns[camp] = list
	}
	c.out(v, func(w io.Writer) {
		if st.Bad > 0 {
			fmt.Fprintf(w, "warning: %d records on the decision log did not decode (first: %v)\n", st.Bad, st.FirstErr)
		}
		if len(v.Campaigns) == 0 {
			fmt.Fprintf(w, "no decisions since %s\n", v.Since.Format(time.RFC3339))
			return
		}
		camps := make([]string, 0, len(v.Campaigns))
		for k := range v.Campaigns {
			camps = append(camps, k)
		}
		sort.Strings(camps)
		for _, camp := range camps {
			fmt.Fprintf(w, "campaign %s: top %s since %s\n", camp, of, v.Since.Format(time.RFC3339))
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, strings.ToUpper(strings.TrimSuffix(of, "s"))+"\tATTEMPTS\tACCEPTED\tREJECTED\tREASONS\tSHADOW\t")
			for _, r := range v.Campaigns[camp] {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%d\t\n", r.Value, r.Attempts, r.Accepted, r.Rejected, intCounts(r.Reasons), r.Shadow)
			}
			tw.Flush()
		}
	})
	return nil
}

func intCounts(m map[string]int) string {
	c := make(map[string]int64, len(m))
	for k, v := range m {
		c[k] = int64(v)
	}
	if len(c) == 0 {
		return "-"
	}
	return counts(c)
}

type topPointsRow struct {
	UserID   string `json:"user_id"`
	Gained   int64  `json:"gained"`
	Grants   int64  `json:"grants"`
	Enforced int64  `json:"autofreeze_enforced"`
	Shadow   int64  `json:"autofreeze_shadow"`
	Frozen   bool   `json:"frozen"`
}

type topPointsView struct {
	Of       string         `json:"of"`
	Since    time.Time      `json:"since"`
	Accounts []topPointsRow `json:"accounts"`
}

// topPoints is riskctl top points: the accounts that gained the most in the window,
// with the auto-freeze rule's hits (points_autofreeze) and their freeze.
func topPoints(c *cmd, campaign, since string, limit int) error {
	if campaign != "" {
		return usagef("--campaign: points accounts are not per campaign")
	}
	d, err := sinceFlag(since)
	if err != nil {
		return err
	}
	if limit < 1 || limit > 10_000 {
		return usagef("--limit %d: want 1 .. 10000", limit)
	}
	pg, err := c.postgres()
	if err != nil {
		return err
	}
	from := time.Now().Add(-d)
	rows, err := pg.Query(c.ctx, `WITH g AS (
			SELECT user_id, sum(amount) AS gained, count(*) AS grants FROM points_lots WHERE granted_at >= $1 GROUP BY user_id),
		h AS (
			SELECT user_id, count(*) FILTER (WHERE mode = 'enforced') AS enforced, count(*) FILTER (WHERE mode = 'shadow') AS shadow
			FROM points_autofreeze WHERE at >= $1 GROUP BY user_id)
		SELECT coalesce(g.user_id, h.user_id), coalesce(g.gained, 0), coalesce(g.grants, 0), coalesce(h.enforced, 0), coalesce(h.shadow, 0),
			coalesce((SELECT frozen FROM points_accounts a WHERE a.user_id = coalesce(g.user_id, h.user_id)), false)
		FROM g FULL JOIN h ON h.user_id = g.user_id
		ORDER BY coalesce(h.enforced, 0) + coalesce(h.shadow, 0) DESC, coalesce(g.gained, 0) DESC, 1 LIMIT $2`, from, limit)
	if err != nil {
		return fmt.Errorf("top points: %w", err)
	}
	v := topPointsView{Of: "points", Since: from.UTC().Truncate(time.Second), Accounts: []topPointsRow{}}
	for rows.Next() {
		var r topPointsRow
		if err := rows.Scan(&r.UserID, &r.Gained, &r.Grants, &r.Enforced, &r.Shadow, &r.Frozen); err != nil {
			rows.Close()
			return fmt.Errorf("top points: %w", err)
		}
		v.Accounts = append(v.Accounts, r)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("top points: %w", err)
	}
	c.out(v, func(w io.Writer) {
		if len(v.Accounts) == 0 {
			fmt.Fprintf(w, "no points gained since %s\n", v.Since.Format(time.RFC3339))
			return
		}
		fmt.Fprintf(w, "top points accounts since %s (auto-freeze hits: enforced / shadow)\n", v.Since.Format(time.RFC3339))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "USER\tGAINED\tGRANTS\tENFORCED\tSHADOW\tFROZEN\t")
		for _, r := range v.Accounts {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%v\t\n", r.UserID, r.Gained, r.Grants, r.Enforced, r.Shadow, r.Frozen)
		}
		tw.Flush()
	})
	return nil
}
