package clerkapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clerksync/clerksync/internal/clerkapi"
	"github.com/clerksync/clerksync/internal/clerkapi/clerkapitest"
)

const key = "sk_test_NEVERLOGGEDxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

// newClient is a client of srv with short back-offs, counting the errors it reports.
func newClient(t *testing.T, srv *clerkapitest.Server, mutate ...func(*clerkapi.Config)) (*clerkapi.Client, *errorCounts) {
	t.Helper()
	counts := &errorCounts{m: map[string]int{}}
	cfg := clerkapi.Config{URL: srv.URL, SecretKey: key, Rate: 1000, Timeout: 2 * time.Second,
		Backoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, OnError: counts.add}
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := clerkapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, counts
}

type errorCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (e *errorCounts) add(status string) { e.mu.Lock(); e.m[status]++; e.mu.Unlock() }
func (e *errorCounts) get(status string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.m[status]
}

// fill puts n users in the fake, created in order, and returns them as served.
func fill(t *testing.T, f *clerkapitest.Fake, n int) []json.RawMessage {
	t.Helper()
	users := make([]json.RawMessage, n)
	for i := range n {
		users[i] = clerkapitest.NewUser(fmt.Sprintf("user_%05d", i), 1700000000000+int64(i/3), 1700000000000+int64(i), "U")
		if err := f.Put(users[i]); err != nil {
			t.Fatal(err)
		}
	}
	return users
}

func listAll(c *clerkapi.Client) (pages [][]clerkapi.User, err error) {
	err = c.ListUsers(context.Background(), func(p []clerkapi.User) error {
		pages = append(pages, p)
		return nil
	})
	return pages, err
}

func TestListUsersPages(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 499, 500, 1001} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			srv := clerkapitest.New(t, key)
			want := fill(t, srv.Fake, n)
			c, _ := newClient(t, srv)
			pages, err := listAll(c)
			if err != nil {
				t.Fatal(err)
			}
			// A page shorter than 500 is the last: n/500+1 pages, even when n is a multiple.
			if len(pages) != n/500+1 || srv.Requests() != int64(n/500+1) {
				t.Errorf("%d pages in %d requests, want %d", len(pages), srv.Requests(), n/500+1)
			}
			var got []clerkapi.User
			for _, p := range pages {
				got = append(got, p...)
			}
			if len(got) != n {
				t.Fatalf("%d users, want %d", len(got), n)
			}
			for i, u := range got {
				if !bytes.Equal(u.Raw, want[i]) || u.ID != fmt.Sprintf("user_%05d", i) || u.UpdatedAt != 1700000000000+int64(i) {
					t.Fatalf("user %d: %s %d %s", i, u.ID, u.UpdatedAt, u.Raw)
				}
			}
		})
	}
}

// TestRawBytesAsServed: a user's bytes reach the caller exactly as the API wrote them, spacing,
// key order, escapes and big numbers included.
func TestRawBytesAsServed(t *testing.T) {
	t.Parallel()
	srv := clerkapitest.New(t, key)
	raw := json.RawMessage(`{ "updated_at" : 2,"id":"user_a","created_at":1,  "first_name":"\u00c9mile","n":123456789012345678901234567890 }`)
	if err := srv.Put(raw); err != nil {
		t.Fatal(err)
	}
	c, _ := newClient(t, srv)
	pages, err := listAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if got := pages[0][0].Raw; !bytes.Equal(got, raw) {
		t.Errorf("listed\n got %s\nwant %s", got, raw)
	}
	u, err := c.GetUser(context.Background(), "user_a")
	if err != nil || !bytes.Equal(u.Raw, raw) || u.UpdatedAt != 2 {
		t.Errorf("GetUser: %v %s", err, u.Raw)
	}
	if _, err := c.GetUser(context.Background(), "user_gone"); !errors.Is(err, clerkapi.ErrNotFound) {
		t.Errorf("GetUser of a missing user: %v, want ErrNotFound", err)
	}
}

func TestRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		faults    []clerkapitest.Fault
		wantErr   error // nil: the listing completes
		wantCount map[string]int
		minWait   time.Duration
	}{
		{"429 is waited out", []clerkapitest.Fault{{Status: 429, RetryAfter: "1"}}, nil, map[string]int{"429": 1}, time.Second},
		{"429 as an HTTP date", []clerkapitest.Fault{{Status: 429, RetryAfter: time.Now().Add(2 * time.Second).UTC().Format(httpTime)}}, nil, map[string]int{"429": 1}, 500 * time.Millisecond},
		{"500 is retried", []clerkapitest.Fault{{Status: 500}, {Status: 503}}, nil, map[string]int{"500": 1, "503": 1}, 0},
		{"a hang times out and is retried", []clerkapitest.Fault{{Hang: true}}, nil, map[string]int{"network": 1}, 300 * time.Millisecond},
		{"five 500s give up", []clerkapitest.Fault{{Status: 500}, {Status: 500}, {Status: 500}, {Status: 500}, {Status: 500}}, clerkapi.ErrGaveUp, map[string]int{"500": 5}, 0},
		{"401 stops at once", []clerkapitest.Fault{{Status: 401}}, clerkapi.ErrUnauthorized, map[string]int{"401": 1}, 0},
		{"403 stops at once", []clerkapitest.Fault{{Status: 403}}, clerkapi.ErrUnauthorized, map[string]int{"403": 1}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := clerkapitest.New(t, key)
			fill(t, srv.Fake, 1200)
			srv.FailAt(2, tt.faults...) // the second page
			c, counts := newClient(t, srv, func(c *clerkapi.Config) { c.Timeout = 300 * time.Millisecond })
			start := time.Now()
			pages, err := listAll(c)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ListUsers: %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && len(pages) != 3 {
				t.Errorf("%d pages, want 3", len(pages))
			}
			if tt.wantErr != nil && srv.Requests() != 1+int64(len(tt.faults)) {
				t.Errorf("%d requests, want %d: it must stop at once", srv.Requests(), 1+len(tt.faults))
			}
			for status, n := range tt.wantCount {
				if got := counts.get(status); got != n {
					t.Errorf("OnError(%s) %d times, want %d", status, got, n)
				}
			}
			if took := time.Since(start); took < tt.minWait {
				t.Errorf("took %s, want at least %s (Retry-After)", took, tt.minWait)
			}
			if err != nil && strings.Contains(err.Error(), key) {
				t.Errorf("the error holds the key: %v", err)
			}
		})
	}
}

const httpTime = "Mon, 02 Jan 2006 15:04:05 GMT"

func TestUnauthorizedNamesTheVariable(t *testing.T) {
	t.Parallel()
	srv := clerkapitest.New(t, "sk_test_the_right_one")
	c, _ := newClient(t, srv) // sends key, which the fake does not accept
	_, err := listAll(c)
	if !errors.Is(err, clerkapi.ErrUnauthorized) || !strings.Contains(err.Error(), "CLERK_SECRET_KEY") {
		t.Fatalf("err = %v, want ErrUnauthorized naming CLERK_SECRET_KEY", err)
	}
	if srv.Requests() != 1 || srv.BadAuth() != 1 {
		t.Errorf("%d requests (%d refused), want 1", srv.Requests(), srv.BadAuth())
	}
	if _, err := clerkapi.New(clerkapi.Config{}); !errors.Is(err, clerkapi.ErrNoSecretKey) || !strings.Contains(err.Error(), "CLERK_SECRET_KEY") {
		t.Errorf("New without a key: %v", err)
	}
}

// TestRateLimit: flat out, the client stays within Rate requests in every second the fake counts
// (the bucket starts empty, so the first second is no exception), retries included.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	srv := clerkapitest.New(t, key)
	fill(t, srv.Fake, 1)
	const rate = 20
	c, _ := newClient(t, srv, func(c *clerkapi.Config) { c.Rate = rate })
	srv.FailAt(10, clerkapitest.Fault{Status: 500}, clerkapitest.Fault{Status: 502})
	start := time.Now()
	for range 50 {
		if _, err := c.GetUser(context.Background(), "user_00000"); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	// 52 attempts at 20/s from an empty bucket take at least 2.55s.
	if took < 2500*time.Millisecond {
		t.Errorf("52 requests took %s: faster than %d/s", took, rate)
	}
	// A second of the fake's clock holds at most rate requests, plus one for the fraction of a
	// token a second's boundary may split.
	for _, s := range srv.PerSecond() {
		if s.Count > rate+1 {
			t.Errorf("second %d: %d requests, more than %d", s.Second, s.Count, rate)
		}
	}
	t.Logf("per second: %v over %s", srv.PerSecond(), took)
	if st := c.Stats(); st.Requests != 52 || st.Retries != 2 {
		t.Errorf("stats %+v, want 52 requests and 2 retries", st)
	}
}

// TestKeyNeverPrinted: the key does not show in the configuration's printed, logged or
// marshalled forms.
func TestKeyNeverPrinted(t *testing.T) {
	t.Parallel()
	cfg := clerkapi.Config{URL: "http://x", SecretKey: key}
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	logger.Info("config", "cfg", cfg, "key", cfg.SecretKey)
	text, _ := json.Marshal(struct{ K clerkapi.SecretKey }{cfg.SecretKey})
	for name, s := range map[string]string{
		"%v": fmt.Sprintf("%v", cfg), "%+v": fmt.Sprintf("%+v", cfg), "%#v": fmt.Sprintf("%#v", cfg),
		"%s": cfg.SecretKey.String(), "json": string(text), "slog": logs.String(),
	} {
		if strings.Contains(s, key) {
			t.Errorf("%s shows the key: %s", name, s)
		}
	}
}
