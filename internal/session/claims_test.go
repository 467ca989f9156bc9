package session_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/clerksync/clerksync/internal/session"
	"github.com/clerksync/clerksync/internal/session/sessiontest"
)

// claimCase is a validly signed payload that spells a claim otherwise than RFC 7519 and Clerk
// do — another case, another JSON type, twice — and what Verify makes of it.
type claimCase struct {
	name    string
	payload []byte
	want    session.Reason // the refusal; "" for a token Verify accepts
	org     string         // ActiveOrganization of an accepted token (UserID is always user_1)
}

// claimCases are the rows TestVerifyRefuses and TestVerifyExactClaims run, and FuzzClaims's seeds.
// Each is a valid token for user_1 at now (sessiontest.ClaimsAt, a v2 token) changed; "user_U" and
// "org_U" are the values a forger wants honoured.
func claimCases(t testing.TB, now time.Time) []claimCase {
	t.Helper()
	future := now.Add(time.Hour).Unix()
	past := now.Add(-time.Hour).Unix()
	with := func(change func(jwt.MapClaims)) []byte {
		t.Helper()
		c := sessiontest.ClaimsAt("user_1", now)
		change(c)
		p, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	set := func(kv ...any) []byte {
		return with(func(c jwt.MapClaims) {
			for i := 0; i < len(kv); i += 2 {
				c[kv[i].(string)] = kv[i+1]
			}
		})
	}
	// raw is a valid token's claims without sub, then members, byte for byte: for what a map
	// cannot hold.
	raw := func(members string) []byte {
		return fmt.Appendf(nil, `{"azp":%q,"exp":%d,"iat":%d,"iss":%q,"nbf":%d,"sid":"sess_user_1","v":2,%s}`,
			sessiontest.AuthorizedParty, now.Add(time.Minute).Unix(), now.Unix(), sessiontest.IssuerURL,
			now.Add(-10*time.Second).Unix(), members)
	}
	del := func(name string, kv ...any) []byte {
		return with(func(c jwt.MapClaims) {
			delete(c, name)
			for i := 0; i < len(kv); i += 2 {
				c[kv[i].(string)] = kv[i+1]
			}
		})
	}
	// plus appends members to payload's object. json.Marshal sorts a map's names, so "SUB"
	// would come before "sub"; a forger puts the variant last, where encoding/json's
	// case-insensitive struct decoding let it win.
	plus := func(payload []byte, members string) []byte {
		return append(append(payload[:len(payload)-1:len(payload)-1], ','), members+"}"...)
	}
	base := set()
	org := func(id string) map[string]any { return map[string]any{"id": id, "rol": "admin", "slg": "acme"} }
	digits := strconv.FormatInt(now.Add(time.Minute).Unix(), 10)
	const (
		malformed = session.ReasonMalformed
		missing   = session.ReasonMissingClaim
	)
	return []claimCase{
		// Another case is another claim: it neither stands in for the claim nor overrides it.
		{name: "SUB without sub", payload: del("sub", "SUB", "user_U"), want: missing},
		{name: "Sub without sub", payload: del("sub", "Sub", "user_U"), want: missing},
		{name: "SUB after sub", payload: plus(base, `"SUB":"user_U"`)},
		{name: "Sub after sub", payload: plus(base, `"Sub":"user_U"`)},
		{name: "Exp without exp", payload: del("exp", "Exp", future), want: missing},
		{name: "EXP without exp", payload: del("exp", "EXP", future), want: missing},
		{name: "EXP in the future after exp expired", payload: plus(set("exp", past), fmt.Sprintf(`"EXP":%d`, future)), want: session.ReasonExpired},
		{name: "EXP expired after exp", payload: plus(base, fmt.Sprintf(`"EXP":%d`, past))},
		{name: "NBF in the future without nbf", payload: del("nbf", "NBF", future)},
		{name: "NBF past after nbf in the future", payload: plus(set("nbf", future), fmt.Sprintf(`"NBF":%d`, past)), want: session.ReasonNotYetValid},
		{name: "IAT in the future without iat", payload: del("iat", "IAT", future)},
		{name: "IAT past after iat in the future", payload: plus(set("iat", future), fmt.Sprintf(`"IAT":%d`, past)), want: session.ReasonIssuedInFuture},
		{name: "ISS right after iss wrong", payload: plus(set("iss", "https://wrong.test"), fmt.Sprintf(`"ISS":%q`, sessiontest.IssuerURL)), want: session.ReasonIssuer},
		{name: "Iss without iss", payload: del("iss", "Iss", sessiontest.IssuerURL), want: session.ReasonIssuer},
		{name: "AZP listed after azp not listed", payload: plus(set("azp", "https://evil.example"), fmt.Sprintf(`"AZP":%q`, sessiontest.AuthorizedParty)), want: session.ReasonAuthorizedParty},
		{name: "AZP without azp", payload: del("azp", "AZP", sessiontest.AuthorizedParty), want: session.ReasonAuthorizedParty},
		{name: "STS active after sts pending", payload: plus(set("sts", "pending"), `"STS":"active"`), want: session.ReasonPendingSession},
		{name: "Sts active after sts pending", payload: plus(set("sts", "pending"), `"Sts":"active"`), want: session.ReasonPendingSession},
		{name: "STS pending without sts", payload: set("STS", "pending")},
		{name: "SID after sid", payload: plus(base, `"SID":"sess_U"`)},

		// A claim of the wrong JSON type is malformed; null is a type, not absence.
		{name: "exp a digit string", payload: set("exp", digits), want: malformed},
		{name: "nbf a digit string", payload: set("nbf", digits), want: malformed},
		{name: "iat a digit string", payload: set("iat", digits), want: malformed},
		{name: "exp null", payload: set("exp", nil), want: malformed},
		{name: "nbf null", payload: set("nbf", nil), want: malformed},
		{name: "iat null", payload: set("iat", nil), want: malformed},
		{name: "exp true", payload: set("exp", true), want: malformed},
		{name: "exp a list", payload: set("exp", []int64{future}), want: malformed},
		{name: "exp beyond float64", payload: set("exp", json.Number("1e400")), want: malformed},
		{name: "nbf beyond year 9999", payload: set("nbf", 1e300), want: malformed},
		{name: "exp fractional", payload: set("exp", float64(now.Add(time.Minute).Unix())+0.75)},
		{name: "exp with an exponent", payload: set("exp", json.Number(digits+"e0"))},
		{name: "sub null", payload: set("sub", nil), want: malformed},
		{name: "sub a number", payload: set("sub", 42), want: malformed},
		{name: "sub an object", payload: set("sub", map[string]any{"id": "user_1"}), want: malformed},
		{name: "iss null", payload: set("iss", nil), want: malformed},
		{name: "azp null", payload: set("azp", nil), want: malformed},
		{name: "sts null", payload: set("sts", nil), want: malformed},
		{name: "sts a list", payload: set("sts", []string{"active"}), want: malformed},
		{name: "sid null", payload: set("sid", nil), want: malformed},
		{name: "sid a number", payload: set("sid", 1), want: malformed},
		{name: "org_id null", payload: del("v", "org_id", nil), want: malformed},
		{name: "org_id a number", payload: del("v", "org_id", 7), want: malformed},
		{name: "v a string", payload: set("v", "2"), want: malformed},
		{name: "v null", payload: set("v", nil), want: malformed},
		{name: "v a fraction", payload: set("v", 2.5), want: malformed},
		{name: "o a string", payload: set("o", "org_U"), want: malformed},
		{name: "o null", payload: set("o", nil), want: malformed},
		{name: "o a list", payload: set("o", []any{org("org_U")}), want: malformed},
		{name: "o.id a number", payload: set("o", map[string]any{"id": 1}), want: malformed},
		{name: "o.id null", payload: set("o", map[string]any{"id": nil}), want: malformed},
		{name: "o.rol a number", payload: set("o", map[string]any{"id": "org_1", "rol": 1}), want: malformed},

		// A member twice is refused, however it is spelled.
		{name: "sub twice", payload: raw(`"sub":"user_1","sub":"user_U"`), want: malformed},
		{name: "sub twice, once escaped", payload: raw(`"sub":"user_1","s\u0075b":"user_U"`), want: malformed},
		{name: "exp twice", payload: raw(fmt.Sprintf(`"sub":"user_1","exp":%d`, future)), want: malformed},
		{name: "an unknown member twice", payload: raw(`"sub":"user_1","x":1,"x":2`), want: malformed},
		{name: "o.id twice", payload: raw(`"sub":"user_1","o":{"id":"org_1","id":"org_U"}`), want: malformed},

		// Not an object.
		{name: "payload null", payload: []byte("null"), want: malformed},
		{name: "payload a list", payload: []byte(`[{"sub":"user_1"}]`), want: malformed},
		{name: "payload a string", payload: []byte(`"user_1"`), want: malformed},
		{name: "payload a number", payload: []byte(`1`), want: malformed},

		// Names are JSON strings: escapes resolve, whitespace is not part of them.
		{name: "sub escaped", payload: raw(`"s\u0075b":"user_1"`)},
		{name: "whitespace around members", payload: raw(" \"sub\" :\n \"user_1\" , \"o\" : { \"id\" : \"org_1\" } "), org: "org_1"},
		{name: "unknown claims of every type", payload: raw(`"sub":"user_1","x":null,"y":[1,{"sub":"user_U"}],"z":{"sub":"user_U"},"fea":"o:x"`)},

		// The active organization: o.id in a v2 token, org_id in any other.
		{name: "v2 o.id", payload: set("o", org("org_1")), org: "org_1"},
		{name: "v2 O.id after o.id", payload: plus(set("o", org("org_1")), `"O":{"id":"org_U"}`), org: "org_1"},
		{name: "v2 O.id without o", payload: set("O", org("org_U"))},
		{name: "v2 o.ID and o.Id without o.id", payload: set("o", map[string]any{"ID": "org_U", "Id": "org_U"})},
		{name: "v2 o.ID after o.id", payload: raw(`"sub":"user_1","o":{"id":"org_1","ID":"org_U","Id":"org_U"}`), org: "org_1"},
		{name: "v2 ignores org_id", payload: set("org_id", "org_U")},
		{name: "v2 ignores org_id beside o", payload: set("org_id", "org_U", "o", org("org_1")), org: "org_1"},
		{name: "v1 org_id", payload: del("v", "org_id", "org_1", "o", org("org_U")), org: "org_1"},
		{name: "v1 ORG_ID without org_id", payload: del("v", "ORG_ID", "org_U")},
		{name: "v1 ORG_ID after org_id", payload: plus(del("v", "org_id", "org_1"), `"ORG_ID":"org_U"`), org: "org_1"},
		{name: "V 2 without v is v1", payload: del("v", "V", 2, "org_id", "org_1", "o", org("org_U")), org: "org_1"},
		{name: "v 1 with o", payload: set("v", 1, "org_id", "org_1", "o", org("org_U")), org: "org_1"},
	}
}

// TestVerifyExactClaims runs the accepted claimCases: the claims read are those under their
// exact names, whatever else the token holds. (TestVerifyRefuses runs the refused ones.)
func TestVerifyExactClaims(t *testing.T) {
	t.Parallel()
	now := time.Now()
	iss := sessiontest.NewIssuer(t)
	v := newVerifier(t, iss, pinClock(now))
	for _, c := range claimCases(t, now) {
		if c.want != "" {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			claims, err := v.Verify(t.Context(), iss.MintRaw(c.payload))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			type read struct{ User, Session, Org string }
			want := read{User: "user_1", Session: "sess_user_1", Org: c.org}
			got := read{User: claims.UserID(), Session: claims.SessionID, Org: claims.ActiveOrganization()}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
		})
	}
}

