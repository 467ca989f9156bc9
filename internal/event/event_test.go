package event_test

import (
	"regexp"
	"testing"

	"github.com/clerksync/clerksync/internal/event"
)

var typeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$`)

func TestValidType(t *testing.T) {
	t.Parallel()
	tests := []struct {
		typ  string
		want bool
	}{
		{"user.created", true},
		{"user.updated", true},
		{"organizationMembership.created", true},
		{"a.b.c_1", true},
		{"user", false},
		{"", false},
		{".user", false},
		{"user.", false},
		{"user..created", false},
		{"user.*", false},
		{"user.>", false},
		{"1user.created", false},
		{"user.1created", false},
		{"user._created", false},
		{"user created.x", false},
		{"user.créé", false},
	}
	for _, tt := range tests {
		if got := event.ValidType(tt.typ); got != tt.want {
			t.Errorf("ValidType(%q) = %v, want %v", tt.typ, got, tt.want)
		}
		if got := typeRE.MatchString(tt.typ); got != tt.want {
			t.Errorf("contract regexp disagrees with the table on %q", tt.typ)
		}
	}
}

// FuzzValidType checks the hand-written matcher against the contract's regular expression.
func FuzzValidType(f *testing.F) {
	for _, s := range []string{"user.created", "a.b", "a..b", "user.>", "x", "A_1.b2.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := event.ValidType(s), typeRE.MatchString(s); got != want {
			t.Fatalf("ValidType(%q) = %v, regexp says %v", s, got, want)
		}
	})
}
