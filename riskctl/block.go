package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/risk/audit"
	"github.com/flashgate/flashgate/internal/rkeys"
)

const blockHelp = `riskctl block device|ip|user VALUE [--ttl 24h] --reason TEXT
riskctl block list [device|ip|user]

Blocks a device, client IP or user: its next claim, in every campaign and on every
gateway, gets 403 blocked, until the block expires (--ttl, 1s .. 365d, default 24h) or
riskctl unblock lifts it. Blocking again replaces the reason and the expiry. Audited.

"block list" shows the blocks and the auto-freezes (set by the freeze rule) in force.`

// MaxBlockTTL bounds --ttl: a block longer than a year is a typo.
const MaxBlockTTL = 365 * 24 * time.Hour

func block(c *cmd, args []string) error {
	ttl := c.fs.Duration("ttl", 24*time.Hour, "how long the block lasts (1s .. 365d)")
	reason := c.fs.String("reason", "", "why (required; shown by block list and in the audit)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) >= 1 && pos[0] == "list" {
		return blockList(c, pos[1:])
	}
	kind, value, err := target(pos)
	if err != nil {
		return err
	}
	switch {
	case strings.TrimSpace(*reason) == "":
		return usagef("--reason: required (why is it blocked?)")
	case len(*reason) > 500:
		return usagef("--reason: longer than 500 characters")
	case *ttl < time.Second || *ttl > MaxBlockTTL:
		return usagef("--ttl %s: want 1s .. %s", *ttl, risk.FormatDuration(MaxBlockTTL))
	}
	rdb, err := c.redis()
	if err != nil {
		return err
	}
	pg, err := c.postgres()
	if err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	want := risk.Entry{Kind: kind, Value: value, Reason: strings.TrimSpace(*reason), Actor: c.actor, At: now, ExpiresAt: now.Add(*ttl)}
	res, err := audit.Apply(c.ctx, pg, rdb, audit.Change{
		Actor: c.actor, Action: audit.ActionBlock, Scope: kind.String() + ":" + value, Reason: want.Reason,
		Keys: []string{rkeys.Block(byte(kind), value)}, Keep: true,
		Read: func(ctx context.Context, rc redis.Cmdable) (audit.State, error) {
			return readState(ctx, rc, kind, value, false)
		},
		Plan: func(audit.State) (audit.State, error) {
			s := audit.State{}
			entryState(s, "block.", want)
			return s, nil
		},
		Write: func(ctx context.Context, p redis.Pipeliner, _, to audit.State) error {
			writeEntry(ctx, p, kind, value, false, "block.", to)
			return nil
		},
	})
	if err != nil {
		return err
	}
	v := changeView{Scope: kind.String() + ":" + value, Actor: c.actor, Changed: res.Changed, AuditID: res.ID, Old: res.Old, New: res.New, Diff: []string{}}
	c.out(v, func(w io.Writer) {
		fmt.Fprintf(w, "blocked %s %s until %s (reason: %s; by %s, audit #%d)\n", kind, value,
			want.ExpiresAt.Format(time.RFC3339), want.Reason, c.actor, res.ID)
		if len(res.Old) > 0 {
			fmt.Fprintf(w, "  replaces: %s\n", describe(res.Old, "block."))
		}
	})
	return nil
}

// target reads "device|ip|user VALUE".
func target(pos []string) (risk.Kind, string, error) {
	if len(pos) != 2 {
		return 0, "", usagef("want device|ip|user VALUE, got %d arguments", len(pos))
	}
	kind, ok := risk.ParseKind(pos[0])
	if !ok {
		return 0, "", usagef("%q: want device, ip or user", pos[0])
	}
	value, err := risk.NormalizeValue(kind, pos[1])
	if err != nil {
		return 0, "", usagef("%s: %v", kind, err)
	}
	return kind, value, nil
}

// entryState puts an entry into an audit state under prefix ("block." or "freeze.").
func entryState(s audit.State, prefix string, e risk.Entry) {
	s[prefix+"reason"] = e.Reason
	s[prefix+"by"] = e.Actor
	if !e.At.IsZero() {
		s[prefix+"at"] = e.At.Format(time.RFC3339Nano)
	}
	if !e.ExpiresAt.IsZero() {
		s[prefix+"expires_at"] = e.ExpiresAt.Format(time.RFC3339Nano)
	}
}

