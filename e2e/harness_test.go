package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

const adminToken = "e2e-admin-token"

// system is one gateway and one settler started for a test.
type system struct {
	t        *testing.T
	public   string // http://127.0.0.1:port
	admin    string
	settler  string
	gw, st   *testenv.Proc
	gwEnv    []string
	stEnv    []string
	rdb      *redis.Client
	pg       *pgxpool.Pool
	http     *http.Client
	brokers  string
	group    string
	settleOK bool
}

type opts struct {
	brokers      string // default: the dev stack's
	noSettler    bool
	gatewayExtra []string
}

func start(t *testing.T, o opts) *system {
	t.Helper()
	shared := o.brokers == ""
	if shared {
		testenv.RequireBroker(t)
		o.brokers = testenv.BrokerList()
	}
	s := &system{
		t:       t,
		rdb:     testenv.Redis(t),
		pg:      testenv.PG(t),
		brokers: o.brokers,
		group:   testenv.ID(t, "e2e-settler"),
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}},
	}
	common := []string{
		"FLASH_REDIS_ADDR=" + testenv.RedisAddr(),
		"FLASH_PG_URL=" + testenv.PGURL(),
		"FLASH_KAFKA_BROKERS=" + o.brokers,
	}
	pub, adm := testenv.FreePort(t), testenv.FreePort(t)
	s.public = "http://127.0.0.1:" + strconv.Itoa(pub)
	s.admin = "http://127.0.0.1:" + strconv.Itoa(adm)
	s.gwEnv = append(append(common,
		"FLASH_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(pub),
		"FLASH_ADMIN_ADDR=127.0.0.1:"+strconv.Itoa(adm),
		"FLASH_ADMIN_TOKEN="+adminToken), o.gatewayExtra...)
	if shared {
		// The shared broker's flash.claims holds every earlier test's claims: this
		// test's settler starts at its end (a private broker starts empty).
		testenv.GroupAtEnd(t, testenv.Brokers(), s.group, kafkaopt.ClaimsTopic)
	}
	s.startGateway()
	if !o.noSettler {
		sp := testenv.FreePort(t)
		s.settler = "http://127.0.0.1:" + strconv.Itoa(sp)
		s.stEnv = append(common, "FLASH_SETTLER_ADDR=127.0.0.1:"+strconv.Itoa(sp), "FLASH_SETTLER_GROUP="+s.group)
		s.startSettler()
	}
	return s
}

func (s *system) startGateway() {
	s.gw = testenv.Start(s.t, testenv.Build(s.t, "./gateway"), s.gwEnv)
	s.gw.WaitReady(s.t, s.admin+"/healthz")
}

func (s *system) startSettler() {
	s.st = testenv.Start(s.t, testenv.Build(s.t, "./settler"), s.stEnv)
	s.st.WaitReady(s.t, s.settler+"/healthz")
}

func (s *system) adminDo(method, path string, body any) (int, []byte) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	return s.adminSend(method, path, "application/json", rd)
}

// adminSend sends a body of the given content type to the admin API with the token.
func (s *system) adminSend(method, path, contentType string, rd io.Reader) (int, []byte) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.admin+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", contentType)
	resp, err := s.http.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type sku struct {
	SKU   string `json:"sku"`
	Stock int64  `json:"stock"`
	Value int64  `json:"value"`
}

type campaign struct {
	Name         string    `json:"name"`
	BusinessLine string    `json:"business_line"`
	StartsAt     time.Time `json:"starts_at"`
	EndsAt       time.Time `json:"ends_at"`
	PerUserLimit int64     `json:"per_user_limit"`
	Budget       int64     `json:"budget"`
	VoucherTTL   string    `json:"voucher_ttl"`
	SKUs         []sku     `json:"skus"`
}

// businessLine creates a business line with a fresh id.
func (s *system) businessLine(budget int64) string {
	s.t.Helper()
	id := testenv.ID(s.t, "bl")
	if code, b := s.adminDo("PUT", "/admin/v1/business-lines/"+id, map[string]int64{"budget": budget}); code != 200 {
		s.t.Fatalf("PUT business line: %d %s", code, b)
	}
	return id
}