// TestClaimsUnmarshal checks what UnmarshalJSON puts where, beyond what Verify shows.
func TestClaimsUnmarshal(t *testing.T) {
	t.Parallel()
	payload := `{"sub":"user_1","Sub":"user_U","iss":"https://clerk.test","azp":"https://app.test","sid":"sess_1",` +
		`"sts":"active","exp":1767225600.75,"nbf":-1.5,"iat":1767225500,"v":2,"org_id":"org_v1",` +
		`"o":{"id":"org_1","rol":"admin","slg":"acme","per":"read","ID":"org_U"},"aud":"x","jti":"y"}`
	var got session.Claims
	if err := json.Unmarshal([]byte(payload), &got); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	want := session.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    "https://clerk.test",
			Subject:   "user_1",
			ExpiresAt: jwt.NewNumericDate(time.Unix(1767225600, 0)), // fractions are dropped
			NotBefore: jwt.NewNumericDate(time.Unix(-2, 0)),         // ... toward the past
			IssuedAt:  jwt.NewNumericDate(time.Unix(1767225500, 0)),
		},
		AuthorizedParty: "https://app.test",
		SessionID:       "sess_1",
		SessionStatus:   "active",
		Version:         2,
		Organization:    session.Organization{ID: "org_1", Role: "admin", Slug: "acme"},
		OrgID:           "org_v1",
	}
	// decoded is unexported: compared through what it is for, Verify's malformed rows.
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(session.Claims{})); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
	if got.ActiveOrganization() != "org_1" {
		t.Errorf("ActiveOrganization = %q, want org_1", got.ActiveOrganization())
	}

	// A failed decoding leaves the claims as they were, and names neither values nor names
	// found in the payload.
	before := got
	err := got.UnmarshalJSON([]byte(`{"sub":"user_1","secret_name\n":1,"secret_name\n":2}`))
	if err == nil {
		t.Fatal("decoded a payload with a member twice")
	}
	if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "user_1") {
		t.Errorf("error quotes the payload: %v", err)
	}
	if diff := cmp.Diff(before, got, cmpopts.IgnoreUnexported(session.Claims{})); diff != "" {
		t.Errorf("a failed decoding changed the claims (-before +after):\n%s", diff)
	}
	for _, trailing := range []string{`{"sub":"user_1"}{}`, `{"sub":"user_1"} x`, `{"sub":"user_1"`} {
		if err := new(session.Claims).UnmarshalJSON([]byte(trailing)); err == nil {
			t.Errorf("decoded %q", trailing)
		}
	}
}

