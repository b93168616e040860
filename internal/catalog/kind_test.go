package catalog_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/testenv"
)

func kindBody(bl string, starts, ends time.Time, kind, skus string) []byte {
	b := string(campaignBody(bl, starts, ends, 1000, skus))
	if kind != "" {
		b = strings.Replace(b, `{"name"`, `{"kind":"`+kind+`","name"`, 1)
	}
	return []byte(b)
}

// Redemption kinds (issue 16): kind and a SKU's points price are checked against each
// other (400 naming the field), stored, and frozen once the campaign has started.
func TestPointsItemKind(t *testing.T) {
	// The gate still refuses points_item when a deployment turns it off.
	catalog.AcceptPointsItems = false
	if _, err := catalog.DecodeCampaign("c1", kindBody("bl", time.Now().Add(time.Hour), time.Now().Add(2*time.Hour), "points_item",
		`[{"sku":"a","stock":1,"value":1,"points":5}]`)); !errors.As(err, new(*catalog.FieldError)) || !strings.Contains(err.Error(), "kind") {
		t.Fatalf("points_item with the gate off: %v, want 400 naming kind", err)
	}
	catalog.AcceptPointsItems = true
	starts, ends := time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
	for _, tc := range []struct{ kind, skus, field string }{
		{"", `[{"sku":"a","stock":1,"value":10,"points":500}]`, "skus[0].points"},
		{"voucher", `[{"sku":"a","stock":1,"value":10,"points":500}]`, "skus[0].points"},
		{"points_item", `[{"sku":"a","stock":1,"value":10}]`, "skus[0].points"},
		{"points_item", `[{"sku":"a","stock":1,"value":10,"points":0}]`, "skus[0].points"},
		{"points_item", `[{"sku":"a","stock":1,"value":-1,"points":5}]`, "skus[0].value"},
		{"bananas", `[{"sku":"a","stock":1,"value":10}]`, "kind"},
	} {
		_, err := catalog.DecodeCampaign("c1", kindBody("bl", starts, ends, tc.kind, tc.skus))
		var fe *catalog.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("kind %q skus %s: %v, want a FieldError naming %s", tc.kind, tc.skus, err, tc.field)
		}
	}
	if _, err := catalog.DecodeCampaign("c1", kindBody("bl", starts, ends, "points_item", `[{"sku":"a","stock":1,"value":1,"points":500}]`)); err != nil {
		t.Fatalf("a points_item SKU: %v", err)
	}

	e := testenv.New(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	bl := e.BusinessLine(1_000_000)
	id := testenv.ID(t, "pmall")
	started, ends := time.Now().Add(-time.Minute).Truncate(time.Millisecond), time.Now().Add(time.Hour).Truncate(time.Millisecond)
	skus := `[{"sku":"mug","stock":100,"value":1,"points":500}]`
	if err := put(t, e.Cat, id, kindBody(bl, started, ends, "points_item", skus)); err != nil {
		t.Fatal(err)
	}
	var kind string
	var pts int64
	if err := e.PG.QueryRow(ctx, `SELECT c.kind, s.points FROM campaigns c JOIN campaign_skus s ON s.campaign_id = c.id
		WHERE c.id = $1`, id).Scan(&kind, &pts); err != nil || kind != "points_item" || pts != 500 {
		t.Fatalf("stored %q %d (%v), want points_item 500", kind, pts, err)
	}
	for _, tc := range []struct{ field, kind, skus string }{
		{"skus[0].points", "points_item", `[{"sku":"mug","stock":100,"value":1,"points":400}]`},
		{"kind", "voucher", `[{"sku":"mug","stock":100,"value":1}]`},
	} {
		err := put(t, e.Cat, id, kindBody(bl, started, ends, tc.kind, tc.skus))
		var se *catalog.StartedError
		if !errors.As(err, &se) || se.Field != tc.field {
			t.Errorf("change of %s after the start: %v, want a StartedError naming it", tc.field, err)
		}
	}
	if err := put(t, e.Cat, id, kindBody(bl, started, ends, "points_item", `[{"sku":"mug","stock":120,"value":1,"points":500}]`)); err != nil {
		t.Fatalf("stock change after the start: %v", err)
	}
}
