package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// claimAll claims every request, conc at a time, each retried on 503 until answered or
// within has passed, and returns the final answers in order.
func (s *system) claimAll(reqs []claimReq, conc int, within time.Duration) []claimResp {
	out := make([]claimResp, len(reqs))
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i := range reqs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i] = s.claimUntilAnswered(reqs[i], within)
		})
	}
	wg.Wait()
	return out
}

// Issue 21.2: Redis comes back with less than it acknowledged. Played exactly: a private
// redis-server is killed and restarted from a copy of its AOF taken before the last 200
// answers (what a crash under everysec, or a failover to a replica that lagged, leaves).
// Every request_id that was answered 200 is retried at once, on the rolled-back server,
// and each of their users also tries a new request_id. A retry gets its original
// claim_id or 503 (until recovery has rebuilt the campaign), never a new claim_id; the
// new request_ids get 409 user_limit or 503, never a second voucher; once settled every
// 200 is exactly one row and no user holds two.
func TestRedisRestoredFromAnOlderAOFCopy(t *testing.T) {
	// Recovery's own detection is slow here (every 5 s, the most its list period
	// allows): what a loaded Redis's long restart makes of the window in the issue. The
	// retries come at once, so only claim.lua's run id check (and the recovery it
	// kicks) stands between them and the rolled-back state.
	f := startFaults(t, faultOpts{
		gatewayExtra: []string{"FLASH_RECOVERY_INTERVAL=5s"},
		settlerExtra: []string{"FLASH_RECOVERY_INTERVAL=5s"},
	})
	const stock = 1000
	cmp := f.campaign(f.bl, 1_000_000, 1, sku{"rp-50", stock, 50})
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	mk := func(us []string, tag string) []claimReq {
		rs := make([]claimReq, len(us))
		for i, u := range us {
			rs[i] = claimReq{CampaignID: cmp, SKU: "rp-50", UserID: u, DeviceID: "dev-" + u, RequestID: tag + "-" + u}
		}
		return rs
	}
	before := mk(users(testenv.ID(t, "old"), 150), "rq") // in the copy
	after := mk(users(testenv.ID(t, "new"), 300), "rq")  // answered after the copy: lost by it
	orig := map[string]string{}
	answer := func(reqs []claimReq) {
		t.Helper()
		for i, a := range f.claimAll(reqs, 32, 30*time.Second) {
			if a.Status != 200 || a.ClaimID == "" {
				t.Fatalf("claim %s before the fault: %d %+v", reqs[i].RequestID, a.Status, a)
			}
			orig[reqs[i].RequestID] = a.ClaimID
		}
	}
	answer(before)
	f.settled(cmp, 60*time.Second)
	time.Sleep(1500 * time.Millisecond) // everysec: the AOF on disk holds all of it
	copyDir := filepath.Join(t.TempDir(), "aof-copy")
	if out, err := exec.Command("cp", "-a", f.redis.dir, copyDir).CombinedOutput(); err != nil {
		t.Fatalf("copy the AOF: %v %s", err, out)
	}
	answer(after)
	f.settled(cmp, 60*time.Second) // every 200 is a row before Redis loses them
	oldRunID := runID(t, ctx, f.rdb)

	// The copy is older: its AOF never names a request answered after it was taken.
	holds := func(dir, s string) bool {
		return exec.Command("grep", "-rqF", s, dir).Run() == nil
	}
	if !holds(f.redis.dir, after[0].RequestID) || holds(copyDir, after[0].RequestID) || !holds(copyDir, before[0].RequestID) {
		t.Fatal("the AOF copy is not older than the last 200s (or the live AOF does not hold them)")
	}
	f.redis.p.Kill()
	if out, err := exec.Command("sh", "-c", `rm -rf "$1" && cp -a "$2" "$1"`, "sh", f.redis.dir, copyDir).CombinedOutput(); err != nil {
		t.Fatalf("restore the older AOF copy: %v %s", err, out)
	}
	f.redis.start()
	restarted := time.Now()
	if id := runID(t, ctx, f.rdb); id == oldRunID {
		t.Fatal("redis run id unchanged: it was not restarted")
	}

	// At once, on the rolled-back server: retries of every 200'd request_id, and a new
	// request_id for each user answered after the copy (its per-user count is rolled back).
	retries := append(append([]claimReq(nil), before...), after...)
	second := make([]claimReq, len(after))
	for i, r := range after {
		r.RequestID = "again-" + r.UserID
		second[i] = r
	}
	var wg sync.WaitGroup
	var ra, sa []claimResp
	wg.Go(func() { ra = f.claimAll(retries, 32, 60*time.Second) })
	wg.Go(func() { sa = f.claimAll(second, 32, 60*time.Second) })
	wg.Wait()
	t.Logf("retries answered within %s of the restart", time.Since(restarted).Round(time.Millisecond))

	var newIDs, wrong, second200 int
	for i, a := range ra {
		want := orig[retries[i].RequestID]
		switch {
		case a.Status == 200 && a.ClaimID != want:
			newIDs++
			if newIDs <= 5 {
				t.Errorf("retry of %s got claim %s, want its original %s", retries[i].RequestID, a.ClaimID, want)
			}
		case a.Status != 200:
			wrong++
			if wrong <= 5 {
				t.Errorf("retry of %s answered %d %+v, want 200 with claim %s", retries[i].RequestID, a.Status, a, want)
			}
		}
	}
	for i, a := range sa {
		if a.Status == 200 {
			second200++
			if second200 <= 5 {
				t.Errorf("user %s got a second voucher %s (request %s) after the rollback", second[i].UserID, a.ClaimID, second[i].RequestID)
			}
		} else if a.Status != 409 || a.Reason != "user_limit" {
			t.Errorf("second request of user %s answered %d %+v, want 409 user_limit", second[i].UserID, a.Status, a)
		}
	}
	t.Logf("%d retries: %d new claim_ids, %d not 200; %d second requests: %d got a voucher",
		len(ra), newIDs, wrong, len(sa), second200)

	// The sale goes on, and the books hold every 200 exactly once.
	fresh := f.claimAll(mk(users(testenv.ID(t, "late"), 20), "rq"), 8, 30*time.Second)
	for _, a := range fresh {
		if a.Status != 200 {
			t.Fatalf("a new user after the recovery: %d %+v", a.Status, a)
		}
		orig["late-"+a.ClaimID] = a.ClaimID
	}
	n := f.settled(cmp, 90*time.Second)
	rows := claimIDsInPG(t, f.pg, cmp)
	for req, id := range orig {
		if !rows[id] {
			t.Errorf("claim %s (%s) was answered 200 but is not in Postgres", id, req)
		}
	}
	if want := int64(len(before) + len(after) + len(fresh)); n != want {
		t.Errorf("rows %d, want %d (one per 200)", n, want)
	}
	var twice int
	if err := f.pg.QueryRow(ctx, `SELECT count(*) FROM (SELECT user_id FROM claims WHERE campaign_id = $1
		GROUP BY user_id HAVING count(*) > 1) x`, cmp).Scan(&twice); err != nil || twice != 0 {
		t.Errorf("%d users hold more than one voucher (%v)", twice, err)
	}
	if taken := f.hgetInt(rkeys.SKU(cmp, "rp-50"), "taken"); taken != n {
		t.Errorf("redis taken %d, rows %d after the recovery", taken, n)
	}
}
