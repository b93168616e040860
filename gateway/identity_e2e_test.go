package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

const userSecret = "e2e-user-token-secret-0123456789abcdef"

func userToken(t *testing.T, key, sub string, exp time.Time) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "exp": exp.Unix()}).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// headersBut is a response's headers without Date (which differs from second to second).
func headersBut(h http.Header) string {
	var lines []string
	for k, vs := range h {
		if k != "Date" {
			lines = append(lines, k+": "+strings.Join(vs, ","))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestUserTokensEndToEnd: the gateway with FLASH_USER_TOKEN_SECRET, against the real
// Redis, broker and Postgres. Forged, expired, alg none and wrong-key tokens are 401;
// a body naming another user is 403; a voucher is read and redeemed by its owner only,
// and anyone else hears exactly what an id that never existed gets.
func TestUserTokensEndToEnd(t *testing.T) {
	t.Setenv("FLASH_USER_TOKEN_SECRET", userSecret)
	g := startGateway(t)
	camp, _, rdb, pg := setupCampaign(t, `[{"sku":"rp-50","stock":10,"value":50}]`)
	waitStart(t, rdb, camp)
	owner, other := testenv.ID(t, "u"), testenv.ID(t, "u")
	exp := time.Now().Add(time.Hour)
	ownerTok, otherTok := userToken(t, userSecret, owner, exp), userToken(t, userSecret, other, exp)
	c := newClaimant(t, g)
	claim := func(body map[string]string, auth string) answer {
		t.Helper()
		b, _ := json.Marshal(body)
		h := []string{"X-Forwarded-For", c.xff}
		if auth != "" {
			h = append(h, "Authorization", auth)
		}
		return send(t, "POST", g.pub+"/v1/claims", "application/json", b, h...)
	}
	body := func(user string) map[string]string {
		m := map[string]string{"campaign_id": camp, "sku": "rp-50", "device_id": "d-" + owner, "request_id": testenv.ID(t, "rq")}
		if user != "" {
			m["user_id"] = user
		}
		return m
	}
	enc := base64.RawURLEncoding.EncodeToString
	parts := strings.Split(ownerTok, ".")
	for _, tc := range []struct{ name, auth string }{
		{"no token", ""},
		{"malformed", "Bearer abc.def"},
		{"forged payload", "Bearer " + parts[0] + "." + enc([]byte(`{"sub":"`+other+`","exp":`+strconv.FormatInt(exp.Unix(), 10)+`}`)) + "." + parts[2]},
		{"expired", "Bearer " + userToken(t, userSecret, owner, time.Now().Add(-time.Minute))},
		{"wrong key", "Bearer " + userToken(t, "another-secret-entirely-0123456789abcdef", owner, exp)},
		{"alg none", "Bearer " + enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(`{"sub":"`+owner+`","exp":`+strconv.FormatInt(exp.Unix(), 10)+`}`)) + "."},
	} {
		if r := claim(body(owner), tc.auth); r.status != 401 || string(r.body) != `{"error":"unauthenticated"}` {
			t.Errorf("claim with %s: %s; want 401 unauthenticated", tc.name, r)
		}
	}
	if r := claim(body(other), "Bearer "+ownerTok); r.status != 403 || string(r.body) != `{"error":"user_mismatch"}` {
		t.Errorf("claim naming another user: %s; want 403 user_mismatch", r)
	}
	// Nothing was taken by any of them.
	if n, err := rdb.HGet(context.Background(), rkeys.SKU(camp, "rp-50"), "taken").Int(); err == nil && n != 0 {
		t.Fatalf("refused claims took %d units", n)
	}
	body0 := body("")
	ok := claim(body0, "Bearer "+ownerTok) // the body need not repeat the user
	if ok.status != 200 || ok.json(t)["user_id"] != owner {
		t.Fatalf("claim with a token: %s", ok)
	}
	claimID := ok.json(t)["claim_id"].(string)

	get := func(id, tok string) answer {
		return send(t, "GET", g.pub+"/v1/claims/"+id, "", nil, "Authorization", "Bearer "+tok)
	}
	// The claim is pending in Redis, unless another helper's settler on the shared broker
	// has confirmed it there (into its own database): then it reads as nothing here, so
	// the pending case is asserted only while it is pending.
	if r := get(claimID, ownerTok); r.status == 200 {
		if r.json(t)["claim_id"] != claimID || r.json(t)["state"] != "pending" {
			t.Errorf("owner's GET: %s", r)
		}
	} else {
		rec, _ := rdb.Get(context.Background(), rkeys.Request(camp, body0["request_id"])).Result()
		if r.status != 404 || !strings.HasPrefix(rec, "S\t") {
			t.Errorf("owner's GET of a pending claim: %s (record %q)", r, rec)
		}
		t.Logf("claim %s was settled by a settler of another database", claimID)
	}
	never := camp + ".00000000000000000000000000"
	same := func(what string, a, b answer) {
		t.Helper()
		if a.status != 404 || a.status != b.status || !bytes.Equal(a.body, b.body) || headersBut(a.header) != headersBut(b.header) {
			t.Errorf("%s: %d %s [%s]; the unknown id's: %d %s [%s]", what, a.status, a.body, headersBut(a.header), b.status, b.body, headersBut(b.header))
		}
	}
	same("GET of another's pending claim", get(claimID, otherTok), get(never, otherTok))
	if r := get(claimID, ""); r.status != 401 {
		t.Errorf("GET without a token: %s; want 401", r)
	}

	// A settled voucher (written as the settler writes it) in a campaign of its own.
	vcamp := testenv.ID(t, "vcamp")
	insert := func(id, user string, claimed time.Time) {
		t.Helper()
		_, err := pg.Exec(context.Background(), `INSERT INTO claims (claim_id, request_id, campaign_id, business_line, sku, user_id,
			device_id, ip, value, claimed_at, expires_at, kafka_partition, kafka_offset)
			VALUES ($1, $2, $3, 'bl', 'rp-50', $4, 'd-9', '198.18.0.1', 50, $5, now() + interval '1 hour', 0, 0)`,
			id, testenv.ID(t, "rq"), vcamp, user, claimed)
		if err != nil {
			t.Fatal(err)
		}
	}
	settled := vcamp + ".0000000000000000000000001a"
	insert(settled, owner, time.Now().Add(-time.Minute))
	same("GET of another's settled voucher", get(settled, otherTok), get(vcamp+".0000000000000000000000009z", otherTok))
	redeem := func(id, tok, body string) answer {
		return send(t, "POST", g.pub+"/v1/claims/"+id+"/redeem", "application/json", []byte(body), "Authorization", "Bearer "+tok)
	}
	same("redeem of another's voucher", redeem(settled, otherTok, `{}`), redeem(vcamp+".0000000000000000000000009z", otherTok, `{}`))
	same("redeem of another's pending claim", redeem(claimID, otherTok, ""), redeem(never, otherTok, ""))
	if r := redeem(settled, ownerTok, `{"user_id":"`+other+`"}`); r.status != 403 || string(r.body) != `{"error":"user_mismatch"}` {
		t.Errorf("redeem naming another user: %s; want 403 user_mismatch", r)
	}
	if r := redeem(settled, ownerTok, ""); r.status != 200 || r.json(t)["state"] != "redeemed" {
		t.Errorf("owner's redeem: %s", r)
	}

	// A blocked (or frozen) user redeems nothing.
	blockedVoucher := vcamp + ".0000000000000000000000005a"
	insert(blockedVoucher, other, time.Now().Add(-time.Minute))
	if err := rdb.Set(context.Background(), rkeys.Block(rkeys.KindUser, other), "test", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if r := redeem(blockedVoucher, otherTok, ""); r.status != 403 || string(r.body) != `{"result":"rejected","reason":"blocked"}` {
		t.Errorf("redeem by a blocked user: %s; want 403 blocked", r)
	}
	rdb.Del(context.Background(), rkeys.Block(rkeys.KindUser, other))

	// GET /v1/me/claims: the caller's own, newest first, in pages.
	for i := range 4 {
		insert(vcamp+".000000000000000000000000"+strconv.Itoa(i)+"b", owner, time.Now().Add(-time.Duration(10+i)*time.Minute))
	}
	insert(vcamp+".0000000000000000000000000c", other, time.Now())
	var seen []string
	next := ""
	for page := 0; page < 5; page++ {
		url := g.pub + "/v1/me/claims?limit=2"
		if next != "" {
			url += "&before=" + next
		}
		r := send(t, "GET", url, "", nil, "Authorization", "Bearer "+ownerTok)
		if r.status != 200 {
			t.Fatalf("me/claims: %s", r)
		}
		var m struct {
			Claims []struct {
				ClaimID string `json:"claim_id"`
				State   string `json:"state"`
				UserID  string `json:"user_id"`
			} `json:"claims"`
			Next string `json:"next"`
		}
		if err := json.Unmarshal(r.body, &m); err != nil {
			t.Fatal(err)
		}
		for _, v := range m.Claims {
			if v.UserID != owner {
				t.Errorf("me/claims lists %s's voucher %s", v.UserID, v.ClaimID)
			}
			seen = append(seen, v.ClaimID)
		}
		if next = m.Next; next == "" {
			break
		}
	}
	// The pending claim comes first when it is still pending (another test's settler may
	// have taken it from Redis), then the settled ones newest first.
	want := []string{settled, vcamp + ".0000000000000000000000000b", vcamp + ".0000000000000000000000001b",
		vcamp + ".0000000000000000000000002b", vcamp + ".0000000000000000000000003b"}
	if len(seen) > 0 && seen[0] == claimID {
		seen = seen[1:]
	} else {
		t.Logf("the pending claim %s was not listed (settled elsewhere?): %v", claimID, seen)
	}
	if strings.Join(seen, " ") != strings.Join(want, " ") {
		t.Errorf("me/claims pages: %v; want %v", seen, want)
	}
	if r := send(t, "GET", g.pub+"/v1/me/claims?before=nonsense", "", nil, "Authorization", "Bearer "+ownerTok); r.status != 400 || !strings.Contains(string(r.body), "before") {
		t.Errorf("bad cursor: %s; want 400 naming before", r)
	}
	if r := send(t, "GET", g.pub+"/v1/me/claims", "", nil); r.status != 401 {
		t.Errorf("me/claims without a token: %s; want 401", r)
	}
}

// Without a secret, a public address that is not loopback is refused unless
// FLASH_TRUST_BODY_USER says a proxy authenticates.
func TestTrustBodyUserRule(t *testing.T) {
	if _, err := parseFlags([]string{"-http-addr", "0.0.0.0:8080"}, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "FLASH_USER_TOKEN_SECRET") || !strings.Contains(err.Error(), "FLASH_TRUST_BODY_USER") {
		t.Errorf("non-loopback without a secret: %v; want a refusal naming both settings", err)
	}
	if _, err := parseFlags([]string{"-http-addr", "0.0.0.0:8080", "-trust-body-user"}, io.Discard); err != nil {
		t.Errorf("with -trust-body-user: %v", err)
	}
	t.Setenv("FLASH_USER_TOKEN_SECRET", "short")
	if _, err := parseFlags(nil, io.Discard); err == nil || !strings.Contains(err.Error(), "FLASH_USER_TOKEN_SECRET") {
		t.Errorf("a short secret: %v; want a refusal", err)
	}
	t.Setenv("FLASH_USER_TOKEN_SECRET", userSecret)
	if _, err := parseFlags([]string{"-http-addr", "0.0.0.0:8080"}, io.Discard); err != nil {
		t.Errorf("non-loopback with a secret: %v", err)
	}
	t.Setenv("FLASH_ADMIN_TOKENS", "ops:short")
	if _, err := parseFlags(nil, io.Discard); err == nil || !strings.Contains(err.Error(), `"ops"`) {
		t.Errorf("a short admin token: %v; want a refusal naming the entry", err)
	}
}
