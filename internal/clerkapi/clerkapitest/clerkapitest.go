// Package clerkapitest plays Clerk's Backend API: users held in memory, GET /v1/users paged by
// starting_after in created_at order (a bare JSON array, as Clerk serves it), GET /v1/users/{id},
// organizations and their memberships, GET /v1/organizations and GET
// /v1/organizations/{id}/memberships paged by limit and offset in created_at order
// ({"data":[…],"total_count":N}),
// the Authorization header checked against one secret key, and faults scripted by request
// number (429 with Retry-After, 5xx, 401, a hang). It counts requests, per second of its clock
// too, so a test can check a client's rate.
//
// Tests start it on httptest with New; the dev stack serves Fake's handler itself, so that
// reconcile can be tried against it. It must not import clerksync's own packages beyond clerkapi's
// page size: it stands for Clerk.
package clerkapitest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// MaxLimit is the largest limit GET /v1/users accepts.
const MaxLimit = 500

// Fault is what the fake does instead of answering one request.
type Fault struct {
	Status     int    // answer this status with a Clerk error body
	RetryAfter string // the Retry-After header of that answer, when set
	// Hang holds the request until the client gives up (or the server closes).
	Hang bool
}

// Fake is the in-memory Backend API. Its methods are safe for concurrent use.
type Fake struct {
	key string

	mu        sync.Mutex
	users     map[string]stored
	order     []string // ids by (created_at, id)
	orgs      *objects
	members   map[string]*objects // by organization id
	faults    map[int64]Fault
	requests  int64
	perSecond map[int64]int
	times     []time.Time
	badAuth   int64
	latency   time.Duration
	closing   chan struct{}
	closeOnce sync.Once
}

type stored struct {
	raw       json.RawMessage
	createdAt int64
}

// NewFake returns a fake that accepts "Authorization: Bearer <key>".
func NewFake(key string) *Fake {
	return &Fake{key: key, users: map[string]stored{}, orgs: newObjects(), members: map[string]*objects{}, faults: map[int64]Fault{},
		perSecond: map[int64]int{}, closing: make(chan struct{})}
}

// Server is a Fake on an httptest server.
type Server struct {
	*Fake
	URL string
}

// New starts a fake Backend API for the test, closed when it ends.
func New(t testing.TB, key string) *Server {
	t.Helper()
	f := NewFake(key)
	srv := httptest.NewServer(f)
	t.Cleanup(func() {
		f.Close()
		srv.Close()
	})
	return &Server{Fake: f, URL: srv.URL}
}

// Close releases hanging requests.
func (f *Fake) Close() { f.closeOnce.Do(func() { close(f.closing) }) }

// Put adds or replaces a user: raw is served exactly as given. It must be a JSON object with a
// string id and an integer created_at.
func (f *Fake) Put(raw json.RawMessage) error {
	var head struct {
		ID        string `json:"id"`
		CreatedAt int64  `json:"created_at"`
	}
	if err := json.Unmarshal(raw, &head); err != nil || head.ID == "" {
		return fmt.Errorf("clerkapitest: a user needs a string id and an integer created_at: %s", raw)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.users[head.ID]; ok {
		f.removeLocked(head.ID)
	}
	f.users[head.ID] = stored{raw: slices.Clone(raw), createdAt: head.CreatedAt}
	i, _ := slices.BinarySearchFunc(f.order, head.ID, func(id, target string) int { return f.compare(id, target) })
	f.order = slices.Insert(f.order, i, head.ID)
	return nil
}

// compare orders ids by the users' created_at, then id. The caller holds mu.
func (f *Fake) compare(a, b string) int {
	ua, ub := f.users[a], f.users[b]
	if ua.createdAt != ub.createdAt {
		if ua.createdAt < ub.createdAt {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

// Delete removes a user, as deleting it in Clerk does.
func (f *Fake) Delete(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removeLocked(id)
}

func (f *Fake) removeLocked(id string) {
	if i := slices.Index(f.order, id); i >= 0 {
		f.order = slices.Delete(f.order, i, i+1)
	}
	delete(f.users, id)
}

// Users returns the number of users held.
func (f *Fake) Users() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.order)
}

// User returns a user's bytes as served, or nil.
func (f *Fake) User(id string) json.RawMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.users[id].raw
}

// FailAt makes the n-th request (counted from 1 since the fake started) and the ones after it
// fail, one fault each.
func (f *Fake) FailAt(n int64, faults ...Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, fault := range faults {
		f.faults[n+int64(i)] = fault
	}
}

// FailNext makes the next requests fail, one fault each.
func (f *Fake) FailNext(faults ...Fault) {
	f.mu.Lock()
	n := f.requests + 1
	f.mu.Unlock()
	f.FailAt(n, faults...)
}

// SetLatency makes every answer wait d first.
func (f *Fake) SetLatency(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latency = d
}

// Requests returns how many requests the fake received.
func (f *Fake) Requests() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// BadAuth returns how many requests came without the right key.
func (f *Fake) BadAuth() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.badAuth
}

