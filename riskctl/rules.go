package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/risk/audit"
)

const rulesShowHelp = `riskctl rules show [--campaign C]

Shows the rules in force: the global defaults, or for a campaign its overrides, the
global value and what is in force (the campaign's value if set, else the global one),
plus the would-be rejections shadow mode has let through in the campaign.`

const rulesSetHelp = `riskctl rules set [--campaign C] key=value ...

Changes rules at one level (the campaign's with --campaign, else the global defaults).
The change applies to the very next claim on every gateway. Every value is checked
before anything is changed; a bad one exits 2 naming the key. Prints old -> new and
writes an audit row (actor, time, old, new) in the same step as the change.

Keys: device.max, ip.max, user.max, freeze.max  (a count; 0 turns the rule off)
      device.window, ip.window, user.window       (1s .. 24h, e.g. 60s, 10m)
      freeze.window (1s .. 7d), freeze.for (1s .. 30d)
      shadow (on|off)
      points.max (points, 0 turns it off), points.window (1s .. 7d), points.shadow
      (on|off): global only - a points account gaining more than points.max points
      in points.window is frozen (in points shadow mode: only counted and logged)
A value of "default" removes the key from this level (a campaign then inherits the
global value).`

type rulesView struct {
	Campaign         string            `json:"campaign,omitempty"`
	Level            map[string]string `json:"rules"`
	Global           map[string]string `json:"global,omitempty"`
	InForce          map[string]string `json:"in_force"`
	Shadow           bool              `json:"shadow"`
	ShadowRejections map[string]int64  `json:"shadow_rejections,omitempty"`
	Warnings         []string          `json:"warnings,omitempty"`
}

func rulesShow(c *cmd, args []string) error {
	campaign := campaignFlag(c)
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if err := checkCampaign(*campaign); err != nil {
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
	v := rulesView{Campaign: *campaign, Level: global.Strings()}
	inForce := global
	if *campaign != "" {
		camp, err := risk.ReadRules(c.ctx, rdb, *campaign)
		if err != nil {
			return err
		}
		inForce = risk.Merge(global, camp)
		v.Level, v.Global = camp.Strings(), global.Strings()
		if v.ShadowRejections, err = risk.ShadowCounts(c.ctx, rdb, *campaign); err != nil {
			return err
		}
	}
	v.InForce = inForce.Strings()
	v.Shadow = inForce[risk.Shadow] == 1
	if err := risk.Check(inForce); err != nil {
		v.Warnings = append(v.Warnings, "rule off, incomplete: "+err.Error())
	}
	c.out(v, func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		if *campaign == "" {
			fmt.Fprintln(tw, "global rules (defaults for every campaign)")
			fmt.Fprintln(tw, "KEY\tVALUE\t")
			for _, s := range risk.Specs {
				fmt.Fprintf(tw, "%s\t%s\t\n", s.Key, dash(v.Level[s.Key]))
			}
		} else {
			fmt.Fprintf(tw, "rules of campaign %s\n", *campaign)
			fmt.Fprintln(tw, "KEY\tCAMPAIGN\tGLOBAL\tIN FORCE\t")
			for _, s := range risk.Specs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", s.Key, dash(v.Level[s.Key]), dash(v.Global[s.Key]), dash(v.InForce[s.Key]))
			}
		}
		tw.Flush()
		mode := "off (rules are enforced)"
		if v.Shadow {
			mode = "ON (rules are evaluated and logged, not enforced)"
		}
		fmt.Fprintln(w, "shadow mode:", mode)
		if len(v.ShadowRejections) > 0 {
			fmt.Fprintln(w, "would-be rejections let through by shadow mode:", counts(v.ShadowRejections))
		}
		for _, warn := range v.Warnings {
			fmt.Fprintln(w, "warning:", warn)
		}
	})
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func counts(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

type changeView struct {
	Scope   string            `json:"scope"`
	Actor   string            `json:"actor"`
	Changed bool              `json:"changed"`
	AuditID int64             `json:"audit_id,omitempty"`
	Old     map[string]string `json:"old"`
	New     map[string]string `json:"new"`
	Diff    []string          `json:"diff"`
}

func rulesSet(c *cmd, args []string) error {
	campaign := campaignFlag(c)
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if err := checkCampaign(*campaign); err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("no settings given: want key=value ... (keys: %s)", strings.Join(risk.Keys(), ", "))
	}
	as, err := risk.ParseAssignments(pos)
	if err != nil {
		return err
	}
	for _, a := range as {
		if sp, _ := risk.Lookup(a.Key); *campaign != "" && sp.GlobalOnly {
			return &risk.FieldError{Key: a.Key, Msg: "a global rule (points accounts are not per campaign): set it without --campaign"}
		}
	}
	return changeRules(c, *campaign, as, audit.ActionRules)
}

// changeRules applies rule assignments at a level, validated against what they would
// be in force with, audited in the same step.
func changeRules(c *cmd, campaign string, as []risk.Assignment, action string) error {
	rdb, err := c.redis()
	if err != nil {
		return err
	}
	pg, err := c.postgres()
	if err != nil {
		return err
	}
	key := risk.RulesKey(campaign)
	var oldRules, newRules risk.Rules
	res, err := audit.Apply(c.ctx, pg, rdb, audit.Change{
		Actor: c.actor, Action: action, Scope: scopeOf(campaign),
		Keys: []string{key}, Keep: true,
		Read: func(ctx context.Context, rc redis.Cmdable) (audit.State, error) {
			r, err := risk.ReadRules(ctx, rc, campaign)
			oldRules = r
			return r.Strings(), err
		},
		Plan: func(audit.State) (audit.State, error) {
			newRules = oldRules.Apply(as)
			inForce := newRules
			if campaign != "" {
				global, err := risk.ReadRules(c.ctx, rdb, "")
				if err != nil {
					return nil, err
				}
				inForce = risk.Merge(global, newRules)
			}
			if err := risk.Check(inForce); err != nil {
				return nil, err
			}
			return newRules.Strings(), nil
		},
		Write: func(ctx context.Context, p redis.Pipeliner, from, to audit.State) error {
			f, err := stateRules(from)
			if err != nil {
				return err
			}
			t, err := stateRules(to)
			if err != nil {
				return err
			}
			risk.WriteRules(ctx, p, campaign, f, t)
			return nil
		},
	})
	if err != nil {
		return err
	}
	v := changeView{Scope: scopeOf(campaign), Actor: c.actor, Changed: res.Changed, AuditID: res.ID,
		Old: res.Old, New: res.New, Diff: risk.Diff(oldRules, newRules)}
	if v.Diff == nil {
		v.Diff = []string{}
	}
	c.out(v, func(w io.Writer) {
		if !res.Changed {
			fmt.Fprintf(w, "no change: %s rules already are as given\n", v.Scope)
			return
		}
		fmt.Fprintf(w, "%s rules changed by %s (audit #%d):\n", v.Scope, c.actor, res.ID)
		for _, d := range v.Diff {
			fmt.Fprintln(w, "  "+d)
		}
	})
	return nil
}

// stateRules reads rules back from their audited form (values as the team writes them).
func stateRules(s audit.State) (risk.Rules, error) {
	r := make(risk.Rules, len(s))
	for k, v := range s {
		a, err := risk.ParseValue(k, v)
		if err != nil {
			return nil, err
		}
		r[k] = a.Value
	}
	return r, nil
}
