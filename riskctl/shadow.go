package main

import (
	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/risk/audit"
)

const shadowHelp = `riskctl shadow on|off [--campaign C]

Shadow mode evaluates every risk check (blocks, freezes, velocity) and records the
would-be rejections - on flash.decisions and in the campaign's shadow counts (rules
show) - but lets the claim proceed. Set per campaign (overriding the global setting,
including "off" under a global "on") or globally without --campaign. The next claim on
every gateway follows it. Audited. To make a campaign follow the global setting again:
riskctl rules set --campaign C shadow=default.`

func shadow(c *cmd, args []string) error {
	campaign := campaignFlag(c)
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || (pos[0] != "on" && pos[0] != "off") {
		return usagef("want on or off")
	}
	if err := checkCampaign(*campaign); err != nil {
		return err
	}
	a, err := risk.ParseValue(risk.Shadow, pos[0])
	if err != nil {
		return err
	}
	return changeRules(c, *campaign, []risk.Assignment{a}, audit.ActionShadow)
}
