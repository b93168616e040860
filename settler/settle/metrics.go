package settle

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the settler's instruments, resolved when created so the loop does no
// label lookups.
type Metrics struct {
	consumed      prometheus.Counter
	written       prometheus.Counter
	duplicates    prometheus.Counter
	confirmSkips  prometheus.Counter
	noTrace       prometheus.Counter
	decodeErrors  prometheus.Counter
	batchSeconds  prometheus.Histogram
	batchClaims   prometheus.Histogram
	pgErrors      prometheus.Counter
	redisConfirm  prometheus.Counter
	redisCleanup  prometheus.Counter
	commitErrors  prometheus.Counter
	fetchErrors   prometheus.Counter
	commitLag     prometheus.Gauge
	retrying      prometheus.Gauge
	retries       prometheus.Counter
	lastCommitted prometheus.Gauge
	// rejected counts records set aside on the rejected topic, by reason (reject.go).
	rejected     map[string]prometheus.Counter
	rejectErrors prometheus.Counter
	undecided    *undecidedMetrics // undecided.go
}

// NewMetrics registers the settler's metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	redisErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashgate_settler_redis_errors_total",
		Help: "Failed Redis calls, by stage: confirm (the batch is retried, offsets wait) or cleanup (outbox/inflight leftovers, tolerated).",
	}, []string{"stage"})
	m := &Metrics{
		consumed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashgate_settler_records_consumed_total", Help: "Records polled from flash.claims (redeliveries included).",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashgate_settler_claims_written_total", Help: "Claims inserted as new rows in Postgres (each with its reserve ledger entry).",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashgate_settler_duplicates_ignored_total", Help: "Claims to write that were already rows (redelivery), repeated within a batch, or whose request_id is already settled under another claim.",
		}),
		confirmSkips: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashgate_settler_confirm_skipped_total", Help: "Claims the confirm script said to skip: voided by the gateway, or the request_id now belongs to another claim.",
		}),
		noTrace: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashgate_settler_confirm_no_trace_total", Help: "Claims written although Redis had no idempotency record for them (expired or lost).",
		}),
		decodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashgate_settler_decode_errors_total", Help: "Records skipped because they do not decode as a claim (or could never be stored).",
		}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flashgate_settler_batch_seconds", Help: "Time to settle one batch: confirm, Postgres, cleanup and offset commit, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}),
		batchClaims: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flashgate_settler_batch_records", Help: "Records per settled batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13),
		}),
		pgErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashgate_settler_postgres_errors_total", Help: "Failed Postgres transactions (the batch is rolled back and retried; offsets wait).",
		}),
		redisConfirm: redisErrors.WithLabelValues("confirm"),
		redisCleanup: redisErrors.WithLabelValues("cleanup"),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashgate_settler_commit_errors_total", Help: "Failed offset commits (the batch is redelivered; its writes are idempotent).",
		}),
		fetchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashgate_settler_fetch_errors_total", Help: "Errors reported by polls of flash.claims.",
		}),
		commitLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flashgate_settler_commit_lag_seconds", Help: "At the last offset commit: now minus claimed_at of the newest claim written.",
		}),
		retrying: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flashgate_settler_retrying", Help: "1 while a batch is backing off after a Redis or Postgres failure (the settler is not ready).",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashgate_settler_batch_retries_total", Help: "Backoff waits before retrying a batch's confirm or write.",
		}),
		lastCommitted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flashgate_settler_last_commit_timestamp_seconds", Help: "Unix time of the last successful offset commit.",
		}),
	}
	rejectedVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashgate_settler_records_rejected_total",
		Help: "Records set aside on the rejected topic instead of settled, by reason (undecodable, bad_id, unknown_campaign, unknown_sku, business_line, value_mismatch, postgres_refused). Their offsets are committed.",
	}, []string{"reason"})
	m.rejected = make(map[string]prometheus.Counter, len(rejectReasons))
	for _, r := range rejectReasons {
		m.rejected[r] = rejectedVec.WithLabelValues(r)
	}
	m.rejectErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flashgate_settler_reject_errors_total", Help: "Failed produces to the rejected topic (retried; the poll's offsets wait).",
	})
	m.undecided = newUndecidedMetrics(reg)
	if reg != nil {
		reg.MustRegister(rejectedVec, m.rejectErrors)
		reg.MustRegister(m.consumed, m.written, m.duplicates, m.confirmSkips, m.noTrace, m.decodeErrors,
			m.batchSeconds, m.batchClaims, m.pgErrors, redisErrors, m.commitErrors, m.fetchErrors,
			m.commitLag, m.retrying, m.retries, m.lastCommitted)
	}
	return m
}
