package clerkgen

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"time"
)

// HistoryOptions shapes a generated history. The zero value of a ratio or delay turns that
// behaviour off; DefaultHistoryOptions gives realistic ones.
type HistoryOptions struct {
	Seed  uint64
	Users int
	// MaxUpdates: each user gets between 0 and MaxUpdates user.updated events.
	MaxUpdates int
	// DeleteRatio is the share of users deleted after their last update.
	DeleteRatio float64
	// ResendRatio is the share of events delivered a second time later, with the same svix-id
	// and body, as Svix does when it retries.
	ResendRatio float64
	// ReorderRatio is the share of events held back by up to MaxDelay, so that they arrive
	// after later events (a user.updated before its user.created, say).
	ReorderRatio float64
	MaxDelay     time.Duration
	// Start is when the first user is created; users are created over Span.
	Start time.Time
	Span  time.Duration
}

// DefaultHistoryOptions returns a history of users like a busy Clerk instance sends: up to 3
// updates each, ~20% deleted, 5% of events resent, 10% delayed by up to half an hour.
func DefaultHistoryOptions(seed uint64, users int) HistoryOptions {
	return HistoryOptions{
		Seed:         seed,
		Users:        users,
		MaxUpdates:   3,
		DeleteRatio:  0.2,
		ResendRatio:  0.05,
		ReorderRatio: 0.1,
		MaxDelay:     30 * time.Minute,
		Start:        time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		Span:         time.Hour,
	}
}

// History is a generated stream of user events and the state it must converge to.
type History struct {
	// Events in delivery order, resends included.
	Events []Event
	// Users is the final state of each user, in creation order: what the projection must hold
	// whatever order the events are applied in.
	Users []UserState
}

// Event is one webhook delivery.
type Event struct {
	ID     string // svix-id; a resend repeats it
	Type   string
	UserID string
	// At is the event's envelope timestamp: when it happened at Clerk.
	At time.Time
	// DeliverAt is when Svix delivers it: At, later for a delayed event or a resend.
	DeliverAt time.Time
	// Resend marks a repeated delivery of an earlier event.
	Resend bool
	user   User
}

// Body is the event's payload, byte for byte the same for a resend.
func (e Event) Body() []byte {
	return mustPayload(e.Type, e.user, e.At)
}

// UserState is a user's final state.
type UserState struct {
	// User is the user's last version (for a deleted user, the last before the deletion).
	User      User
	Deleted   bool
	DeletedAt time.Time // the delete event's timestamp
}

// HistoryStats counts what makes a history hard to apply.
type HistoryStats struct {
	Events, Resends, Deleted int
	// OutOfOrder counts deliveries that arrive after a later event of the same user.
	OutOfOrder int
}

// NewHistory generates a history from o; the same options give the same history.
func NewHistory(o HistoryOptions) History {
	r := rand.New(rand.NewPCG(o.Seed, 0x636c65726b67656e)) // "clerkgen"
	var h History
	var events []Event
	for i := range o.Users {
		created := o.Start
		if o.Users > 0 && o.Span > 0 {
			created = created.Add(o.Span * time.Duration(i) / time.Duration(o.Users))
		}
		u := NewUser(r, "", created)
		events = append(events, Event{ID: NewMessageID(r), Type: UserCreated, UserID: u.ID, At: u.UpdatedAt, user: u})
		for range r.IntN(o.MaxUpdates + 1) {
			u = u.Updated(r, u.UpdatedAt.Add(gap(r)))
			events = append(events, Event{ID: NewMessageID(r), Type: UserUpdated, UserID: u.ID, At: u.UpdatedAt, user: u})
		}
		state := UserState{User: u}
		if r.Float64() < o.DeleteRatio {
			state.Deleted, state.DeletedAt = true, u.UpdatedAt.Add(gap(r))
			events = append(events, Event{ID: NewMessageID(r), Type: UserDeleted, UserID: u.ID, At: state.DeletedAt, user: User{ID: u.ID}})
		}
		h.Users = append(h.Users, state)
	}

	retries := []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute} // Svix's first retries
	for _, e := range events {
		e.DeliverAt = e.At
		if o.MaxDelay > 0 && r.Float64() < o.ReorderRatio {
			e.DeliverAt = e.At.Add(time.Millisecond + time.Duration(r.Int64N(int64(o.MaxDelay))))
		}
		h.Events = append(h.Events, e)
		if r.Float64() < o.ResendRatio {
			again := e
			again.Resend = true
			again.DeliverAt = e.DeliverAt.Add(retries[r.IntN(len(retries))])
			h.Events = append(h.Events, again)
		}
	}
	slices.SortStableFunc(h.Events, func(a, b Event) int {
		return cmp.Or(a.DeliverAt.Compare(b.DeliverAt), a.At.Compare(b.At), cmp.Compare(a.ID, b.ID))
	})
	return h
}

// gap is the time between two events of one user: a second to ten minutes, in whole
// milliseconds like Clerk's times.
func gap(r *rand.Rand) time.Duration {
	return time.Second + time.Duration(r.Int64N(int64(10*time.Minute/time.Millisecond)))*time.Millisecond
}

// Stats counts the history's resends, deletes and out-of-order deliveries.
func (h History) Stats() HistoryStats {
	s := HistoryStats{Events: len(h.Events)}
	latest := make(map[string]time.Time, len(h.Users))
	for _, e := range h.Events {
		if e.Resend {
			s.Resends++
		}
		if e.At.Before(latest[e.UserID]) {
			s.OutOfOrder++
		} else {
			latest[e.UserID] = e.At
		}
	}
	for _, u := range h.Users {
		if u.Deleted {
			s.Deleted++
		}
	}
	return s
}
