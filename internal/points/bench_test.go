package points_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/flashgate/flashgate/internal/points"
	"github.com/flashgate/flashgate/internal/testenv"
)

// BenchmarkGrant: accepted grants per second through the record and the hot balance
// (one Postgres transaction and one script call each), users spread so the per-user
// lock does not serialise them. Measure on a quiet machine only.
func BenchmarkGrant(b *testing.B) {
	pg, rdb := testenv.PG(b), testenv.Redis(b)
	svc, err := points.New(pg, rdb, points.Config{DailyCap: points.MaxAmount})
	if err != nil {
		b.Fatal(err)
	}
	task := testenv.ID(b, "bench")
	res, err := svc.PutTask(context.Background(), task, &points.TaskPut{Name: "bench", PerGrantMax: 100,
		PerUserDailyMax: points.MaxAmount, Lifetime: "720h"})
	if err != nil {
		b.Fatal(err)
	}
	key, run := []byte(res.Key), testenv.ID(b, "r")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(p *testing.PB) {
		i := 0
		w := testenv.ID(b, "w")
		for p.Next() {
			i++
			id := run + "-" + w + "-" + strconv.Itoa(i)
			if _, err := svc.Grant(context.Background(), key, &points.GrantReq{UserID: w + "-" + strconv.Itoa(i%64),
				Task: task, Amount: 10, GrantID: id}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkReserveGiveBack: the user's-slot half of a points_item claim (two script
// calls), the cost a points_item claim adds to a voucher claim.
func BenchmarkReserveGiveBack(b *testing.B) {
	pg, rdb := testenv.PG(b), testenv.Redis(b)
	svc, err := points.New(pg, rdb, points.Config{})
	if err != nil {
		b.Fatal(err)
	}
	user, c := testenv.ID(b, "u"), testenv.ID(b, "c")
	if err := svc.Rebuild(context.Background(), user); err != nil {
		b.Fatal(err)
	}
	if err := rdb.HSet(context.Background(), "fg:{u:"+user+"}:pts", "bal", 1_000_000).Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := c + ":" + strconv.Itoa(i)
		if got, err := svc.Reserve(context.Background(), user, r, "b", 10); err != nil || got != points.Reserved {
			b.Fatal(got, err)
		}
		if _, err := svc.GiveBack(context.Background(), user, r, "b"); err != nil {
			b.Fatal(err)
		}
	}
}
