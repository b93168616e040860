package api

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashgate/flashgate/internal/claim"
)

// Metrics count claim outcomes. Every label value is fixed ahead of time (one per
// outcome); no request value ever becomes a label.
type Metrics struct {
	byCode      map[int]prometheus.Counter
	unavailable prometheus.Counter
	invalid     prometheus.Counter
	// unauthenticated and mismatch count refused end-user tokens (auth.go).
	unauthenticated, mismatch prometheus.Counter
}

// NewMetrics registers the API's metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashgate_gateway_claims_total",
		Help: "Claim requests answered, by outcome (accepted, a rejection reason, invalid_request, unavailable, ...).",
	}, []string{"outcome"})
	m := &Metrics{byCode: make(map[int]prometheus.Counter, len(answers))}
	for code, a := range answers {
		m.byCode[code] = vec.WithLabelValues(a.label)
	}
	m.unavailable = vec.WithLabelValues(answerUnavailable.label)
	m.invalid = vec.WithLabelValues(labelInvalid)
	m.unauthenticated = vec.WithLabelValues("unauthenticated")
	m.mismatch = vec.WithLabelValues("user_mismatch")
	if reg != nil {
		reg.MustRegister(vec)
	}
	return m
}

func (m *Metrics) outcome(code int) prometheus.Counter {
	if c, ok := m.byCode[code]; ok {
		return c
	}
	return m.unavailable
}

func appendStr(buf []byte, s string) []byte { return claim.AppendString(buf, s) }
