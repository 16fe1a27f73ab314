package adapters

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/command-svc/internal/app"
)

var (
	writesInFlight = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "profiles_command_writes_in_flight",
		Help: "Writes (POST, PUT, DELETE) admitted on this instance whose appends are not over yet: waiting for their profile's lock, decided, queued or committing.",
	})
	writesInFlightLimit = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "profiles_command_writes_in_flight_limit",
		Help: "MAX_INFLIGHT_WRITES: the most writes in flight at once; beyond it a write is answered 503 overloaded (0: no limit).",
	})
	writeAdmissions = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "profiles_command_write_admissions_total",
		Help: "Writes by admission: admitted, or overloaded (refused at once with 503 and Retry-After because MAX_INFLIGHT_WRITES were in flight; nothing was written).",
	}, []string{"result"})
)

// MeteredAdmission is an app.Admitter that exports what Next admits and
// refuses to Prometheus: profiles_command_writes_in_flight and
// profiles_command_write_admissions_total{result=admitted|overloaded}.
type MeteredAdmission struct {
	Next app.Admitter
}

// NewMeteredAdmission returns an app.Admission of at most limit writes in
// flight (see app.NewAdmission), metered; it sets
// profiles_command_writes_in_flight_limit.
func NewMeteredAdmission(limit int) MeteredAdmission {
	a := app.NewAdmission(limit)
	writesInFlightLimit.Set(float64(a.Limit()))
	return MeteredAdmission{Next: a}
}

// Admit implements app.Admitter.
func (m MeteredAdmission) Admit() (func(), error) {
	next, err := m.Next.Admit()
	if err != nil {
		if errors.Is(err, app.ErrOverloaded) {
			writeAdmissions.WithLabelValues("overloaded").Inc()
		}
		return nil, err
	}
	writeAdmissions.WithLabelValues("admitted").Inc()
	writesInFlight.Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			writesInFlight.Dec()
			next()
		})
	}, nil
}
