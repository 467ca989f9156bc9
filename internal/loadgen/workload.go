package loadgen

import (
	"time"

	"github.com/clerksync/clerksync/internal/clerkgen"
)

// ResendRatio is the share of deliveries that repeat an earlier svix-id, as Svix does when it
// retries a webhook whose answer it did not see.
const ResendRatio = 0.1

// Delivery is one webhook of a workload.
type Delivery struct {
	ID     string // svix-id; a resend repeats an earlier one
	Type   string
	UserID string
	Resend bool
	Body   []byte
}

// Workload is a realistic Clerk history cut to a number of deliveries: users created, updated
// and deleted, some events delivered late, ~10% resent.
type Workload struct {
	Seed       uint64
	Deliveries []Delivery
}

// NewWorkload generates n deliveries from seed; the same seed and n give the same bytes.
func NewWorkload(seed uint64, n int) Workload {
	w := Workload{Seed: seed}
	if n <= 0 {
		return w
	}
	// A user makes about 2.7 events (a create, 0–3 updates, a delete for one in five) and
	// resends add a tenth: ask for a few more users than that needs, and cut.
	users := n/2 + 1
	for {
		o := clerkgen.DefaultHistoryOptions(seed, users)
		o.ResendRatio = ResendRatio
		h := clerkgen.NewHistory(o)
		if len(h.Events) >= n {
			w.Deliveries = make([]Delivery, n)
			for i, e := range h.Events[:n] {
				w.Deliveries[i] = Delivery{ID: e.ID, Type: e.Type, UserID: e.UserID, Resend: e.Resend, Body: e.Body()}
			}
			return w
		}
		users *= 2
	}
}

// Unique returns the number of distinct svix-ids.
func (w Workload) Unique() int {
	n := 0
	for _, d := range w.Deliveries {
		if !d.Resend {
			n++
		}
	}
	return n
}

// Bytes is the total size of the bodies.
func (w Workload) Bytes() int {
	n := 0
	for _, d := range w.Deliveries {
		n += len(d.Body)
	}
	return n
}

// seedNow is a seed that differs from run to run, so a second run against the same stack does
// not replay the svix-ids of the first (which ingest and the worker would rightly skip).
func seedNow() uint64 { return uint64(time.Now().UnixNano()) } //nolint:gosec // G115: a seed; any bit pattern will do