// PerSecond returns the requests received in each second of the fake's clock (Unix seconds),
// in order.
func (f *Fake) PerSecond() []SecondCount {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]SecondCount, 0, len(f.perSecond))
	for s, n := range f.perSecond {
		out = append(out, SecondCount{s, n})
	}
	slices.SortFunc(out, func(a, b SecondCount) int { return int(a.Second - b.Second) })
	return out
}

// maxTimes bounds the request times MaxInWindow looks at.
const maxTimes = 100_000

// MaxInWindow returns the most requests the fake received within any span of d.
func (f *Fake) MaxInWindow(d time.Duration) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	most, j := 0, 0
	for i := range f.times {
		for f.times[i].Sub(f.times[j]) >= d {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}

// SecondCount is one second's request count.
type SecondCount struct {
	Second int64
	Count  int
}

func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests++
	now := time.Now()
	f.perSecond[now.Unix()]++
	if len(f.times) == maxTimes { // a long-running dev stack: keep the latest
		f.times = append(f.times[:0], f.times[maxTimes/2:]...)
	}
	f.times = append(f.times, now)
	fault, faulty := f.faults[f.requests]
	latency := f.latency
	authorized := r.Header.Get("Authorization") == "Bearer "+f.key
	if !authorized {
		f.badAuth++
	}
	f.mu.Unlock()

	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
	}
	switch {
	case faulty && fault.Hang:
		select {
		case <-r.Context().Done():
		case <-f.closing:
		}
		return
	case faulty:
		if fault.RetryAfter != "" {
			w.Header().Set("Retry-After", fault.RetryAfter)
		}
		clerkError(w, fault.Status, "scripted_fault", "a fault the test asked for")
		return
	case !authorized:
		clerkError(w, http.StatusUnauthorized, "authentication_invalid", "Unauthorized request")
		return
	case r.Method != http.MethodGet:
		clerkError(w, http.StatusMethodNotAllowed, "method_not_allowed", "only GET is served")
		return
	}
	switch {
	case r.URL.Path == "/v1/organizations":
		f.mu.Lock()
		f.orgs.serve(w, r)
		f.mu.Unlock()
	case strings.HasPrefix(r.URL.Path, "/v1/organizations/") && strings.HasSuffix(r.URL.Path, "/memberships"):
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/organizations/"), "/memberships")
		f.mu.Lock()
		if _, ok := f.orgs.byID[id]; !ok {
			f.mu.Unlock()
			clerkError(w, http.StatusNotFound, "resource_not_found", "no such organization")
			return
		}
		ms := f.members[id]
		if ms == nil {
			ms = newObjects()
		}
		ms.serve(w, r)
		f.mu.Unlock()
	case r.URL.Path == "/v1/users":
		f.list(w, r)
	case strings.HasPrefix(r.URL.Path, "/v1/users/") && !strings.Contains(r.URL.Path[len("/v1/users/"):], "/"):
		f.get(w, r.URL.Path[len("/v1/users/"):])
	default:
		clerkError(w, http.StatusNotFound, "resource_not_found", "no such route")
	}
}

