// Package clerkapi is a small client of Clerk's Backend API: the reads clerksync makes to
// backfill and repair its projection (worker reconcile) and, later, to sync a user just in time
// (api). It keeps to Clerk's rate limits by itself (a token bucket, Retry-After on 429), retries
// what is transient, and stops at once on a refused key.
//
// It must never log or return the secret key (SecretKey redacts itself; errors name the variable,
// never its value), must not re-encode what Clerk served (objects come back as the raw bytes of
// the response), and must not decide what clerksync does with them.
package clerkapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// DefaultURL is CLERK_API_URL's default.
const DefaultURL = "https://api.clerk.com"

// PageSize is the largest page GET /v1/users serves; a shorter page is the last.
const PageSize = 500

// SecretKey is CLERK_SECRET_KEY. It prints, logs and marshals as "[redacted]", so a
// configuration struct holding it can be logged.
type SecretKey string

func (SecretKey) String() string               { return "[redacted]" }
func (SecretKey) GoString() string             { return "[redacted]" }
func (SecretKey) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Errors callers branch on.
var (
	// ErrUnauthorized: the Backend API answered 401 or 403. Retrying cannot help.
	ErrUnauthorized = errors.New("the Clerk Backend API refused CLERK_SECRET_KEY (401/403): check that it is the secret key (sk_…) of this Clerk instance")
	// ErrNoSecretKey: CLERK_SECRET_KEY is empty.
	ErrNoSecretKey = errors.New("CLERK_SECRET_KEY is not set: it is required to read Clerk's Backend API")
	// ErrNotFound: the object does not exist (GetUser of a deleted or unknown user).
	ErrNotFound = errors.New("not found in the Clerk Backend API")
	// ErrGaveUp wraps the last failure of a request retried MaxAttempts times.
	ErrGaveUp = errors.New("the Clerk Backend API kept failing")
)

// Config configures a Client. Zero values take the defaults.
type Config struct {
	URL       string // CLERK_API_URL; default DefaultURL
	SecretKey SecretKey
	// Rate is the most requests per second, with bursts of at most that many (default 10).
	// Every attempt, retries included, waits its turn.
	Rate float64
	// Timeout bounds one attempt, reading the whole response included (default 30s).
	Timeout time.Duration
	// MaxAttempts bounds the attempts of one request failing with 5xx or a network error
	// (default 5). A 429 waits out its Retry-After without spending one, up to Max429 times.
	MaxAttempts int
	Max429      int // default 20
	// Backoff is the first wait after a 5xx or network error, doubled each time up to
	// MaxBackoff (defaults 500ms and 15s), with jitter.
	Backoff, MaxBackoff time.Duration
	// MaxRetryAfter caps a 429's Retry-After (default 60s).
	MaxRetryAfter time.Duration
	// HTTPClient defaults to a client of its own.
	HTTPClient *http.Client
	// OnError, when set, is told of every failed attempt: the HTTP status ("429", "500", …) or
	// "network".
	OnError func(status string)
}

// Client reads the Backend API. It is safe for concurrent use; all callers share its limiter.
type Client struct {
	cfg     Config
	base    *url.URL
	limiter *rate.Limiter
	http    *http.Client

	requests, retries atomic.Int64
}