// campaign creates an open campaign (started a minute ago, ending in an hour).
func (s *system) campaign(bl string, budget, perUser int64, skus ...sku) string {
	s.t.Helper()
	id := testenv.ID(s.t, "cmp")
	c := campaign{Name: "e2e " + s.t.Name(), BusinessLine: bl, StartsAt: time.Now().Add(-time.Minute),
		EndsAt: time.Now().Add(time.Hour), PerUserLimit: perUser, Budget: budget, VoucherTTL: "72h", SKUs: skus}
	if code, b := s.adminDo("PUT", "/admin/v1/campaigns/"+id, c); code != 200 {
		s.t.Fatalf("PUT campaign: %d %s", code, b)
	}
	return id
}

type claimReq struct {
	CampaignID string `json:"campaign_id"`
	SKU        string `json:"sku"`
	UserID     string `json:"user_id"`
	DeviceID   string `json:"device_id"`
	RequestID  string `json:"request_id"`
}

type claimResp struct {
	Status   int
	Replayed bool
	Result   string `json:"result"`
	Reason   string `json:"reason"`
	Error    string `json:"error"`
	ClaimID  string `json:"claim_id"`
	Value    int64  `json:"value"`
	Expires  string `json:"expires_at"`
}

func (s *system) claim(r claimReq) claimResp {
	b, _ := json.Marshal(r)
	req, _ := http.NewRequest("POST", s.public+"/v1/claims", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return claimResp{Status: -1, Error: err.Error()}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out claimResp
	if err := json.Unmarshal(body, &out); err != nil {
		s.t.Errorf("claim answer %d is not JSON: %q", resp.StatusCode, body)
	}
	out.Status = resp.StatusCode
	out.Replayed = resp.Header.Get("Idempotent-Replayed") == "true"
	return out
}

// claimUntilAnswered retries a claim with the same request_id while the gateway answers
// 503, as a client does; it returns the first non-503 answer.
func (s *system) claimUntilAnswered(r claimReq, within time.Duration) claimResp {
	deadline := time.Now().Add(within)
	for {
		a := s.claim(r)
		if a.Status != 503 || time.Now().After(deadline) {
			return a
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// settled waits until the campaign has no claim in flight (every accepted claim is a
// row) and returns the row count.
func (s *system) settled(campaign string, within time.Duration) int64 {
	s.t.Helper()
	ctx := context.Background()
	testenv.Eventually(s.t, within, "campaign "+campaign+" settles (inflight empty)", func() bool {
		n, err := s.rdb.HLen(ctx, rkeys.Inflight(campaign)).Result()
		return err == nil && n == 0
	})
	return s.rows(campaign)
}

func (s *system) rows(campaign string) int64 {
	s.t.Helper()
	var n int64
	if err := s.pg.QueryRow(context.Background(), `SELECT count(*) FROM claims WHERE campaign_id = $1`, campaign).Scan(&n); err != nil {
		s.t.Fatal(err)
	}
	return n
}

func (s *system) hgetInt(key, field string) int64 {
	s.t.Helper()
	v, err := s.rdb.HGet(context.Background(), key, field).Result()
	if err == redis.Nil {
		return 0
	}
	if err != nil {
		s.t.Fatal(err)
	}
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

// startBroker runs a private dev broker (its own port and data dir) for tests that
// kill it. It returns the broker and its address.
func startBroker(t *testing.T, dataDir string, port int) *testenv.Proc {
	t.Helper()
	bin := testenv.Build(t, "./devbroker")
	p := testenv.Start(t, bin, nil, "-addr", fmt.Sprintf("127.0.0.1:%d", port), "-data-dir", dataDir)
	testenv.Eventually(t, 30*time.Second, "private broker listens", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return p
}

func tempDir(t *testing.T, name string) string {
	d := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}