// list serves GET /v1/users?limit=&order_by=created_at&starting_after=.
func (f *Fake) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 10 // Clerk's default
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLimit {
			clerkError(w, http.StatusUnprocessableEntity, "form_param_value_invalid", "limit must be 1 to 500")
			return
		}
		limit = n
	}
	if ob := q.Get("order_by"); ob != "created_at" && ob != "+created_at" {
		// Clerk's default is -created_at; clerksync must ask for the oldest first.
		clerkError(w, http.StatusUnprocessableEntity, "form_param_value_invalid", "this fake serves order_by=created_at only")
		return
	}
	f.mu.Lock()
	start := 0
	if after := q.Get("starting_after"); after != "" {
		i := slices.Index(f.order, after)
		if i < 0 {
			f.mu.Unlock()
			clerkError(w, http.StatusBadRequest, "form_param_value_invalid", "starting_after is not a user")
			return
		}
		start = i + 1
	}
	end := min(start+limit, len(f.order))
	var body bytes.Buffer
	body.WriteByte('[')
	for i, id := range f.order[start:end] {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(f.users[id].raw)
	}
	body.WriteByte(']')
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body.Bytes())
}

func (f *Fake) get(w http.ResponseWriter, id string) {
	raw := f.User(id)
	if raw == nil {
		clerkError(w, http.StatusNotFound, "resource_not_found", "not found")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(raw)
}

// clerkError answers Clerk's error shape.
func clerkError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]string{{"code": code, "message": msg, "long_message": msg}},
	})
}

// NewUser returns a user object shaped like the Backend API's (see the fixtures'
// backend-api/bapi.GET-v1-users.response-shape.json), with the given id and times (ms).
func NewUser(id string, createdAt, updatedAt int64, firstName string) json.RawMessage {
	email := strings.ToLower(id) + "@example.org"
	b, _ := json.Marshal(map[string]any{
		"object": "user", "id": id,
		"created_at": createdAt, "updated_at": updatedAt, "last_active_at": updatedAt,
		"first_name": firstName, "last_name": "Example", "username": nil,
		"image_url": "https://img.clerk.com/EXAMPLE", "has_image": false,
		"primary_email_address_id": "idn_" + id,
		"email_addresses": []map[string]any{{
			"object": "email_address", "id": "idn_" + id, "email_address": email,
			"verification": map[string]any{"status": "verified", "strategy": "email_code"},
			"linked_to":    []any{}, "created_at": createdAt, "updated_at": createdAt,
		}},
		"phone_numbers": []any{}, "web3_wallets": []any{}, "passkeys": []any{},
		"external_accounts": []any{}, "saml_accounts": []any{},
		"public_metadata": map[string]any{}, "private_metadata": map[string]any{}, "unsafe_metadata": map[string]any{},
		"external_id": nil, "primary_phone_number_id": nil, "primary_web3_wallet_id": nil,
		"password_enabled": true, "two_factor_enabled": false, "totp_enabled": false, "backup_code_enabled": false,
		"banned": false, "locked": false, "lockout_expires_in_seconds": nil, "verification_attempts_remaining": 100,
		"delete_self_enabled": true, "create_organization_enabled": true, "last_sign_in_at": nil,
	})
	return b
}

// objects are organizations, or one organization's memberships, by (created_at, id).
type objects struct {
	byID  map[string]stored
	order []string
}

func newObjects() *objects { return &objects{byID: map[string]stored{}} }

func (o *objects) put(id string, raw json.RawMessage, createdAt int64) {
	o.remove(id)
	o.byID[id] = stored{raw: slices.Clone(raw), createdAt: createdAt}
	i, _ := slices.BinarySearchFunc(o.order, id, func(a, b string) int {
		ua, ub := o.byID[a], o.byID[b]
		if ua.createdAt != ub.createdAt {
			if ua.createdAt < ub.createdAt {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	o.order = slices.Insert(o.order, i, id)
}

func (o *objects) remove(id string) {
	if i := slices.Index(o.order, id); i >= 0 {
		o.order = slices.Delete(o.order, i, i+1)
	}
	delete(o.byID, id)
}

// serve answers ?limit=&offset=&order_by=+created_at with {"data":[…],"total_count":N}. The
// caller holds the fake's mu.
func (o *objects) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, offset := 10, 0 // Clerk's defaults
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLimit {
			clerkError(w, http.StatusUnprocessableEntity, "form_param_value_invalid", "limit must be 1 to 500")
			return
		}
		limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			clerkError(w, http.StatusUnprocessableEntity, "form_param_value_invalid", "offset must be 0 or more")
			return
		}
		offset = n
	}
	if ob := q.Get("order_by"); ob != "+created_at" && ob != "created_at" {
		clerkError(w, http.StatusUnprocessableEntity, "form_param_value_invalid", "this fake serves order_by=+created_at only")
		return
	}
	start, end := min(offset, len(o.order)), min(offset+limit, len(o.order))
	var body bytes.Buffer
	body.WriteString(`{"data":[`)
	for i, id := range o.order[start:end] {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(o.byID[id].raw)
	}
	fmt.Fprintf(&body, `],"total_count":%d}`, len(o.order))
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body.Bytes())
}

