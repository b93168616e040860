package claimer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/scripts"
)

const voidFailed = -1

// Metrics are the claimer's instruments, resolved when created so the hot path does no
// label lookups.
type Metrics struct {
	batchSize      prometheus.Histogram
	scriptSeconds  prometheus.Histogram
	produceSeconds prometheus.Histogram
	produceErrors  prometheus.Counter
	redisErrors    prometheus.Counter
	shed           prometheus.Counter
	queueExpired   prometheus.Counter
	marksDropped   prometheus.Counter
	markBatch      prometheus.Histogram
	ackTimeouts    prometheus.Counter
	inFlightWaits  prometheus.Counter
	voids          map[int]prometheus.Counter
	shortCircuited map[int]prometheus.Counter
	changes        prometheus.Counter
}

// NewMetrics registers the claimer's metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	voids := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashgate_gateway_voids_total",
		Help: "Compensations after a failed produce, by result: voided (given back), already, durable (the claim was in Kafka after all: answered 200), gone, failed (Redis down too).",
	}, []string{"result"})
	short := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashgate_claims_short_circuited_total",
		Help: "Claims answered without the claim script (the SKU known sold out, the campaign clearly not open by the Redis clock), by reason.",
	}, []string{"reason"})
	m := &Metrics{
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flashgate_gateway_script_batch_claims", Help: "Claims decided per claim-script call.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		scriptSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flashgate_gateway_script_seconds", Help: "Duration of one claim-script call, round trip included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}),
		produceSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flashgate_gateway_produce_seconds", Help: "Time from produce to the broker's acknowledgement (or failure) of an accepted claim.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		produceErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_gateway_produce_errors_total", Help: "Accepted claims whose produce to flash.claims failed."}),
		redisErrors:   prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_gateway_redis_errors_total", Help: "Failed Redis calls on the claim path."}),
		shed:          prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_gateway_shed_total", Help: "Claims refused with 503 because the queue in front of Redis was full."}),
		queueExpired:  prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_gateway_queue_expired_total", Help: "Claims answered 503 unrun because they waited in the queue longer than the Redis timeout (Redis stalled or far too slow)."}),
		markBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flashgate_gateway_durable_mark_batch", Help: "Durable marks written per durable.lua call.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		marksDropped:  prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_gateway_durable_marks_dropped_total", Help: "Durable marks not written after the broker's ack: the claim is voided and answered 503 (now, or by the settler or relay at its deadline)."}),
		inFlightWaits: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_gateway_in_flight_waits_total", Help: "Times a retry of a request_id whose first attempt was still in flight waited and asked again (the double tap), instead of answering 503 at once."}),
		ackTimeouts:   prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_gateway_ack_timeouts_total", Help: "Accepted claims voided because the broker did not acknowledge them within the ack timeout."}),
		voids: map[int]prometheus.Counter{
			scripts.VoidDone:      voids.WithLabelValues("voided"),
			scripts.VoidAlready:   voids.WithLabelValues("already"),
			scripts.VoidConfirmed: voids.WithLabelValues("durable"),
			scripts.VoidGone:      voids.WithLabelValues("gone"),
			voidFailed:            voids.WithLabelValues("failed"),
		},
		shortCircuited: map[int]prometheus.Counter{
			claim.CodeSoldOut:    short.WithLabelValues("sold_out"),
			claim.CodeNotStarted: short.WithLabelValues("not_started"),
			claim.CodeEnded:      short.WithLabelValues("ended"),
		},
		changes: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_gateway_change_messages_total",
			Help: "Campaign change messages received on fg:changes (each drops what the gateway concluded about the campaign)."}),
	}
	if reg != nil {
		reg.MustRegister(m.batchSize, m.scriptSeconds, m.produceSeconds, m.produceErrors, m.redisErrors, m.shed, m.queueExpired, m.marksDropped, m.markBatch, m.ackTimeouts, m.inFlightWaits, voids, short, m.changes)
	}
	return m
}
