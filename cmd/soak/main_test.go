package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/clerksync/clerksync/internal/soak"
)

func TestFaultFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		want    soak.Fault
		wantErr bool
	}{
		{in: "5s-10s", want: soak.Fault{Min: 5 * time.Second, Max: 10 * time.Second}},
		{in: "2m", want: soak.Fault{Min: 2 * time.Minute, Max: 2 * time.Minute}},
		{in: "0", want: soak.Fault{}},
		{in: "10s-5s", wantErr: true},
		{in: "often", wantErr: true},
	} {
		var got soak.Fault
		err := faultFlag{&got}.Set(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("Set(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if diff := cmp.Diff(tc.want, got); !tc.wantErr && diff != "" {
			t.Errorf("Set(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestRunRefusesBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-worker-kill", "soon"}, {"nats"}, {"-nope"}} {
		var stderr strings.Builder
		if err := run(t.Context(), args, io.Discard, &stderr); err == nil {
			t.Errorf("run(%q) = nil, want an error", args)
		}
	}
}
