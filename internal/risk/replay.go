package risk

import (
	"sort"

	"github.com/flashgate/flashgate/internal/claim"
)

// ReplayCampaign is what the replay needs to know about a campaign besides its
// decisions, read from Redis when the replay runs.
type ReplayCampaign struct {
	// Rules are the proposed rules in force for the campaign.
	Rules Effective
	// PerUserLimit is the campaign's per-user limit.
	PerUserLimit int64
	// StockLeft is each SKU's stock left now; with the accepted claims replayed it
	// gives the stock at the start of the replayed period.
	StockLeft map[string]int64
}

// ReplayReport is what proposed rules would have changed.
type ReplayReport struct {
	Decisions int               `json:"decisions"` // decisions replayed (replays of a request and refusals excluded)
	Recorded  map[string]int    `json:"recorded"`  // outcome → count, as decided
	Proposed  map[string]int    `json:"proposed"`  // outcome → count, under the proposed rules
	Newly     map[string]int    `json:"accepted_to_rejected"`
	Freed     map[string]int    `json:"rejected_to_accepted"` // by the recorded reason
	Shadow    map[string]int    `json:"shadow_would_reject"`  // would-be rejections under proposed shadow mode
	Devices   []Affected        `json:"top_devices"`
	IPs       []Affected        `json:"top_ips"`
	Users     []Affected        `json:"top_users"`
	Notes     []string          `json:"notes"`
	ByCamp    map[string][2]int `json:"accepted_by_campaign"` // campaign → [recorded, proposed] accepted
}

// Affected is a device, IP or user whose outcomes would change, and how many.
type Affected struct {
	Value   string `json:"value"`
	Changed int    `json:"changed"`
}

