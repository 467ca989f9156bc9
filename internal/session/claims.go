package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are the claims of a Clerk session token that clerksync reads.
//
// They are decoded by UnmarshalJSON alone (golang-jwt's parser calls it), which reads every
// claim under its exact name and as its exact JSON type. encoding/json's struct decoding would
// match names case-insensitively, the last match winning: a signed token carrying "SUB" beside,
// or instead of, "sub" would have said whose it is. The struct tags only name the claims (and
// shape json.Marshal's output).
//
// Its own fields are values, but RegisteredClaims holds the dates by pointer: the token
// cache copies Claims with clone.
type Claims struct {
	// RegisteredClaims holds iss, sub, exp, nbf and iat, for golang-jwt's Validator. aud and jti
	// are not read, as clerksync checks neither: Audience and ID stay empty.
	jwt.RegisteredClaims
	// AuthorizedParty (azp) is the origin of the frontend the token was minted for.
	AuthorizedParty string `json:"azp,omitempty"`
	// SessionID (sid) is the Clerk session.
	SessionID string `json:"sid,omitempty"`
	// SessionStatus (sts) is "active", or "pending" while a session still has tasks to complete.
	SessionStatus string `json:"sts,omitempty"`
	// Version (v) is the version of Clerk's session token format: 2 for the tokens Clerk issues
	// today; 0 when absent, as in v1 tokens.
	Version int `json:"v,omitempty"`
	// Organization (o) is the active organization of a v2 token; zero when there is none.
	Organization Organization `json:"o"`
	// OrgID (org_id) is the active organization of a v1 token.
	OrgID string `json:"org_id,omitempty"`

	// decoded is set by UnmarshalJSON: the payload was a JSON object.
	decoded bool
}

// Organization is the o claim of a v2 token: the session's active organization.
type Organization struct {
	ID   string `json:"id"`  // the Clerk organization id
	Role string `json:"rol"` // the member's role in it, as the token spells it
	Slug string `json:"slg"`
}

// clone returns a copy of c that shares no memory with it.
func (c *Claims) clone() *Claims {
	cp := *c
	date := func(d *jwt.NumericDate) *jwt.NumericDate {
		if d == nil {
			return nil
		}
		copied := *d
		return &copied
	}
	cp.ExpiresAt, cp.NotBefore, cp.IssuedAt = date(c.ExpiresAt), date(c.NotBefore), date(c.IssuedAt)
	cp.Audience = slices.Clone(c.Audience)
	return &cp
}

// UserID returns the Clerk user id (sub) the token was issued to.
func (c *Claims) UserID() string { return c.Subject }

// ActiveOrganization returns the Clerk id of the session's active organization, or "" when it
// has none. Like Clerk's SDKs it reads o.id from a v2 token and org_id from any other: a v2 token
// never names its organization in org_id, so an org_id there is not Clerk's.
func (c *Claims) ActiveOrganization() string {
	if c.Version == 2 {
		return c.Organization.ID
	}
	return c.OrgID
}

// maxNumericDate bounds exp, nbf and iat in seconds either side of 1970: 9999-12-31T23:59:59Z.
// Beyond it the seconds no longer convert to a time safely (int64(1e300) is
// implementation-defined, the far past on amd64), so a far-future nbf could pass as long gone.
const maxNumericDate = 253402300799

// The decoding errors. None quotes the payload (the token) or a name found in it; the decoder's
// own errors do, so they are replaced by these rather than wrapped.
var (
	errNotObject  = errors.New("not a JSON object")
	errSyntax     = errors.New("not valid JSON")
	errDuplicate  = errors.New("a member name appears twice")
	errTrailing   = errors.New("data after the object")
	errNotString  = errors.New("not a string")
	errNotDate    = errors.New("not a number of seconds within years 0 to 9999")
	errNotInteger = errors.New("not an integer")
)

