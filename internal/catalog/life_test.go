package catalog_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/testenv"
)

func lifeBody(bl string, start time.Time, life, sku string) string {
	return fmt.Sprintf(`{"name":"life","business_line":%q,"starts_at":%q,"ends_at":%q,"per_user_limit":1,
		"budget":1000,"voucher_ttl":"72h",%s"skus":[{"sku":"rp-50","stock":10,"value":50%s}]}`,
		bl, start.UTC().Format(time.RFC3339), start.Add(time.Hour).UTC().Format(time.RFC3339), life, sku)
}

func TestLifeFieldsRefusedWhenBad(t *testing.T) {
	now := time.Now()
	for _, c := range []struct{ life, sku, field string }{
		{"", `,"min_spend":-1`, "skus[0].min_spend"},
		{"", `,"min_spend":"10"`, "skus.min_spend"},
		{"", `,"excluded_categories":["ok","bad one"]`, "skus[0].excluded_categories[1]"},
		{"", `,"excluded_categories":["a","a"]`, "skus[0].excluded_categories[1]"},
		{"", `,"excluded_categories":"a"`, "skus.excluded_categories"},
		{`"transferable":true,"max_transfers":-1,`, "", "max_transfers"},
		{`"transferable":true,"max_transfers":101,`, "", "max_transfers"},
		{`"max_transfers":2,`, "", "max_transfers"},
		{`"transferable":"yes",`, "", "transferable"},
	} {
		_, err := catalog.DecodeCampaign("c1", []byte(lifeBody("bl", now, c.life, c.sku)))
		var fe *catalog.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%s%s: %v; want a field error on %s", c.life, c.sku, err, c.field)
		}
	}
	if _, err := catalog.DecodeCampaign("c1", []byte(lifeBody("bl", now, `"transferable":true,"max_transfers":3,`,
		`,"min_spend":10000,"excluded_categories":["newbie"]`))); err != nil {
		t.Fatalf("good life fields refused: %v", err)
	}
}

// Before the start the life fields may change and are stored; after it they are frozen.
func TestLifeFieldsFrozenOnceStarted(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	bl := e.BusinessLine(1_000_000)
	id := testenv.ID(t, "lf")
	start := time.Now().Add(2 * time.Second)
	put := func(life, sku string) error {
		cp, err := catalog.DecodeCampaign(id, []byte(lifeBody(bl, start, life, sku)))
		if err != nil {
			t.Fatal(err)
		}
		return e.Cat.PutCampaign(ctx, cp)
	}
	if err := put("", ""); err != nil {
		t.Fatal(err)
	}
	if err := put(`"transferable":true,"max_transfers":3,`, `,"min_spend":10000,"excluded_categories":["newbie"]`); err != nil {
		t.Fatalf("change before the start: %v", err)
	}
	var tr bool
	var mt int
	var ms int64
	var ex []string
	if err := e.PG.QueryRow(ctx, `SELECT c.transferable, c.max_transfers, s.min_spend, s.excluded_categories
		FROM campaigns c JOIN campaign_skus s ON s.campaign_id = c.id WHERE c.id = $1`, id).Scan(&tr, &mt, &ms, &ex); err != nil {
		t.Fatal(err)
	}
	if !tr || mt != 3 || ms != 10000 || strings.Join(ex, ",") != "newbie" {
		t.Fatalf("stored %v %d %d %v", tr, mt, ms, ex)
	}
	time.Sleep(time.Until(start.Add(300 * time.Millisecond)))
	for _, c := range []struct{ life, sku, field string }{
		{`"transferable":true,"max_transfers":3,`, `,"min_spend":5000,"excluded_categories":["newbie"]`, "skus[0].min_spend"},
		{`"transferable":true,"max_transfers":3,`, `,"min_spend":10000`, "skus[0].excluded_categories"},
		{`"transferable":true,"max_transfers":2,`, `,"min_spend":10000,"excluded_categories":["newbie"]`, "max_transfers"},
		{``, `,"min_spend":10000,"excluded_categories":["newbie"]`, "transferable"},
	} {
		err := put(c.life, c.sku)
		var se *catalog.StartedError
		if !errors.As(err, &se) || se.Field != c.field {
			t.Errorf("after the start %s%s: %v; want StartedError on %s", c.life, c.sku, err, c.field)
		}
	}
	if err := put(`"transferable":true,"max_transfers":3,`, `,"min_spend":10000,"excluded_categories":["newbie"]`); err != nil {
		t.Fatalf("the same definition after the start: %v", err)
	}
	if err := e.PG.QueryRow(ctx, `SELECT s.min_spend FROM campaign_skus s WHERE s.campaign_id = $1`, id).Scan(&ms); err != nil || ms != 10000 {
		t.Fatalf("min_spend after refused changes: %d %v", ms, err)
	}
}
