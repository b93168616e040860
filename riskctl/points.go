package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/flashgate/flashgate/internal/points"
)

const pointsFreezeHelp = `riskctl points freeze|unfreeze USER --reason TEXT

Freezes (or unfreezes) a user's points account: a frozen account's points_item claims
answer 403 blocked; it still earns. The record is Postgres (points_accounts), with an
audit row (points.freeze / points.unfreeze) and a points_frozen / points_unfrozen event
in the same transaction; then the user's hot balance in Redis is told. Audited.`

func pointsFreeze(frozen bool) func(c *cmd, args []string) error {
	return func(c *cmd, args []string) error {
		reason := c.fs.String("reason", "", "why (required; in the audit and the account)")
		pos, err := c.parse(args)
		if err != nil {
			return err
		}
		if len(pos) != 1 || !points.ValidID(pos[0]) {
			return usagef("want one USER (1-64 characters of [A-Za-z0-9._:-]), got %q", strings.Join(pos, " "))
		}
		if strings.TrimSpace(*reason) == "" || len(*reason) > 500 {
			return usagef("--reason: required, at most 500 characters")
		}
		pg, err := c.postgres()
		if err != nil {
			return err
		}
		rdb, err := c.redis()
		if err != nil {
			return err
		}
		svc, err := points.New(pg, rdb, points.Config{})
		if err != nil {
			return err
		}
		id, err := svc.SetFrozen(c.ctx, pos[0], frozen, *reason, c.actor)
		if err != nil {
			return err
		}
		verb := "frozen"
		if !frozen {
			verb = "unfrozen"
		}
		c.out(map[string]any{"user_id": pos[0], "frozen": frozen, "reason": *reason, "audit_id": id}, func(w io.Writer) {
			fmt.Fprintf(w, "points account %s %s (audit #%d)\n", pos[0], verb, id)
		})
		return nil
	}
}
