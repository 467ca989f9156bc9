package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/clerksync/clerksync/internal/clerkgen"
)

// The reference is written from the contract and clerkgen's final states, not from the worker's
// code: each table's rows rendered as one line per user, keyed by clerk_user_id, wall-clock
// columns (created_at, updated_at, started_at, canceled_at's value, processed_at) left out.
type tables map[string]map[string]string // table → clerk_user_id → row

var tableNames = []string{"users", "subscriptions", "usage_metrics"}

// expected is what the projection must hold after every event of h has been applied, whatever
// the order and repetitions.
func expected(h clerkgen.History) (tables, error) {
	// The winning version of a live user is the event that carried its final state.
	winner := map[string]clerkgen.Event{}
	for _, e := range h.Events {
		if e.Type != clerkgen.UserDeleted && !e.Resend {
			if w, ok := winner[e.UserID]; !ok || e.At.After(w.At) {
				winner[e.UserID] = e
			}
		}
	}
	t := tables{"users": {}, "subscriptions": {}, "usage_metrics": {}}
	for _, st := range h.Users {
		id := st.User.ID
		userID := uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+id))
		subID := uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+id+":subscription"))
		if st.Deleted {
			t["users"][id] = line(userID, nil, nil, nil, nil, nil, nil, nil, nil, nil, st.DeletedAt)
			t["subscriptions"][id] = line(subID, userID, "free", "canceled", true)
			t["usage_metrics"][id] = line(userID, nil, 0, 0)
			continue
		}
		w, ok := winner[id]
		if !ok || !w.At.Equal(st.User.UpdatedAt) {
			return nil, fmt.Errorf("soak: reference: no event carries user %s's final version", id)
		}
		var env struct{ Data json.RawMessage }
		if err := json.Unmarshal(w.Body(), &env); err != nil {
			return nil, fmt.Errorf("soak: reference: %w", err)
		}
		data, err := canonicalJSON(env.Data)
		if err != nil {
			return nil, err
		}
		u := st.User
		t["users"][id] = line(userID, u.Email, u.Username, u.FirstName, u.LastName, u.ImageURL, data,
			u.CreatedAt, u.UpdatedAt, w.ID, nil)
		t["subscriptions"][id] = line(subID, userID, "free", "active", false)
		t["usage_metrics"][id] = line(userID, u.CreatedAt, 0, 0)
	}
	return t, nil
}

// actual reads the three tables in the reference's shape.
func actual(ctx context.Context, conn *pgx.Conn) (tables, error) {
	t := tables{}
	queries := map[string]string{
		"users": `SELECT u.clerk_user_id, u.user_id, u.email, u.username, u.first_name, u.last_name, u.image_url,
			u.clerk_data, u.clerk_created_at, u.clerk_updated_at, u.version_event_id, u.deleted_at FROM users u`,
		"subscriptions": `SELECT u.clerk_user_id, s.subscription_id, s.user_id, s.tier, s.status, s.canceled_at IS NOT NULL
			FROM subscriptions s LEFT JOIN users u USING (user_id)`,
		"usage_metrics": `SELECT u.clerk_user_id, m.user_id, m.period_start, m.api_calls, m.campaigns
			FROM usage_metrics m LEFT JOIN users u USING (user_id)`,
	}
	for _, name := range tableNames {
		rows, err := conn.Query(ctx, queries[name])
		if err != nil {
			return nil, fmt.Errorf("soak: reading %s: %w", name, err)
		}
		t[name] = map[string]string{}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("soak: reading %s: %w", name, err)
			}
			key, _ := vals[0].(string)
			for i, v := range vals {
				switch v := v.(type) {
				case [16]byte:
					vals[i] = uuid.UUID(v)
				case map[string]any: // jsonb
					b, err := json.Marshal(v)
					if err != nil {
						rows.Close()
						return nil, fmt.Errorf("soak: reading %s: %w", name, err)
					}
					if vals[i], err = canonicalJSON(b); err != nil {
						rows.Close()
						return nil, err
					}
				}
			}
			if _, dup := t[name][key]; dup || key == "" {
				key = fmt.Sprintf("%s#%d", key, len(t[name])) // an orphan or a second row: a difference
			}
			t[name][key] = line(vals[1:]...)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("soak: reading %s: %w", name, err)
		}
	}
	return t, nil
}

// diff returns the number of differing rows per table (missing, extra or changed) and up to
// max examples.
func diff(want, got tables, max int) (map[string]int, []string) {
	counts := map[string]int{}
	var examples []string
	for _, name := range tableNames {
		keys := maps.Keys(want[name])
		all := slices.Sorted(keys)
		for k := range got[name] {
			if _, ok := want[name][k]; !ok {
				all = append(all, k)
			}
		}
		for _, k := range all {
			w, inWant := want[name][k]
			g, inGot := got[name][k]
			if inWant && inGot && w == g {
				continue
			}
			counts[name]++
			if len(examples) < max {
				examples = append(examples, fmt.Sprintf("%s %s:\n  want %s\n  got  %s", name, k, orMissing(w, inWant), orMissing(g, inGot)))
			}
		}
	}
	return counts, examples
}

func orMissing(s string, ok bool) string {
	if !ok {
		return "(no row)"
	}
	return s
}

// line renders column values comparably: NULL for nil pointers, times in UTC.
func line(vals ...any) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = render(v)
	}
	return strings.Join(parts, " | ")
}

func render(v any) string {
	switch v := v.(type) {
	case nil:
		return "NULL"
	case *string:
		if v == nil {
			return "NULL"
		}
		return fmt.Sprintf("%q", *v)
	case string:
		return fmt.Sprintf("%q", v)
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	case jsonText:
		return string(v)
	case int:
		return fmt.Sprint(v)
	case int32:
		return fmt.Sprint(v)
	case int64:
		return fmt.Sprint(v)
	default:
		return fmt.Sprint(v)
	}
}

// jsonText is JSON in a canonical form (object keys sorted, numbers as written).
type jsonText string

func canonicalJSON(b []byte) (jsonText, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return "", fmt.Errorf("soak: decoding clerk_data: %w", err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("soak: encoding clerk_data: %w", err)
	}
	return jsonText(out), nil
}