// FuzzClaims compares UnmarshalJSON with a reference reading of the same bytes: encoding/json
// into a map keeps every name exactly as the payload spells it, so a lookup there is what an
// exact reading must find. Whenever UnmarshalJSON succeeds, each claim it reads must equal the
// reference's value under the exact name (and be absent when the reference has none); whenever
// the reference shows one of them with the wrong JSON type, UnmarshalJSON must fail. Invalid
// JSON and anything but an object must fail too.
func FuzzClaims(f *testing.F) {
	for _, c := range claimCases(f, time.Unix(1767225600, 0)) {
		f.Add(c.payload)
	}
	for _, s := range []string{`{}`, `{"o":{}}`, `{"exp":-0}`, `{"exp":-0.5}`, `{"v":-0}`, `{"exp":253402300799.9}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		var c session.Claims
		err := c.UnmarshalJSON(payload)
		if !json.Valid(payload) {
			if err == nil {
				t.Fatalf("decoded invalid JSON %q", payload)
			}
			return
		}
		dec := json.NewDecoder(bytes.NewReader(payload))
		dec.UseNumber() // so that a number the claims never convert cannot fail the reference
		var ref map[string]any
		if dec.Decode(&ref) != nil || ref == nil {
			if err == nil {
				t.Fatalf("decoded a payload that is not an object: %q", payload)
			}
			return
		}

		var wrongType []string // claims the reference shows with a type UnmarshalJSON must refuse
		var mismatch []string  // claims UnmarshalJSON read otherwise than the reference
		checkString := func(name string, m map[string]any, got string) string {
			v, ok := m[name]
			if !ok {
				if got != "" {
					mismatch = append(mismatch, fmt.Sprintf("%s: got %q, absent", name, got))
				}
				return ""
			}
			s, ok := v.(string)
			if !ok {
				wrongType = append(wrongType, name)
			} else if got != s {
				mismatch = append(mismatch, fmt.Sprintf("%s: got %q, want %q", name, got, s))
			}
			return s
		}
		for name, got := range map[string]string{
			"sub": c.Subject, "iss": c.Issuer, "azp": c.AuthorizedParty, "sts": c.SessionStatus,
			"sid": c.SessionID, "org_id": c.OrgID,
		} {
			checkString(name, ref, got)
		}
		for name, got := range map[string]*jwt.NumericDate{"exp": c.ExpiresAt, "nbf": c.NotBefore, "iat": c.IssuedAt} {
			v, ok := ref[name]
			if !ok {
				if got != nil {
					mismatch = append(mismatch, name+": got a date, absent")
				}
				continue
			}
			n, ok := v.(json.Number)
			f, perr := strconv.ParseFloat(string(n), 64)
			switch {
			case !ok || perr != nil || math.Abs(f) > 253402300799:
				wrongType = append(wrongType, name)
			case got == nil:
				mismatch = append(mismatch, name+": got none, want "+string(n))
			case got.Unix() != int64(math.Floor(f)) || got.Nanosecond() != 0:
				mismatch = append(mismatch, fmt.Sprintf("%s: got %v, want %s", name, got.Time, n))
			}
		}
		version := 0
		if v, ok := ref["v"]; ok {
			n, ok := v.(json.Number)
			i, perr := strconv.Atoi(string(n))
			switch {
			case !ok || perr != nil:
				wrongType = append(wrongType, "v")
			case c.Version != i:
				mismatch = append(mismatch, fmt.Sprintf("v: got %d, want %d", c.Version, i))
			}
			version = i
		} else if c.Version != 0 {
			mismatch = append(mismatch, fmt.Sprintf("v: got %d, absent", c.Version))
		}
		var orgID string
		if v, ok := ref["o"]; ok {
			if o, ok := v.(map[string]any); ok {
				orgID = checkString("id", o, c.Organization.ID)
				checkString("rol", o, c.Organization.Role)
				checkString("slg", o, c.Organization.Slug)
			} else {
				wrongType = append(wrongType, "o")
			}
		} else if c.Organization != (session.Organization{}) {
			mismatch = append(mismatch, fmt.Sprintf("o: got %+v, absent", c.Organization))
		}

		if err != nil {
			return // refusing is always allowed: duplicates, for one, the reference cannot see
		}
		if len(wrongType) > 0 {
			t.Fatalf("decoded %q although %q have the wrong type", payload, wrongType)
		}
		if len(mismatch) > 0 {
			t.Fatalf("decoded %q otherwise than its exact names say:\n%s", payload, strings.Join(mismatch, "\n"))
		}
		want := orgID
		if version != 2 {
			want, _ = ref["org_id"].(string)
		}
		if got := c.ActiveOrganization(); got != want {
			t.Fatalf("ActiveOrganization of %q = %q, want %q", payload, got, want)
		}
	})
}
