// Package life plays a voucher's life after the sale against a running gateway (the
// demo's "every way a voucher moves" step, issue 18): it opens a small campaign whose
// voucher needs a minimum spend, excludes a category and may be handed on once, has a
// few users claim it, and once their vouchers are rows it redeems them against orders
// (below the minimum, an excluded category, a retried order, a refund and a second
// order), transfers the rest to friends who redeem them, pushes a voucher to every user
// of two tiers (a few of tier A use theirs), and reads the review back.
// Every answer is checked against what CONTRACT.md promises; the first one that
// differs ends the run with an error naming the step.
package life

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Config is what Run needs: the gateway's public and admin URLs, the admin token and the
// end-user token secret (FLASH_USER_TOKEN_SECRET; "" when the gateway takes the user
// from the body), the campaign and business line to create, and how many holders.
type Config struct {
	Target, Admin          string
	AdminToken             string
	UserSecret             string
	Campaign, BusinessLine string
	Holders                int // even, 4..1000
	Settle                 time.Duration
	Client                 *http.Client
	Log                    io.Writer
}

// MinSpend, Value and Excluded are the demo voucher's rules; TierUsers users of each of
// two tiers get a TierValue voucher by a push, and TierUsed of tier A's use theirs.
const (
	Value     = 50
	MinSpend  = 200
	Excluded  = "newbie"
	TierUsers = 200
	TierValue = 10
	TierUsed  = 5
)

// Summary is what happened.
type Summary struct {
	Claimed, Redeemed, Transferred, RolledBack int
	Pushed                                     int64          // vouchers the push to two tiers issued
	Refused                                    map[string]int // reason -> answers as promised
	Review                                     []ReviewRow
}

// ReviewRow is one row of GET /admin/v1/campaigns/{id}/report?table=review.
type ReviewRow struct {
	Tier          string  `json:"tier"`
	Channel       string  `json:"channel"`
	Issued        int64   `json:"issued"`
	Used          int64   `json:"used"`
	UsageRate     float64 `json:"usage_rate"`
	UsersRecalled int64   `json:"users_recalled"`
	AmountRedeem  int64   `json:"amount_redeemed"`
	AvgOrder      float64 `json:"average_order_amount"`
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	for name, v := range map[string]string{"target": c.Target, "admin": c.Admin} {
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%s %q: want a base URL like http://127.0.0.1:8080", name, v)
		}
	}
	switch {
	case c.Campaign == "" || len(c.Campaign) > 40:
		return fmt.Errorf("campaign %q: want 1-40 characters", c.Campaign)
	case c.BusinessLine == "":
		return errors.New("business-line: required")
	case c.Holders < 4 || c.Holders > 1000 || c.Holders%2 != 0:
		return fmt.Errorf("holders %d: want an even number 4..1000", c.Holders)
	}
	return nil
}

type run struct {
	cfg Config
	s   *Summary
	exp int64
}

// Run plays the life and returns what happened.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.Settle == 0 {
		cfg.Settle = 60 * time.Second
	}
	cfg.Target, cfg.Admin = strings.TrimRight(cfg.Target, "/"), strings.TrimRight(cfg.Admin, "/")
	r := &run{cfg: cfg, s: &Summary{Refused: map[string]int{}}, exp: time.Now().Add(time.Hour).Unix()}
	if err := r.open(ctx); err != nil {
		return nil, err
	}
	ids, err := r.claimAll(ctx)
	if err != nil {
		return r.s, err
	}
	if err := r.redeemHalf(ctx, ids[:len(ids)/2]); err != nil {
		return r.s, err
	}
	if err := r.transferHalf(ctx, ids[len(ids)/2:]); err != nil {
		return r.s, err
	}
	if err := r.push(ctx); err != nil {
		return r.s, err
	}
	return r.s, r.review(ctx)
}

func (r *run) user(i int) string   { return r.cfg.Campaign + "-u" + strconv.Itoa(i) }
func (r *run) friend(i int) string { return r.cfg.Campaign + "-f" + strconv.Itoa(i) }