// readState reads the block (and, for unblock, the freeze) of a value as audit state.
func readState(ctx context.Context, rc redis.Cmdable, kind risk.Kind, value string, withFreeze bool) (audit.State, error) {
	s := audit.State{}
	e, ok, err := risk.ReadEntry(ctx, rc, kind, value, false)
	if err != nil {
		return nil, err
	}
	if ok {
		entryState(s, "block.", e)
	}
	if withFreeze && kind != risk.IP {
		e, ok, err := risk.ReadEntry(ctx, rc, kind, value, true)
		if err != nil {
			return nil, err
		}
		if ok {
			entryState(s, "freeze.", e)
		}
	}
	return s, nil
}

// writeEntry queues writing the block (or freeze) under prefix in s, or deleting it
// when s has none (or it has already expired), and keeps the index in step.
func writeEntry(ctx context.Context, p redis.Pipeliner, kind risk.Kind, value string, frozen bool, prefix string, s audit.State) {
	key := rkeys.Block(byte(kind), value)
	if frozen {
		key = rkeys.Freeze(byte(kind), value)
	}
	reason, ok := s[prefix+"reason"]
	exp, err := time.Parse(time.RFC3339Nano, s[prefix+"expires_at"])
	if !ok || err != nil || time.Until(exp) < time.Millisecond {
		// Every block has an expiry; one without is not riskctl's and is removed too.
		p.Del(ctx, key)
		risk.IndexEntry(ctx, p, kind, value, frozen, time.Time{})
		return
	}
	at, _ := time.Parse(time.RFC3339Nano, s[prefix+"at"])
	p.Set(ctx, key, risk.EncodeEntry(reason, s[prefix+"by"], at), time.Until(exp))
	risk.IndexEntry(ctx, p, kind, value, frozen, exp)
}

func describe(s audit.State, prefix string) string {
	r, ok := s[prefix+"reason"]
	if !ok {
		return "-"
	}
	out := fmt.Sprintf("%q by %s", r, s[prefix+"by"])
	if e := s[prefix+"expires_at"]; e != "" {
		out += " until " + e
	}
	return out
}

type entryView struct {
	Kind      string     `json:"kind"`
	Value     string     `json:"value"`
	What      string     `json:"what"` // block or freeze
	Reason    string     `json:"reason"`
	By        string     `json:"by"`
	At        *time.Time `json:"at,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

func blockList(c *cmd, pos []string) error {
	var kind risk.Kind
	switch len(pos) {
	case 0:
	case 1:
		k, ok := risk.ParseKind(pos[0])
		if !ok {
			return usagef("block list %q: want device, ip or user", pos[0])
		}
		kind = k
	default:
		return usagef("block list: unexpected argument %q", pos[1])
	}
	rdb, err := c.redis()
	if err != nil {
		return err
	}
	es, err := risk.ListEntries(c.ctx, rdb, kind)
	if err != nil {
		return err
	}
	views := make([]entryView, 0, len(es))
	for _, e := range es {
		v := entryView{Kind: e.Kind.String(), Value: e.Value, What: "block", Reason: e.Reason, By: e.Actor}
		if e.Frozen {
			v.What = "freeze"
		}
		if !e.At.IsZero() {
			at := e.At
			v.At = &at
		}
		if !e.ExpiresAt.IsZero() {
			exp := e.ExpiresAt
			v.ExpiresAt = &exp
		}
		views = append(views, v)
	}
	c.out(map[string]any{"entries": views}, func(w io.Writer) {
		if len(views) == 0 {
			fmt.Fprintln(w, "nothing is blocked or frozen")
			return
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tVALUE\tWHAT\tUNTIL\tBY\tREASON\t")
		for _, v := range views {
			until := "-"
			if v.ExpiresAt != nil {
				until = v.ExpiresAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", v.Kind, v.Value, v.What, until, v.By, v.Reason)
		}
		tw.Flush()
	})
	return nil
}
