package adapters

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"profiles/command-svc/internal/app"
)

// value returns the current value of a gauge or counter.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}

// The metered admission admits and refuses as the admission it wraps,
// gives each place back once, and counts both in its metrics.
func TestMeteredAdmission(t *testing.T) {
	a := NewMeteredAdmission(2)
	admitted, overloaded := writeAdmissions.WithLabelValues("admitted"), writeAdmissions.WithLabelValues("overloaded")
	inFlight0, admitted0, overloaded0 := value(t, writesInFlight), value(t, admitted), value(t, overloaded)
	check := func(step string, inFlight, nAdmitted, nOverloaded float64) {
		t.Helper()
		if got := value(t, writesInFlight) - inFlight0; got != inFlight {
			t.Fatalf("%s: in flight %v, want %v", step, got, inFlight)
		}
		if got := value(t, admitted) - admitted0; got != nAdmitted {
			t.Fatalf("%s: admitted %v, want %v", step, got, nAdmitted)
		}
		if got := value(t, overloaded) - overloaded0; got != nOverloaded {
			t.Fatalf("%s: overloaded %v, want %v", step, got, nOverloaded)
		}
		if got := a.Next.(*app.Admission).InFlight(); float64(got) != inFlight {
			t.Fatalf("%s: the admission has %d in flight, want %v", step, got, inFlight)
		}
	}
	if value(t, writesInFlightLimit) != 2 {
		t.Fatalf("limit gauge %v, want 2", value(t, writesInFlightLimit))
	}
	r1, err := a.Admit()
	if err != nil {
		t.Fatal(err)
	}
	r2, err := a.Admit()
	if err != nil {
		t.Fatal(err)
	}
	check("two admitted", 2, 2, 0)
	if _, err := a.Admit(); !errors.Is(err, app.ErrOverloaded) {
		t.Fatalf("third admit: %v, want ErrOverloaded", err)
	}
	check("one refused", 2, 2, 1)
	r1()
	r1()
	check("one released twice", 1, 2, 1)
	r2()
	check("both released", 0, 2, 1)
}