// New returns a client for cfg. The key is required.
func New(cfg Config) (*Client, error) {
	if cfg.SecretKey == "" {
		return nil, ErrNoSecretKey
	}
	if cfg.URL == "" {
		cfg.URL = DefaultURL
	}
	base, err := url.Parse(strings.TrimRight(cfg.URL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("CLERK_API_URL %q: want an http(s) URL like %s", cfg.URL, DefaultURL)
	}
	if cfg.Rate == 0 {
		cfg.Rate = 10
	}
	if cfg.Rate < 0 {
		return nil, fmt.Errorf("CLERK_API_RATE %v: want a positive number of requests per second", cfg.Rate)
	}
	cfg.Timeout = orDuration(cfg.Timeout, 30*time.Second)
	cfg.Backoff = orDuration(cfg.Backoff, 500*time.Millisecond)
	cfg.MaxBackoff = orDuration(cfg.MaxBackoff, 15*time.Second)
	cfg.MaxRetryAfter = orDuration(cfg.MaxRetryAfter, time.Minute)
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.Max429 <= 0 {
		cfg.Max429 = 20
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	burst := max(1, int(cfg.Rate))
	lim := rate.NewLimiter(rate.Limit(cfg.Rate), burst)
	// Start with an empty bucket: a client that starts and runs flat out then stays at Rate in
	// every second, the first included (a full bucket would allow Rate+burst in the first).
	lim.AllowN(time.Now(), burst)
	return &Client{cfg: cfg, base: base, limiter: lim, http: hc}, nil
}

func orDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Stats are the client's counters since New.
type Stats struct {
	Requests int64 // attempts sent, retries included
	Retries  int64 // attempts after a failure (429, 5xx, network)
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{Requests: c.requests.Load(), Retries: c.retries.Load()}
}

// Object is one object (a user, an organization, a membership) as the Backend API served it.
type Object struct {
	ID        string
	UpdatedAt int64 // data.updated_at, milliseconds since the epoch
	// Raw is the object exactly as it was in the response, never re-encoded.
	Raw json.RawMessage
}

// User is one user as the Backend API served it.
type User = Object

// userHead is what clerksync needs to read of a user to compare it; the rest stays raw.
type userHead struct {
	ID        string `json:"id"`
	UpdatedAt *int64 `json:"updated_at"`
}

func parseObject(raw json.RawMessage) (Object, error) {
	var h userHead
	if err := json.Unmarshal(raw, &h); err != nil {
		return User{}, fmt.Errorf("an object that is not a JSON object: %w", err)
	}
	if h.ID == "" || h.UpdatedAt == nil {
		return User{}, errors.New("an object without id or updated_at")
	}
	return User{ID: h.ID, UpdatedAt: *h.UpdatedAt, Raw: raw}, nil
}

// ListUsers reads every user, oldest first: GET /v1/users?limit=500&order_by=created_at, then
// starting_after=<the last id> until a page holds fewer than 500. fn gets each page in order;
// an error from fn stops the listing and is returned as is. The next page is read while fn
// works on the current one (one request ahead, under the same limiter), so a caller that
// publishes what it reads is not held up by the API's latency, nor the API by the caller.
func (c *Client) ListUsers(ctx context.Context, fn func(page []User) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		page []User
		err  error
	}
	fetch := func(after string) <-chan result {
		ch := make(chan result, 1)
		go func() {
			page, err := c.usersPage(ctx, after)
			ch <- result{page, err}
		}()
		return ch
	}
	next := fetch("")
	for {
		r := <-next
		if r.err != nil {
			return r.err
		}
		next = nil
		if len(r.page) == PageSize {
			next = fetch(r.page[len(r.page)-1].ID)
		}
		if err := fn(r.page); err != nil {
			if next != nil {
				cancel()
				<-next
			}
			return err
		}
		if next == nil {
			return nil
		}
	}
}

// usersPage reads the page of users after the id after ("" for the first).
func (c *Client) usersPage(ctx context.Context, after string) ([]User, error) {
	q := url.Values{"limit": {strconv.Itoa(PageSize)}, "order_by": {"created_at"}}
	if after != "" {
		q.Set("starting_after", after)
	}
	body, err := c.get(ctx, "/v1/users", q)
	if err != nil {
		return nil, fmt.Errorf("listing users after %q: %w", after, err)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		return nil, fmt.Errorf("listing users after %q: the response is not a JSON array: %w", after, err)
	}
	page := make([]User, len(raws))
	for i, raw := range raws {
		if page[i], err = parseObject(raw); err != nil {
			return nil, fmt.Errorf("listing users after %q: %w", after, err)
		}
	}
	return page, nil
}

// ListOrganizations calls fn with each page of organizations (GET /v1/organizations, oldest
// first, PageSize a page by limit and offset), in order; the first error (fn's or the API's) ends
// it. complete reports whether total_count stayed the same on every page and equals what was
// listed: offset paging skips an object when one before it disappears mid-sweep, so only such a
// listing may be taken as everything the instance has.
func (c *Client) ListOrganizations(ctx context.Context, fn func(page []Object) error) (complete bool, err error) {
	return c.listOffset(ctx, "/v1/organizations", "organizations", fn)
}

// ListMemberships calls fn with each page of the memberships of the organization orgID (GET
// /v1/organizations/{id}/memberships), like ListOrganizations. An organization deleted since it
// was listed is ErrNotFound.
func (c *Client) ListMemberships(ctx context.Context, orgID string, fn func(page []Object) error) (complete bool, err error) {
	if orgID == "" {
		return false, errors.New("listing memberships: empty organization id")
	}
	return c.listOffset(ctx, "/v1/organizations/"+url.PathEscape(orgID)+"/memberships", "memberships of "+orgID, fn)
}

// offsetPage is the body of an offset-paged listing.
type offsetPage struct {
	Data       []json.RawMessage `json:"data"`
	TotalCount *int64            `json:"total_count"`
}

func (c *Client) listOffset(ctx context.Context, path, what string, fn func(page []Object) error) (bool, error) {
	var listed int64
	total := int64(-1)
	stable := true
	for offset := 0; ; offset += PageSize {
		q := url.Values{"limit": {strconv.Itoa(PageSize)}, "offset": {strconv.Itoa(offset)}, "order_by": {"+created_at"}}
		body, err := c.get(ctx, path, q)
		if err != nil {
			return false, fmt.Errorf("listing %s at offset %d: %w", what, offset, err)
		}
		var p offsetPage
		if err := json.Unmarshal(body, &p); err != nil || p.TotalCount == nil {
			return false, fmt.Errorf("listing %s at offset %d: the response is not {\"data\":[…],\"total_count\":N}", what, offset)
		}
		if total >= 0 && *p.TotalCount != total {
			stable = false
		}
		total = *p.TotalCount
		page := make([]Object, len(p.Data))
		for i, raw := range p.Data {
			if page[i], err = parseObject(raw); err != nil {
				return false, fmt.Errorf("listing %s at offset %d: %w", what, offset, err)
			}
		}
		listed += int64(len(page))
		if len(page) > 0 {
			if err := fn(page); err != nil {
				return false, err
			}
		}
		if len(page) < PageSize || int64(offset+len(page)) >= total {
			return stable && listed == total, nil
		}
	}
}

// GetUser reads one user: GET /v1/users/{id}. A 404 is ErrNotFound.
func (c *Client) GetUser(ctx context.Context, id string) (User, error) {
	if id == "" {
		return User{}, errors.New("getting a user: empty id")
	}
	body, err := c.get(ctx, "/v1/users/"+url.PathEscape(id), nil)
	if err != nil {
		return User{}, fmt.Errorf("getting user %s: %w", id, err)
	}
	u, err := parseObject(bytes.TrimSpace(body))
	if err != nil {
		return User{}, fmt.Errorf("getting user %s: %w", id, err)
	}
	return u, nil
}

// statusError is a response the client did not want.
type statusError struct{ status int }

func (e statusError) Error() string { return fmt.Sprintf("HTTP %d", e.status) }

// get sends GET path?q with the key, under the limiter, retrying as Config says, and returns the
// body of a 200.
func (c *Client) get(ctx context.Context, path string, q url.Values) ([]byte, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	failures, throttled := 0, 0
	var last error
	for {
		if err := c.limiter.Wait(ctx); err != nil {
			return nil, c.redact(err)
		}
		body, status, retryAfter, err := c.attempt(ctx, u.String())
		switch {
		case err == nil && status == http.StatusOK:
			return body, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			c.observe(status)
			return nil, ErrUnauthorized
		case status == http.StatusNotFound:
			return nil, ErrNotFound
		case status == http.StatusTooManyRequests:
			c.observe(status)
			throttled++
			if throttled > c.cfg.Max429 {
				return nil, fmt.Errorf("%w: still rate limited (429) after %d waits", ErrGaveUp, c.cfg.Max429)
			}
			wait := min(retryAfter, c.cfg.MaxRetryAfter)
			if wait <= 0 {
				wait = time.Second
			}
			if err := sleep(ctx, wait); err != nil {
				return nil, err
			}
			c.retries.Add(1)
			continue
		case err != nil:
			c.observe(0)
			last = err
		case status >= 500:
			c.observe(status)
			last = statusError{status}
		default:
			// Any other 4xx is a request Clerk will never accept: retrying cannot help.
			c.observe(status)
			return nil, statusError{status}
		}
		failures++
		if failures >= c.cfg.MaxAttempts {
			return nil, fmt.Errorf("%w: %d attempts, the last: %w", ErrGaveUp, failures, last)
		}
		if err := sleep(ctx, c.backoff(failures)); err != nil {
			return nil, err
		}
		c.retries.Add(1)
	}
}

// attempt sends one request under the timeout and reads the whole body. err is a network error
// (or the timeout), already redacted.
func (c *Client) attempt(ctx context.Context, u string) (body []byte, status int, retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, 0, c.redact(err)
	}
	req.Header.Set("Authorization", "Bearer "+string(c.cfg.SecretKey))
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "clerksync")
	c.requests.Add(1)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, 0, c.redact(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), nil
	}
	body, err = io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, 0, c.redact(fmt.Errorf("reading the response: %w", err))
	}
	return body, resp.StatusCode, 0, nil
}