// Replay re-decides recorded decisions under proposed rules, in order. Decisions before
// fromMs only warm the sliding windows (they are not reported); only is a campaign to
// report on ("" for all).
//
// What it simulates exactly: the velocity rules (sliding windows over the claims it
// accepts, rejected attempts not counted - as claim.lua), shadow mode, and the two
// business answers that depend on what earlier claims took: user_limit (the campaign's
// per-user limit) and sold_out (each SKU's stock at the start of the period: stock left
// now plus what was accepted in it). What it takes as recorded: blocks and freezes (a
// blocked claim stays blocked unless the proposed rules are in shadow mode), and the
// other business answers (paused, not_started, ended, not_eligible, budget_exhausted,
// partner_quota).
func Replay(ds []Decision, fromMs int64, only string, camps map[string]ReplayCampaign) ReplayReport {
	rep := ReplayReport{
		Recorded: map[string]int{}, Proposed: map[string]int{}, Newly: map[string]int{},
		Freed: map[string]int{}, Shadow: map[string]int{}, ByCamp: map[string][2]int{},
	}
	type wkey struct {
		camp string
		kind byte
		v    string
	}
	windows := map[wkey][]int64{} // accepted times, ascending
	count := func(k wkey, now int64, win int64) int64 {
		w := windows[k]
		i := sort.Search(len(w), func(i int) bool { return w[i] > now-win })
		windows[k] = w[i:]
		return int64(len(w) - i)
	}
	type ukey struct{ camp, user string }
	userAccepted := map[ukey]int64{}
	userRecorded := map[ukey]int64{}
	userPrior := map[ukey]int64{}
	type skey struct{ camp, sku string }
	stock := map[skey]int64{}
	for _, d := range ds {
		if d.TimeMs >= fromMs && d.Accepted() && !d.Replayed {
			stock[skey{d.CampaignID, d.SKU}]++
		}
	}
	for k := range stock {
		stock[k] += camps[k.camp].StockLeft[k.sku]
	}
	for k, c := range camps {
		for sku, left := range c.StockLeft {
			if _, ok := stock[skey{k, sku}]; !ok {
				stock[skey{k, sku}] = left
			}
		}
	}
	devices, ips, users := map[string]int{}, map[string]int{}, map[string]int{}
	accept := func(c ReplayCampaign, d *Decision) {
		userAccepted[ukey{d.CampaignID, d.UserID}]++
		for _, v := range [...]struct {
			kind byte
			val  string
			rule Velocity
		}{{'d', d.DeviceID, c.Rules.Device}, {'i', d.IP, c.Rules.IP}, {'u', d.UserID, c.Rules.User}} {
			if v.rule.On() {
				k := wkey{d.CampaignID, v.kind, v.val}
				windows[k] = append(windows[k], d.TimeMs)
			}
		}
	}

	for i := range ds {
		d := &ds[i]
		if d.Replayed || d.Result() == ResultRefused {
			continue
		}
		c, ok := camps[d.CampaignID]
		if !ok {
			continue
		}
		report := only == "" || d.CampaignID == only
		uk := ukey{d.CampaignID, d.UserID}
		sk := skey{d.CampaignID, d.SKU}
		recorded := ReasonOf(d.Code)
		if d.Accepted() {
			userRecorded[uk]++
		}
		if d.TimeMs < fromMs {
			// Warm-up: what was accepted fills the windows and the user's count as is.
			if d.Accepted() {
				accept(c, d)
			}
			continue
		}
		proposed := recorded
		switch d.Code {
		case claim.CodePaused, claim.CodeNotStarted, claim.CodeEnded:
			// Decided before the risk checks; unchanged.
		default:
			e := c.Rules
			risky := ""
			if d.Seen.Flags&Blocked != 0 {
				risky = claim.ReasonOf(claim.CodeBlocked)
			}
			for _, v := range [...]struct {
				kind   byte
				val    string
				rule   Velocity
				reason string
			}{{'d', d.DeviceID, e.Device, "device_velocity"}, {'i', d.IP, e.IP, "ip_velocity"}, {'u', d.UserID, e.User, "user_velocity"}} {
				if !v.rule.On() {
					continue
				}
				if count(wkey{d.CampaignID, v.kind, v.val}, d.TimeMs, v.rule.Window.Milliseconds()) >= v.rule.Max && risky == "" {
					risky = v.reason
				}
			}
			if risky != "" && e.Shadow {
				if report {
					rep.Shadow[risky]++
				}
				risky = ""
			}
			switch {
			case risky != "":
				proposed = risky
			case d.Code == claim.CodeNotEligible || d.Code == claim.CodeBudgetExhausted || d.Code == claim.CodePartnerQuota:
				// Taken as recorded (a partner's quota is not replayed).
			default:
				// Passed the risk checks: the business answers that depend on what
				// earlier claims took are decided again.
				if d.Code == claim.CodeUserLimit && userRecorded[uk] < c.PerUserLimit {
					// The user had claims before the period; the recorded answer tells how many.
					userPrior[uk] = max(userPrior[uk], c.PerUserLimit-userRecorded[uk])
				}
				switch {
				case userAccepted[uk]+userPrior[uk] >= c.PerUserLimit:
					proposed = claim.ReasonOf(claim.CodeUserLimit)
				case stock[sk] <= 0:
					proposed = claim.ReasonOf(claim.CodeSoldOut)
				case d.Code == claim.CodeSoldOut || d.Code == claim.CodeUserLimit || d.Code == claim.CodeAccepted || d.Seen.Flags&Hits != 0:
					proposed = ResultAccepted
				}
			}
		}
		if proposed == ResultAccepted {
			stock[sk]--
			accept(c, d)
		}
		if !report {
			continue
		}
		rep.Decisions++
		rep.Recorded[recorded]++
		rep.Proposed[proposed]++
		bc := rep.ByCamp[d.CampaignID]
		if recorded == ResultAccepted {
			bc[0]++
		}
		if proposed == ResultAccepted {
			bc[1]++
		}
		rep.ByCamp[d.CampaignID] = bc
		if recorded == proposed {
			continue
		}
		switch {
		case recorded == ResultAccepted:
			rep.Newly[proposed]++
		case proposed == ResultAccepted:
			rep.Freed[recorded]++
		}
		devices[d.DeviceID]++
		ips[d.IP]++
		users[d.UserID]++
	}
	rep.Devices, rep.IPs, rep.Users = top(devices, 10), top(ips, 10), top(users, 10)
	rep.Notes = []string{
		"velocity rules, shadow mode, user_limit and sold_out are re-decided in order; blocks, freezes and the other business answers are taken as recorded",
	}
	return rep
}

func top(m map[string]int, n int) []Affected {
	out := make([]Affected, 0, len(m))
	for v, c := range m {
		out = append(out, Affected{v, c})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Changed != out[j].Changed {
			return out[i].Changed > out[j].Changed
		}
		return out[i].Value < out[j].Value
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}