// PutOrganization adds or replaces an organization: raw is served exactly as given. It must be a
// JSON object with a string id and an integer created_at.
func (f *Fake) PutOrganization(raw json.RawMessage) error {
	var head struct {
		ID        string `json:"id"`
		CreatedAt int64  `json:"created_at"`
	}
	if err := json.Unmarshal(raw, &head); err != nil || head.ID == "" {
		return fmt.Errorf("clerkapitest: an organization needs a string id and an integer created_at: %s", raw)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.orgs.put(head.ID, raw, head.CreatedAt)
	return nil
}

// DeleteOrganization removes an organization and its memberships, as deleting it in Clerk does.
func (f *Fake) DeleteOrganization(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.orgs.remove(id)
	delete(f.members, id)
}

// PutMembership adds or replaces a membership of the organization its organization.id names: raw
// is served exactly as given (a JSON object with a string id, an integer created_at and an
// organization object with a string id).
func (f *Fake) PutMembership(raw json.RawMessage) error {
	var head struct {
		ID           string `json:"id"`
		CreatedAt    int64  `json:"created_at"`
		Organization struct {
			ID string `json:"id"`
		} `json:"organization"`
	}
	if err := json.Unmarshal(raw, &head); err != nil || head.ID == "" || head.Organization.ID == "" {
		return fmt.Errorf("clerkapitest: a membership needs a string id, an integer created_at and organization.id: %s", raw)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ms := f.members[head.Organization.ID]
	if ms == nil {
		ms = newObjects()
		f.members[head.Organization.ID] = ms
	}
	ms.put(head.ID, raw, head.CreatedAt)
	return nil
}

// DeleteMembership removes a membership of the organization orgID.
func (f *Fake) DeleteMembership(orgID, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ms := f.members[orgID]; ms != nil {
		ms.remove(id)
	}
}

// NewOrganization returns an organization object shaped like the Backend API's (the same object
// as a webhook's data), with the given id, slug and times (ms).
func NewOrganization(id, slug string, createdAt, updatedAt int64) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"object": "organization", "id": id, "name": "Org " + slug, "slug": slug,
		"image_url": "https://img.clerk.com/EXAMPLE", "has_image": false, "members_count": 1,
		"pending_invitations_count": 0, "max_allowed_memberships": 5, "admin_delete_enabled": true,
		"public_metadata": map[string]any{}, "private_metadata": map[string]any{}, "created_by": "",
		"created_at": createdAt, "updated_at": updatedAt,
	})
	return b
}

// NewMembership returns a membership object shaped like the Backend API's, of user userID in the
// organization orgID with role, and the given times (ms).
func NewMembership(id, orgID, userID, role string, createdAt, updatedAt int64) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"object": "organization_membership", "id": id, "role": role, "permissions": []string{},
		"public_metadata": map[string]any{}, "private_metadata": map[string]any{},
		"organization": map[string]any{"object": "organization", "id": orgID, "name": "Org", "slug": orgID,
			"created_at": createdAt, "updated_at": createdAt},
		"public_user_data": map[string]any{"user_id": userID, "first_name": "Example", "last_name": "Example",
			"image_url": "https://img.clerk.com/EXAMPLE", "has_image": false, "identifier": strings.ToLower(userID) + "@example.org"},
		"created_at": createdAt, "updated_at": updatedAt,
	})
	return b
}
