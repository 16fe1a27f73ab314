package lincheck

import (
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// History is a record of operations. It is safe for concurrent use. The
// zero value is not usable: make one with NewHistory.
type History struct {
	start time.Time

	mu  sync.Mutex
	ops []porcupine.Operation
}

// NewHistory returns an empty history whose clock starts now. Times are
// taken from the monotonic clock, so a wall-clock jump does not reorder
// operations.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the history's clock: the time to pass as an operation's call or
// return.
func (h *History) Now() int64 { return h.At(time.Now()) }

// At is t on the history's clock.
func (h *History) At(t time.Time) int64 { return int64(t.Sub(h.start)) }

// Add records an operation of client, called at call and answered at ret
// (both from Now). An operation whose Status is Unknown is given a return
// at the end of time, whatever ret says, and a read with Status Unknown is
// dropped: it observed nothing.
func (h *History) Add(client int, in Input, call int64, out Output, ret int64) {
	if out.Status == Unknown {
		if in.Kind == Get {
			return
		}
		ret = math.MaxInt64
	}
	h.mu.Lock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	h.mu.Unlock()
}

// Operations returns a copy of the recorded operations.
func (h *History) Operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]porcupine.Operation(nil), h.ops...)
}

// Result is the verdict on a history.
type Result struct {
	// Ops counts the operations checked, Unknown those among them whose
	// outcome was unknown, and Profiles the registers.
	Ops, Unknown, Profiles int
	// ByKind counts the operations of each kind with a known outcome, by
	// status: "put 200", "get 404", ...
	ByKind map[string]int
	// Illegal lists the uids whose history no order explains, and
	// TimedOut those the checker could not decide within its budget.
	Illegal, TimedOut []string
	// Detail shows each illegal uid's operations in call order.
	Detail string
}

// Ok reports whether every profile's history was shown linearizable.
func (r Result) Ok() bool { return len(r.Illegal) == 0 && len(r.TimedOut) == 0 }

func (r Result) String() string {
	kinds := make([]string, 0, len(r.ByKind))
	for k, n := range r.ByKind {
		kinds = append(kinds, fmt.Sprintf("%s: %d", k, n))
	}
	sort.Strings(kinds)
	verdict := "linearizable"
	switch {
	case len(r.Illegal) > 0:
		verdict = fmt.Sprintf("NOT linearizable (%d profiles: %s)", len(r.Illegal), strings.Join(r.Illegal, ", "))
	case len(r.TimedOut) > 0:
		verdict = fmt.Sprintf("undecided (checker timed out on %d profiles)", len(r.TimedOut))
	}
	return fmt.Sprintf("%s: %d operations on %d profiles, %d with unknown outcome [%s]",
		verdict, r.Ops, r.Profiles, r.Unknown, strings.Join(kinds, ", "))
}

// Check verifies the history profile by profile, giving each at most
// timeout. When a profile's history is not linearizable and visualize is
// not empty, porcupine's HTML view of it is written there (one file for
// the whole history).
func (h *History) Check(timeout time.Duration, visualize string) (Result, error) {
	ops := h.Operations()
	res := Result{Ops: len(ops), ByKind: map[string]int{}}
	byUID := map[string][]porcupine.Operation{}
	for _, op := range ops {
		in, out := op.Input.(Input), op.Output.(Output)
		byUID[in.UID] = append(byUID[in.UID], op)
		if out.Status == Unknown {
			res.Unknown++
		} else {
			res.ByKind[fmt.Sprintf("%s %d", in.Kind, out.Status)]++
		}
	}
	res.Profiles = len(byUID)
	uids := make([]string, 0, len(byUID))
	for uid := range byUID {
		uids = append(uids, uid)
	}
	sort.Strings(uids)
	var detail strings.Builder
	for _, uid := range uids {
		switch porcupine.CheckOperationsTimeout(Model, byUID[uid], timeout) {
		case porcupine.Illegal:
			res.Illegal = append(res.Illegal, uid)
			writeOps(&detail, uid, byUID[uid])
		case porcupine.Unknown:
			res.TimedOut = append(res.TimedOut, uid)
		}
	}
	res.Detail = detail.String()
	if len(res.Illegal) > 0 && visualize != "" {
		_, info := porcupine.CheckOperationsVerbose(Model, ops, timeout)
		f, err := os.Create(visualize)
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := porcupine.Visualize(Model, info, f); err != nil {
			return res, err
		}
	}
	return res, nil
}

// writeOps lists one profile's operations in call order, with times in
// milliseconds since the history began.
func writeOps(b *strings.Builder, uid string, ops []porcupine.Operation) {
	ops = append([]porcupine.Operation(nil), ops...)
	sort.Slice(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	fmt.Fprintf(b, "profile %s:\n", uid)
	for _, op := range ops {
		ret := "end"
		if op.Return != math.MaxInt64 {
			ret = fmt.Sprintf("%.1f", float64(op.Return)/1e6)
		}
		fmt.Fprintf(b, "  client %2d  [%9.1f, %9s] ms  %s\n", op.ClientId, float64(op.Call)/1e6, ret,
			describe(op.Input.(Input), op.Output.(Output)))
	}
}

// Model is the porcupine model of the profiles API: one register per uid.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byUID := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			uid := op.Input.(Input).UID
			if _, ok := byUID[uid]; !ok {
				order = append(order, uid)
			}
			byUID[uid] = append(byUID[uid], op)
		}
		parts := make([][]porcupine.Operation, 0, len(order))
		for _, uid := range order {
			parts = append(parts, byUID[uid])
		}
		return parts
	},
	Init: func() any { return state{} },
	Step: func(s, in, out any) (bool, any) {
		ok, next := step(s.(state), in.(Input), out.(Output))
		return ok, next
	},
	Equal:             func(a, b any) bool { return a.(state) == b.(state) },
	DescribeOperation: func(in, out any) string { return describe(in.(Input), out.(Output)) },
	DescribeState:     func(s any) string { return s.(state).String() },
}
