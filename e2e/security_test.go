package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/store"
	"github.com/flashgate/flashgate/internal/testenv"
)

// The dev stack's least-privilege identities (scripts/redis-users.acl, scripts/stack.sh;
// docs/SECURITY.md): Redis ACL user and Postgres role of each binary, dev passwords.
type identity struct{ redisUser, redisPW, pgRole string }

var (
	gatewayID = identity{"flashgate-gateway", "flashgate-gateway-dev", store.RoleGateway}
	settlerID = identity{"flashgate-settler", "flashgate-settler-dev", store.RoleSettler}
	riskctlID = identity{"flashgate-riskctl", "flashgate-riskctl-dev", store.RoleRiskctl}
	benchID   = identity{"flashgate-bench", "flashgate-bench-dev", store.RoleBench}
)

// pgURL is the dev stack's Postgres URL with the identity's role and dev password.
func (id identity) pgURL(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(testenv.PGURL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(id.pgRole, id.pgRole+"_dev")
	return u.String()
}

// env is the environment a binary runs with under this identity.
func (id identity) env(t *testing.T) []string {
	return []string{"FLASH_REDIS_ADDR=" + testenv.RedisAddr(), "FLASH_REDIS_USERNAME=" + id.redisUser,
		"FLASH_REDIS_PASSWORD=" + id.redisPW, "FLASH_PG_URL=" + id.pgURL(t)}
}

// requireRoles fails unless the roles exist, and applies the grants (idempotent) as the
// owner, as `make up` does, so the test does not depend on which binary migrated last.
func requireRoles(t *testing.T) {
	t.Helper()
	owner := testenv.PG(t)
	ctx := context.Background()
	for _, id := range []identity{gatewayID, settlerID, riskctlID, benchID} {
		var ok bool
		if err := owner.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, id.pgRole).Scan(&ok); err != nil || !ok {
			t.Fatalf("Postgres role %s missing (%v): run `make up` (scripts/stack.sh creates the roles)", id.pgRole, err)
		}
	}
	if err := store.Grant(ctx, owner); err != nil {
		t.Fatal(err)
	}
}

type httpAnswer struct {
	status int
	body   string
}

func httpDo(t *testing.T, method, url, body string) httpAnswer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return httpAnswer{resp.StatusCode, string(b)}
}

func secret(t *testing.T, prefix string) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b[:])
}