func (c *Client) observe(status int) {
	if c.cfg.OnError == nil {
		return
	}
	if status == 0 {
		c.cfg.OnError("network")
		return
	}
	c.cfg.OnError(strconv.Itoa(status))
}

// backoff is the wait before the attempt after the n-th failure: Backoff doubled n-1 times, at
// most MaxBackoff, between half and all of it.
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.Backoff << min(n-1, 20)
	if d <= 0 || d > c.cfg.MaxBackoff {
		d = c.cfg.MaxBackoff
	}
	return d/2 + rand.N(d/2+1) //nolint:gosec // G404: jitter spreads retries; it guards nothing

}

// parseRetryAfter reads Retry-After: seconds, or an HTTP date. 0 when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now))
	}
	return 0
}

// redact removes the key from an error's text, should anything below ever echo it, keeping
// what callers branch on (a timeout, a network error).
func (c *Client) redact(err error) error {
	if err == nil || c.cfg.SecretKey == "" || !strings.Contains(err.Error(), string(c.cfg.SecretKey)) {
		return err
	}
	return redacted{msg: strings.ReplaceAll(err.Error(), string(c.cfg.SecretKey), "[redacted]"), timeout: isTimeout(err)}
}

type redacted struct {
	msg     string
	timeout bool
}

func (r redacted) Error() string   { return r.msg }
func (r redacted) Timeout() bool   { return r.timeout }
func (r redacted) Temporary() bool { return true }

var _ net.Error = redacted{}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