func (r *run) open(ctx context.Context) error {
	n := int64(r.cfg.Holders)
	budget := n*Value + 2*TierUsers*TierValue
	if st, b, err := r.do(ctx, http.MethodPut, r.cfg.Admin+"/admin/v1/business-lines/"+r.cfg.BusinessLine, "admin",
		map[string]int64{"budget": budget}); err != nil || st != 200 {
		return fmt.Errorf("create business line: %d %s %v", st, b, err)
	}
	now := time.Now().UTC()
	body := map[string]any{"name": "voucher's life " + r.cfg.Campaign, "business_line": r.cfg.BusinessLine,
		"starts_at": now.Add(-time.Second), "ends_at": now.Add(time.Hour), "per_user_limit": 1,
		"budget": budget, "voucher_ttl": "72h", "segment": nil, "transferable": true, "max_transfers": 1,
		"skus": []map[string]any{{"sku": "rp-50", "stock": n, "value": Value, "min_spend": MinSpend,
			"excluded_categories": []string{Excluded}},
			{"sku": "tier-a", "stock": TierUsers, "value": TierValue}, {"sku": "tier-b", "stock": TierUsers, "value": TierValue}}}
	if st, b, err := r.do(ctx, http.MethodPut, r.cfg.Admin+"/admin/v1/campaigns/"+r.cfg.Campaign, "admin", body); err != nil || st != 200 {
		return fmt.Errorf("create campaign: %d %s %v", st, b, err)
	}
	fmt.Fprintf(r.cfg.Log, "campaign %s: %d vouchers of %d, min spend %d, not on %q, transferable once\n",
		r.cfg.Campaign, n, Value, MinSpend, Excluded)
	return nil
}

