package main

import (
	"context"
	"fmt"
	"io"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/risk/audit"
	"github.com/flashgate/flashgate/internal/rkeys"
)

const unblockHelp = `riskctl unblock device|ip|user VALUE

Lifts the block of a device, client IP or user, and the auto-freeze of a device or user
(clearing its freeze window, so its next claim does not freeze it again at once). The
next claim, on every gateway, is decided normally. Audited; "nothing to lift" exits 0
without an audit row.`

func unblock(c *cmd, args []string) error {
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	kind, value, err := target(pos)
	if err != nil {
		return err
	}
	rdb, err := c.redis()
	if err != nil {
		return err
	}
	pg, err := c.postgres()
	if err != nil {
		return err
	}
	keys := []string{rkeys.Block(byte(kind), value)}
	if kind != risk.IP {
		keys = append(keys, rkeys.Freeze(byte(kind), value), rkeys.FreezeWindow(byte(kind), value))
	}
	res, err := audit.Apply(c.ctx, pg, rdb, audit.Change{
		Actor: c.actor, Action: audit.ActionUnblock, Scope: kind.String() + ":" + value,
		Keys: keys, Keep: true,
		Read: func(ctx context.Context, rc redis.Cmdable) (audit.State, error) {
			return readState(ctx, rc, kind, value, true)
		},
		Plan: func(audit.State) (audit.State, error) { return audit.State{}, nil },
		Write: func(ctx context.Context, p redis.Pipeliner, _, to audit.State) error {
			writeEntry(ctx, p, kind, value, false, "block.", to)
			if kind != risk.IP {
				writeEntry(ctx, p, kind, value, true, "freeze.", to)
				if len(to) == 0 {
					p.Del(ctx, keys[2])
				}
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	v := changeView{Scope: kind.String() + ":" + value, Actor: c.actor, Changed: res.Changed, AuditID: res.ID, Old: res.Old, New: res.New, Diff: []string{}}
	c.out(v, func(w io.Writer) {
		if !res.Changed {
			fmt.Fprintf(w, "%s %s is neither blocked nor frozen: nothing to lift\n", kind, value)
			return
		}
		if _, ok := res.Old["block.reason"]; ok {
			fmt.Fprintf(w, "lifted the block of %s %s (%s)\n", kind, value, describe(res.Old, "block."))
		}
		if _, ok := res.Old["freeze.reason"]; ok {
			fmt.Fprintf(w, "lifted the freeze of %s %s (%s)\n", kind, value, describe(res.Old, "freeze."))
		}
		fmt.Fprintf(w, "by %s, audit #%d\n", c.actor, res.ID)
	})
	return nil
}