// TestLeastPrivilegeSale runs the real gateway and settler binaries under their own
// Redis ACL users and Postgres roles through a small sale, and riskctl under its own:
// every step a role needs works, and nothing in their logs was refused.
func TestLeastPrivilegeSale(t *testing.T) {
	testenv.RequireBroker(t)
	requireRoles(t)
	s := &system{t: t, rdb: testenv.Redis(t), pg: testenv.PG(t), brokers: testenv.BrokerList(),
		group: testenv.ID(t, "e2e-sec-settler"), http: &http.Client{Timeout: 30 * time.Second}}
	pub, adm, sp := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	s.public = "http://127.0.0.1:" + strconv.Itoa(pub)
	s.admin = "http://127.0.0.1:" + strconv.Itoa(adm)
	s.settler = "http://127.0.0.1:" + strconv.Itoa(sp)
	s.gwEnv = append(gatewayID.env(t), "FLASH_KAFKA_BROKERS="+s.brokers,
		"FLASH_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(pub), "FLASH_ADMIN_ADDR=127.0.0.1:"+strconv.Itoa(adm),
		"FLASH_ADMIN_TOKEN="+adminToken, "FLASH_SETTLER_GROUP="+s.group)
	s.stEnv = append(settlerID.env(t), "FLASH_KAFKA_BROKERS="+s.brokers,
		"FLASH_SETTLER_ADDR=127.0.0.1:"+strconv.Itoa(sp), "FLASH_SETTLER_GROUP="+s.group)
	testenv.GroupAtEnd(t, testenv.Brokers(), s.group, kafkaopt.ClaimsTopic)
	s.startGateway()
	s.startSettler()
	testenv.WaitHTTP(t, s.admin+"/readyz", 30*time.Second, nil)

	bl := s.businessLine(1_000_000)
	c := s.campaign(bl, 1_000_000, 1, sku{SKU: "rp-50", Stock: 5, Value: 50})
	var accepted []string
	soldOut := 0
	for i := 0; i < 8; i++ {
		a := s.claimUntilAnswered(claimReq{CampaignID: c, SKU: "rp-50", UserID: fmt.Sprintf("u-%d", i),
			DeviceID: fmt.Sprintf("d-%d", i), RequestID: fmt.Sprintf("r-%d", i)}, 20*time.Second)
		switch {
		case a.Status == 200:
			accepted = append(accepted, a.ClaimID)
		case a.Status == 409 && a.Reason == "sold_out":
			soldOut++
		default:
			t.Fatalf("claim %d: %+v", i, a)
		}
	}
	if len(accepted) != 5 || soldOut != 3 {
		t.Fatalf("accepted %d, sold out %d; want 5 and 3", len(accepted), soldOut)
	}
	if n := s.settled(c, 60*time.Second); n != 5 {
		t.Fatalf("%d rows in Postgres, want 5", n)
	}
	var ledger int64
	if err := s.pg.QueryRow(context.Background(), `SELECT coalesce(sum(amount), 0) FROM budget_ledger WHERE campaign_id = $1 AND kind = 'reserve'`, c).Scan(&ledger); err != nil {
		t.Fatal(err)
	}
	if ledger != 250 {
		t.Errorf("ledger reserves %d, want 250", ledger)
	}
	// The gateway role reads the books and writes a voucher off.
	get := httpDo(t, "GET", s.public+"/v1/claims/"+accepted[0]+"?user_id=u-0", "")
	if get.status != 200 || !strings.Contains(get.body, `"settled"`) {
		t.Errorf("GET claim: %d %s", get.status, get.body)
	}
	red := httpDo(t, "POST", s.public+"/v1/claims/"+accepted[0]+"/redeem", `{"user_id":"u-0"}`)
	if red.status != 200 || !strings.Contains(red.body, `"redeemed"`) {
		t.Errorf("redeem: %d %s", red.status, red.body)
	}
	for _, p := range []string{"/admin/v1/campaigns/" + c, "/admin/v1/campaigns/" + c + "/report", "/admin/v1/campaigns/" + c + "/reconcile"} {
		if code, b := s.adminDo("GET", p, nil); code != 200 {
			t.Errorf("GET %s: %d %s", p, code, b)
		}
	}

	// riskctl under its user and role: a block (Redis write + audit row) that the
	// gateway, under its own user, then enforces; rules and the audit read back.
	rc := testenv.Build(t, "./riskctl")
	dev := testenv.ID(t, "dev-sec")
	rcEnv := append(riskctlID.env(t), "FLASH_KAFKA_BROKERS="+s.brokers)
	runRiskctl := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(rc, args...)
		cmd.Env = append(cmd.Environ(), rcEnv...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("riskctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	runRiskctl("block", "device", dev, "--ttl", "5m", "--reason", "e2e security", "--actor", "e2e")
	runRiskctl("rules", "show", "--campaign", c)
	if out := runRiskctl("audit", "--since", "1h", "--json"); !strings.Contains(out, dev) {
		t.Errorf("riskctl audit does not show the block of %s:\n%s", dev, out)
	}
	if a := s.claimUntilAnswered(claimReq{CampaignID: c, SKU: "rp-50", UserID: "u-blocked", DeviceID: dev, RequestID: "r-blocked"}, 20*time.Second); a.Status != 403 || a.Reason != "blocked" {
		t.Errorf("claim from the blocked device: %+v, want 403 blocked", a)
	}
	runRiskctl("unblock", "device", dev, "--actor", "e2e")

	for name, p := range map[string]*testenv.Proc{"gateway": s.gw, "settler": s.st} {
		for _, bad := range []string{"NOPERM", "EXECABORT", "permission denied", "no permissions"} {
			if strings.Contains(p.Output(), bad) {
				t.Errorf("the %s was refused something it needs (%q in its log)", name, bad)
			}
		}
	}
}

// TestRolesCannotDeleteOrAlter: no binary's role may delete the books or change the
// schema; riskctl may not rewrite its audit trail; bench may not write.
func TestRolesCannotDeleteOrAlter(t *testing.T) {
	requireRoles(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	denied := map[identity][]string{
		gatewayID: {`DELETE FROM claims WHERE false`, `TRUNCATE claims`, `DELETE FROM budget_ledger WHERE false`,
			`TRUNCATE budget_ledger`, `INSERT INTO claims SELECT * FROM claims WHERE false`,
			`UPDATE claims SET value = value WHERE false`, `UPDATE budget_ledger SET amount = amount WHERE false`,
			`DELETE FROM risk_audit WHERE false`},
		settlerID: {`DELETE FROM claims WHERE false`, `TRUNCATE claims`, `DELETE FROM budget_ledger WHERE false`,
			`UPDATE claims SET value = value WHERE false`, `UPDATE campaigns SET budget = budget WHERE false`},
		riskctlID: {`DELETE FROM risk_audit WHERE false`, `UPDATE risk_audit SET reason = reason WHERE false`,
			`TRUNCATE risk_audit`, `SELECT count(*) FROM budget_ledger`, `DELETE FROM claims WHERE false`,
			// revoke reads claims and sets expires_at/revoked_at (issue 14), nothing else of them
			`UPDATE claims SET state = state WHERE false`, `UPDATE claims SET value = value WHERE false`},
		benchID: {`INSERT INTO claims SELECT * FROM claims WHERE false`, `DELETE FROM claims WHERE false`,
			`UPDATE claims SET state = state WHERE false`},
	}
	ddl := []string{`ALTER TABLE claims ADD COLUMN sec_probe int`, `DROP TABLE claims`, `CREATE TABLE sec_probe (x int)`,
		`CREATE INDEX sec_probe ON claims (ip)`, `CREATE SCHEMA sec_probe`,
		`ALTER TABLE budget_ledger DISABLE TRIGGER ALL`, `DELETE FROM schema_migrations`}
	for id, stmts := range denied {
		conn, err := pgx.Connect(ctx, id.pgURL(t))
		if err != nil {
			t.Fatalf("%s: %v", id.pgRole, err)
		}
		for _, q := range append(stmts, ddl...) {
			_, err := conn.Exec(ctx, q)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || (pe.Code != "42501" && !strings.Contains(pe.Message, "must be owner")) {
				t.Errorf("%s: %s: got %v, want permission denied", id.pgRole, q, err)
			}
		}
		var v int
		if err := conn.QueryRow(ctx, `SELECT version FROM schema_migrations`).Scan(&v); err != nil {
			t.Errorf("%s cannot read the schema version it checks at start: %v", id.pgRole, err)
		}
		conn.Close(ctx)
	}
}

// TestAdminTokenNeverLeaks: the admin token, and a wrong token that looks just as
// secret, appear in no log line, error body, header or metric of the gateway.
func TestAdminTokenNeverLeaks(t *testing.T) {
	testenv.RequireBroker(t)
	requireRoles(t)
	token, wrong := secret(t, "fgadm_"), secret(t, "sk_live_")
	pub, adm := testenv.FreePort(t), testenv.FreePort(t)
	admin := "http://127.0.0.1:" + strconv.Itoa(adm)
	gw := testenv.Start(t, testenv.Build(t, "./gateway"), append(gatewayID.env(t),
		"FLASH_KAFKA_BROKERS="+testenv.BrokerList(), "FLASH_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(pub),
		"FLASH_ADMIN_ADDR=127.0.0.1:"+strconv.Itoa(adm), "FLASH_ADMIN_TOKEN="+token, "FLASH_LOG_LEVEL=debug"))
	gw.WaitReady(t, admin+"/healthz")

	var seen strings.Builder // every status line, header and body the gateway sent
	do := func(method, path, auth, body string) int {
		t.Helper()
		req, err := http.NewRequest(method, admin+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(&seen, "%s %v\n%s\n", resp.Status, resp.Header, b)
		return resp.StatusCode
	}
	bl := testenv.ID(t, "bl-sec")
	for _, c := range []struct {
		method, path, auth, body string
		want                     int
	}{
		{"PUT", "/admin/v1/business-lines/" + bl, "Bearer " + token, `{"budget":1000}`, 200},
		{"GET", "/admin/v1/campaigns/" + testenv.ID(t, "none"), "Bearer " + token, "", 404},
		{"PUT", "/admin/v1/business-lines/" + bl, "Bearer " + token, `{"budget":"` + token + `"}`, 400},
		{"PUT", "/admin/v1/business-lines/" + bl, "Bearer " + wrong, `{"budget":1}`, 401},
		{"GET", "/admin/v1/campaigns/x", "Bearer " + wrong, "", 401},
		{"GET", "/admin/v1/campaigns/x", wrong, "", 401},
		{"GET", "/admin/v1/campaigns/x", "Bearer " + token + wrong, "", 401},
		{"GET", "/admin/v1/campaigns/x", "Basic " + wrong, "", 401},
		{"GET", "/admin/v1/campaigns/x?token=" + wrong, "", "", 401},
		{"GET", "/admin/v1/" + wrong, "Bearer " + wrong, "", 401},
	} {
		if got := do(c.method, c.path, c.auth, c.body); got != c.want {
			t.Errorf("%s %s (%.20s...): %d, want %d", c.method, c.path, c.auth, got, c.want)
		}
	}
	do("GET", "/metrics", "", "")
	do("GET", "/readyz", "", "")
	do("GET", "/healthz", "", "")
	metrics := seen.String()
	if !strings.Contains(metrics, "flashgate_") {
		t.Fatalf("no flashgate metrics were scraped:\n%.500s", metrics)
	}
	if err := gw.Stop(); err != nil {
		t.Fatalf("gateway did not stop cleanly: %v", err)
	}
	for what, text := range map[string]string{"answers and /metrics": seen.String(), "log": gw.Output()} {
		if strings.Contains(text, token) {
			t.Errorf("the admin token appears in the gateway's %s", what)
		}
		if strings.Contains(text, wrong) {
			t.Errorf("the wrong token appears in the gateway's %s", what)
		}
	}
	if !strings.Contains(gw.Output(), "gateway stopped") {
		t.Errorf("the captured log is incomplete:\n%s", gw.Output())
	}
}

// TestConnectFailuresLogNoSecret: a binary that cannot connect - Postgres down, a wrong
// Postgres password, a wrong Redis password - says so without printing the password,
// and -help or a bad flag does not print FLASH_PG_URL's password either.
func TestConnectFailuresLogNoSecret(t *testing.T) {
	testenv.RequireBroker(t)
	requireRoles(t)
	pgPW, redisPW := secret(t, "pgpw_"), secret(t, "redispw_")
	real, err := url.Parse(testenv.PGURL())
	if err != nil {
		t.Fatal(err)
	}
	withPW := func(host string) string {
		u := *real
		u.User = url.UserPassword(store.RoleGateway, pgPW)
		u.Host = host
		return u.String()
	}
	deadPG := withPW("127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)))
	wrongPG := withPW(real.Host)
	base := []string{"FLASH_KAFKA_BROKERS=" + testenv.BrokerList(), "FLASH_REDIS_ADDR=" + testenv.RedisAddr(),
		"FLASH_SETTLER_GROUP=" + testenv.ID(t, "e2e-sec-nogroup"), "FLASH_LOG_LEVEL=debug"}
	gwAddrs := func() []string {
		return []string{"FLASH_HTTP_ADDR=127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
			"FLASH_ADMIN_ADDR=127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
			"FLASH_SETTLER_ADDR=127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))}
	}
	type run struct {
		name string
		bin  string
		args []string
		env  []string
		want string // a word the failure must show, so the test sees a real failure
	}
	var runs []run
	for _, bin := range []string{"./gateway", "./settler"} {
		runs = append(runs,
			run{bin + " postgres down", bin, nil, append(gwAddrs(), "FLASH_PG_URL="+deadPG), "refused"},
			run{bin + " wrong postgres password", bin, nil, append(gwAddrs(), "FLASH_PG_URL="+wrongPG), "password authentication failed"},
			run{bin + " -help", bin, []string{"-help"}, append(gwAddrs(), "FLASH_PG_URL="+wrongPG), "xxxxx"},
			run{bin + " bad flag", bin, []string{"-no-such-flag"}, append(gwAddrs(), "FLASH_PG_URL="+wrongPG), "xxxxx"},
		)
	}
	runs = append(runs,
		run{"gateway wrong redis password", "./gateway", nil, append(gwAddrs(), "FLASH_PG_URL="+gatewayID.pgURL(t),
			"FLASH_REDIS_USERNAME="+gatewayID.redisUser, "FLASH_REDIS_PASSWORD="+redisPW), "WRONGPASS"},
		run{"settler wrong redis password", "./settler", nil, append(gwAddrs(), "FLASH_PG_URL="+settlerID.pgURL(t),
			"FLASH_REDIS_USERNAME="+settlerID.redisUser, "FLASH_REDIS_PASSWORD="+redisPW), "WRONGPASS"},
		run{"riskctl postgres down", "./riskctl", []string{"audit"}, []string{"FLASH_PG_URL=" + deadPG, "FLASH_RISKCTL_TIMEOUT=5s"}, "refused"},
		run{"riskctl wrong postgres password", "./riskctl", []string{"audit"}, []string{"FLASH_PG_URL=" + wrongPG}, "password authentication failed"},
		run{"riskctl wrong redis password", "./riskctl", []string{"rules", "show"}, []string{"FLASH_REDIS_USERNAME=" + riskctlID.redisUser,
			"FLASH_REDIS_PASSWORD=" + redisPW}, "WRONGPASS"},
		run{"riskctl -help", "./riskctl", []string{"audit", "--help"}, []string{"FLASH_PG_URL=" + wrongPG}, "xxxxx"},
	)
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			p := testenv.Start(t, testenv.Build(t, r.bin), append(append([]string{}, base...), r.env...), r.args...)
			// A settler whose Redis refuses it keeps retrying (readiness false) rather
			// than exiting: give it time to log its failures, then stop it.
			deadline := time.Now().Add(20 * time.Second)
			for !p.Exited() && time.Now().Before(deadline) && !strings.Contains(p.Output(), r.want) {
				time.Sleep(100 * time.Millisecond)
			}
			if !p.Exited() {
				time.Sleep(500 * time.Millisecond)
				p.Stop()
			}
			out := p.Output()
			if !strings.Contains(out, r.want) {
				t.Fatalf("the output does not show the failure (%q):\n%s", r.want, out)
			}
			for what, s := range map[string]string{"Postgres password": pgPW, "Redis password": redisPW} {
				if strings.Contains(out, s) {
					t.Errorf("the %s appears in the output:\n%s", what, out)
				}
			}
		})
	}
}