// claimAll has every holder claim one voucher and waits until each is a row.
func (r *run) claimAll(ctx context.Context) ([]string, error) {
	ids := make([]string, r.cfg.Holders)
	for i := range ids {
		u := r.user(i)
		var a struct {
			ClaimID string `json:"claim_id"`
		}
		body := map[string]string{"campaign_id": r.cfg.Campaign, "sku": "rp-50", "user_id": u,
			"device_id": "d-" + u, "request_id": "rq-" + u}
		if err := r.expect(ctx, "claim "+u, http.MethodPost, r.cfg.Target+"/v1/claims", u, body, 200, "", &a); err != nil {
			return nil, err
		}
		ids[i] = a.ClaimID
		r.s.Claimed++
	}
	deadline := time.Now().Add(r.cfg.Settle)
	for i, id := range ids {
		for {
			var v struct {
				State string `json:"state"`
			}
			u := r.cfg.Target + "/v1/claims/" + id
			if r.cfg.UserSecret == "" {
				u += "?user_id=" + url.QueryEscape(r.user(i)) // no user tokens: the owner is named
			}
			st, b, err := r.do(ctx, http.MethodGet, u, r.user(i), nil)
			if err == nil && st == 200 && json.Unmarshal(b, &v) == nil && v.State == "settled" {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("claim %s not settled within %s: %d %s %v", id, r.cfg.Settle, st, b, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	fmt.Fprintf(r.cfg.Log, "%d users claimed one each; all are rows in Postgres\n", len(ids))
	return ids, nil
}

func order(id string, amount int64, category string) map[string]any {
	return map[string]any{"order_id": id, "amount": amount, "category": category}
}

// redeemHalf redeems against orders: the first holder is refused below the minimum and
// on the excluded category first, the second retries its order, is refunded and pays a
// second order with the voucher again.
func (r *run) redeemHalf(ctx context.Context, ids []string) error {
	redeem := func(i int, o map[string]any, status int, reason string) error {
		return r.expect(ctx, fmt.Sprintf("redeem %s order %v", ids[i], o["order_id"]), http.MethodPost,
			r.cfg.Target+"/v1/claims/"+ids[i]+"/redeem", r.user(i), o, status, reason, nil)
	}
	if err := redeem(0, order("o-low", MinSpend-1, "grocery"), 409, "below_min_spend"); err != nil {
		return err
	}
	if err := redeem(0, order("o-newbie", MinSpend*2, Excluded), 409, "not_applicable"); err != nil {
		return err
	}
	for i := range ids {
		if err := redeem(i, order("o-"+r.user(i), MinSpend+int64(10*i), "grocery"), 200, ""); err != nil {
			return err
		}
		r.s.Redeemed++
	}
	// The retry of an order is the same answer; a refund makes the voucher usable again.
	if err := redeem(1, order("o-"+r.user(1), MinSpend+10, "grocery"), 200, ""); err != nil {
		return err
	}
	if err := r.expect(ctx, "rollback "+ids[1], http.MethodPost, r.cfg.Target+"/v1/claims/"+ids[1]+"/redeem/rollback",
		r.user(1), map[string]string{"order_id": "o-" + r.user(1)}, 200, "", nil); err != nil {
		return err
	}
	r.s.RolledBack++
	if err := redeem(1, order("o2-"+r.user(1), MinSpend*3, "fresh"), 200, ""); err != nil {
		return err
	}
	fmt.Fprintf(r.cfg.Log, "%d redeemed against orders (one refused below %d, one on %q; one refunded and used again)\n",
		len(ids), MinSpend, Excluded)
	return nil
}

// transferHalf hands each voucher to a friend (a second hop is refused: one transfer
// allowed), and the friend redeems it.
func (r *run) transferHalf(ctx context.Context, ids []string) error {
	off := r.cfg.Holders - len(ids)
	for j, id := range ids {
		from, to := r.user(off+j), r.friend(off+j)
		if err := r.expect(ctx, "transfer "+id, http.MethodPost, r.cfg.Target+"/v1/claims/"+id+"/transfer", from,
			map[string]string{"to_user_id": to}, 200, "", nil); err != nil {
			return err
		}
		r.s.Transferred++
		if j == 0 {
			// The old owner no longer holds it; the new one may not pass it on again.
			if err := r.expect(ctx, "redeem by the old owner", http.MethodPost, r.cfg.Target+"/v1/claims/"+id+"/redeem", from,
				order("o-old-"+from, MinSpend, "grocery"), 404, "", nil); err != nil { // a stranger's voucher: the unknown id's answer (docs/SECURITY.md)
				return err
			}
			if err := r.expect(ctx, "second hop", http.MethodPost, r.cfg.Target+"/v1/claims/"+id+"/transfer", to,
				map[string]string{"to_user_id": to + "-x"}, 409, "", nil); err != nil {
				return err
			}
		}
		if err := r.expect(ctx, "redeem by "+to, http.MethodPost, r.cfg.Target+"/v1/claims/"+id+"/redeem", to,
			order("o-"+to, MinSpend+5, "grocery"), 200, "", nil); err != nil {
			return err
		}
		r.s.Redeemed++
	}
	fmt.Fprintf(r.cfg.Log, "%d transferred to friends who redeemed them (the old owner refused, a second hop refused)\n", len(ids))
	return nil
}

func (r *run) tierUser(tier string, i int) string {
	return r.cfg.Campaign + "-" + tier + strconv.Itoa(i)
}

// push issues a voucher to every user of two tiers (segments) through a push, waits
// until it is done and every voucher is a row, and has a few of tier A's users use theirs.
func (r *run) push(ctx context.Context) error {
	tiers := map[string]string{}
	for _, t := range []string{"a", "b"} {
		seg := r.cfg.Campaign + "-tier-" + t
		var users bytes.Buffer
		for i := range TierUsers {
			users.WriteString(r.tierUser(t, i) + "\n")
		}
		st, b, err := r.doRaw(ctx, http.MethodPut, r.cfg.Admin+"/admin/v1/segments/"+seg, "admin", users.Bytes())
		if err != nil || st != 200 {
			return fmt.Errorf("segment %s: %d %s %v", seg, st, b, err)
		}
		tiers[seg] = "tier-" + t
	}
	u := r.cfg.Admin + "/admin/v1/campaigns/" + r.cfg.Campaign + "/pushes/recall-1"
	if st, b, err := r.do(ctx, http.MethodPut, u, "admin", map[string]any{"tiers": tiers}); err != nil || st/100 != 2 {
		return fmt.Errorf("push: %d %s %v", st, b, err)
	}
	var p struct {
		State string `json:"state"`
		Users struct {
			Total, Issued, Pending int64
			Refused                map[string]int64
		} `json:"users"`
	}
	deadline := time.Now().Add(r.cfg.Settle)
	for {
		st, b, err := r.do(ctx, http.MethodGet, u, "admin", nil)
		if err != nil || st != 200 || json.Unmarshal(b, &p) != nil {
			return fmt.Errorf("push progress: %d %s %v", st, b, err)
		}
		if p.State == "done" || p.State == "refused" || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if p.State != "done" || p.Users.Issued != 2*TierUsers {
		return fmt.Errorf("push: state %s, %d of %d issued (refused %v)", p.State, p.Users.Issued, 2*TierUsers, p.Users.Refused)
	}
	r.s.Pushed = p.Users.Issued
	fmt.Fprintf(r.cfg.Log, "pushed one voucher to each of %d users in two tiers (%s)\n", p.Users.Issued, strings.Join(sortedKeys(tiers), ", "))
	// Tier A's first users find their voucher among their own and use it.
	for i := range TierUsed {
		user := r.tierUser("a", i)
		var mine struct {
			Claims []struct {
				ClaimID string `json:"claim_id"`
				State   string `json:"state"`
			} `json:"claims"`
		}
		for {
			mu := r.cfg.Target + "/v1/me/claims"
			if r.cfg.UserSecret == "" {
				mu += "?user_id=" + url.QueryEscape(user)
			}
			st, b, err := r.do(ctx, http.MethodGet, mu, user, nil)
			if err == nil && st == 200 && json.Unmarshal(b, &mine) == nil && len(mine.Claims) == 1 && mine.Claims[0].State == "settled" {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s's pushed voucher not settled: %d %s %v", user, st, b, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := r.expect(ctx, "redeem pushed "+mine.Claims[0].ClaimID, http.MethodPost, r.cfg.Target+"/v1/claims/"+mine.Claims[0].ClaimID+"/redeem",
			user, order("o-"+user, 80, "grocery"), 200, "", nil); err != nil {
			return err
		}
	}
	fmt.Fprintf(r.cfg.Log, "%d of tier a's users used theirs\n", TierUsed)
	return nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (r *run) review(ctx context.Context) error {
	st, b, err := r.do(ctx, http.MethodGet, r.cfg.Admin+"/admin/v1/campaigns/"+r.cfg.Campaign+"/report?table=review", "admin", nil)
	if err != nil || st != 200 {
		return fmt.Errorf("review: %d %s %v", st, b, err)
	}
	var out struct {
		Review []ReviewRow `json:"review"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return fmt.Errorf("review: %v: %s", err, b)
	}
	r.s.Review = out.Review
	fmt.Fprintf(r.cfg.Log, "%-12s %-12s %7s %5s %7s %9s %9s %10s\n", "tier", "channel", "issued", "used", "rate", "recalled", "redeemed", "avg order")
	for _, row := range out.Review {
		fmt.Fprintf(r.cfg.Log, "%-12s %-12s %7d %5d %6.0f%% %9d %9d %10.1f\n", orDash(row.Tier), row.Channel, row.Issued, row.Used,
			100*row.UsageRate, row.UsersRecalled, row.AmountRedeem, row.AvgOrder)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// expect sends a request as who ("admin" or a user) and checks the status and, when
// given, the rejection reason; into (if not nil) receives the answer.
func (r *run) expect(ctx context.Context, step, method, u, who string, body any, status int, reason string, into any) error {
	st, b, err := r.do(ctx, method, u, who, body)
	if err != nil {
		return fmt.Errorf("%s: %v", step, err)
	}
	var a struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(b, &a)
	if st != status || (reason != "" && a.Reason != reason) {
		want := strconv.Itoa(status)
		if reason != "" {
			want += " " + reason
		}
		return fmt.Errorf("%s: answered %d %s; want %s", step, st, bytes.TrimSpace(b), want)
	}
	if status != 200 {
		r.s.Refused[strconv.Itoa(st)+" "+a.Reason]++
	}
	if into != nil {
		return json.Unmarshal(b, into)
	}
	return nil
}

// doRaw sends a text body (one id a line) as who.
func (r *run) doRaw(ctx context.Context, method, u, who string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "text/plain")
	return r.send(req, who)
}

func (r *run) do(ctx context.Context, method, u, who string, body any) (int, []byte, error) {
	if who != "admin" && r.cfg.UserSecret == "" {
		// A gateway without user tokens takes the user from the body.
		switch m := body.(type) {
		case map[string]any:
			m["user_id"] = who
		case map[string]string:
			m["user_id"] = who
		}
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return r.send(req, who)
}

func (r *run) send(req *http.Request, who string) (int, []byte, error) {
	switch {
	case who == "admin" && r.cfg.AdminToken != "":
		req.Header.Set("Authorization", "Bearer "+r.cfg.AdminToken)
	case who != "admin" && r.cfg.UserSecret != "":
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": who, "exp": r.exp}).SignedString([]byte(r.cfg.UserSecret))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}