// UnmarshalJSON decodes a token's payload: a JSON object whose member names are compared byte
// for byte (after JSON unescaping) with the claims clerksync reads, each of which must have its
// JSON type — exp, nbf and iat a number (RFC 7519 §2's NumericDate: a string of digits or null is
// malformed, not absent), sub, iss, azp, sts, sid and org_id a string, v an integer, o an object.
// Any other member is skipped whatever it holds. A member name given twice is refused: RFC 7519
// §4 lets a parser reject duplicates, and rejecting keeps every reader of the token agreeing
// about what it says.
func (c *Claims) UnmarshalJSON(data []byte) error {
	var out Claims
	err := eachMember(data, func(name string, value json.RawMessage) error {
		var err error
		switch name {
		case "iss":
			out.Issuer, err = stringClaim(value)
		case "sub":
			out.Subject, err = stringClaim(value)
		case "exp":
			out.ExpiresAt, err = numericDate(value)
		case "nbf":
			out.NotBefore, err = numericDate(value)
		case "iat":
			out.IssuedAt, err = numericDate(value)
		case "azp":
			out.AuthorizedParty, err = stringClaim(value)
		case "sid":
			out.SessionID, err = stringClaim(value)
		case "sts":
			out.SessionStatus, err = stringClaim(value)
		case "v":
			out.Version, err = integerClaim(value)
		case "o":
			out.Organization, err = organizationClaim(value)
		case "org_id":
			out.OrgID, err = stringClaim(value)
		default:
			return nil
		}
		if err != nil {
			// name is one of the cases above, never a name only the token holds.
			return fmt.Errorf("claim %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("decoding claims: %w", err)
	}
	out.decoded = true
	*c = out
	return nil
}

// eachMember calls fn with the name (unescaped) and raw value of each member of the JSON object
// data, in order. It refuses anything but exactly one object, and a name that appears twice.
func eachMember(data []byte, fn func(name string, value json.RawMessage) error) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errNotObject
	}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return errSyntax
		}
		name, ok := tok.(string)
		if !ok {
			return errSyntax
		}
		if seen[name] {
			return errDuplicate
		}
		seen[name] = true
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return errSyntax
		}
		if err := fn(name, value); err != nil {
			return err
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return errSyntax
	}
	if _, err := dec.Token(); err != io.EOF {
		return errTrailing
	}
	return nil
}

// stringClaim decodes a JSON string; null is not one.
func stringClaim(value json.RawMessage) (string, error) {
	var s string
	if len(value) == 0 || value[0] != '"' || json.Unmarshal(value, &s) != nil {
		return "", errNotString
	}
	return s, nil
}

// isNumber reports whether value is a JSON number. (A JSON value starting with '-' or a digit
// is one: the decoder validated it.)
func isNumber(value json.RawMessage) bool {
	return len(value) > 0 && (value[0] == '-' || '0' <= value[0] && value[0] <= '9')
}

// numericDate decodes a NumericDate: a JSON number of seconds since 1970, fractions allowed
// (and dropped, as golang-jwt's one-second TimePrecision does).
func numericDate(value json.RawMessage) (*jwt.NumericDate, error) {
	if !isNumber(value) {
		return nil, errNotDate
	}
	f, err := strconv.ParseFloat(string(value), 64)
	if err != nil || math.Abs(f) > maxNumericDate {
		return nil, errNotDate
	}
	return jwt.NewNumericDate(time.Unix(int64(math.Floor(f)), 0)), nil
}

// integerClaim decodes a JSON number without fraction or exponent that fits an int.
func integerClaim(value json.RawMessage) (int, error) {
	if !isNumber(value) {
		return 0, errNotInteger
	}
	n, err := strconv.Atoi(string(value))
	if err != nil {
		return 0, errNotInteger
	}
	return n, nil
}

// organizationClaim decodes Clerk's o claim, its members matched exactly too: id, rol and slg
// must be strings; the rest (per, fpm: permissions) is not read.
func organizationClaim(value json.RawMessage) (Organization, error) {
	var o Organization
	if len(value) == 0 || value[0] != '{' {
		return o, errNotObject
	}
	err := eachMember(value, func(name string, value json.RawMessage) error {
		var err error
		switch name {
		case "id":
			o.ID, err = stringClaim(value)
		case "rol":
			o.Role, err = stringClaim(value)
		case "slg":
			o.Slug, err = stringClaim(value)
		default:
			return nil
		}
		if err != nil {
			return fmt.Errorf("member %s: %w", name, err)
		}
		return nil
	})
	return o, err
}
