package settle

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/claim"
)

// item is one decoded claim of a batch and where it sits in Kafka.
type item struct {
	rec       claim.Record
	partition int32
	offset    int64
	// code is confirm.lua's answer for the claim (scripts.Confirm*), set once per batch.
	code int
	// src is the Kafka record the claim was decoded from (set aside as is if rejected).
	src *kgo.Record
	// refused is set when Postgres refused the claim for good (reject.go): it was not
	// written and is set aside with its poll.
	refused error
}

// campaignBatch is one campaign's share of a batch: the unit of a confirm script call
// (its keys share the campaign's hash tag) and of the cleanup.
type campaignBatch struct {
	campaign string
	items    []*item
}

// errUnwritable marks a record that decodes but that Postgres could never store. Such
// a record would fail its batch's transaction on every retry and stall its partition
// forever, so it is treated like a record that does not decode.
var errUnwritable = errors.New("claim record: not storable")

// maxStorableMs is 9999-12-31T23:59:59Z: beyond it a timestamptz column refuses the value.
var maxStorableMs = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC).UnixMilli()

// decode parses one record value and checks Postgres can store it.
func decode(value []byte) (claim.Record, error) {
	r, err := claim.Decode(value)
	if err != nil {
		return r, err
	}
	// Postgres text cannot hold NUL; JSON can ("\u0000").
	for _, f := range [...]struct{ name, v string }{
		{"claim_id", r.ClaimID}, {"request_id", r.RequestID}, {"campaign_id", r.CampaignID},
		{"business_line", r.BusinessLine}, {"sku", r.SKU}, {"user_id", r.UserID},
		{"device_id", r.DeviceID}, {"ip", r.IP}, {"outbox_id", r.OutboxID},
	} {
		if strings.IndexByte(f.v, 0) >= 0 {
			return r, fmt.Errorf("%w: %s contains a NUL byte", errUnwritable, f.name)
		}
	}
	if r.ExpiresAtMs > maxStorableMs {
		return r, fmt.Errorf("%w: expires_at_ms=%d is past year 9999", errUnwritable, r.ExpiresAtMs)
	}
	return r, nil
}

// group splits a batch's claims by campaign, in the order each campaign first appears,
// keeping each campaign's claims in offset order. A claim_id seen twice in one batch (a
// redelivery landing next to the original) is kept once, at its first position: the
// confirm script and the insert then see each claim once.
func group(items []*item) []campaignBatch {
	var out []campaignBatch
	idx := make(map[string]int, 4)
	seen := make(map[string]struct{}, len(items))
	for _, it := range items {
		if _, dup := seen[it.rec.ClaimID]; dup {
			continue
		}
		seen[it.rec.ClaimID] = struct{}{}
		i, ok := idx[it.rec.CampaignID]
		if !ok {
			i = len(out)
			idx[it.rec.CampaignID] = i
			out = append(out, campaignBatch{campaign: it.rec.CampaignID})
		}
		out[i].items = append(out[i].items, it)
	}
	return out
}
