package loadgen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/clerksync/clerksync/internal/loadgen"
	"github.com/clerksync/clerksync/internal/postgres/postgrestest"
)

// TestAllRunsEveryStage runs `loadgen all` in miniature against a stack of its own: every stage
// must run, every operation succeed, and every target be computed. It checks no speed.
func TestAllRunsEveryStage(t *testing.T) {
	t.Parallel()
	o := loadgen.DefaultAllOptions()
	o.N, o.Clients, o.Sync = 60, []int{4}, "both"
	o.UpsertParallel, o.WorkerParallel = []int{1, 2}, 2
	o.E2ERate, o.E2EDuration, o.E2EClients = 100, 500*time.Millisecond, 4
	o.APIClients, o.APIDuration, o.APIUsers = 4, 300*time.Millisecond, 20
	o.Seed = 99
	o.Stack = loadgen.StackOptions{Dir: t.TempDir(), DatabaseURL: postgrestest.ServerURL(t)}
	o.Progress = &loadgen.Progress{}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := loadgen.All(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	var wantStages = []string{
		"publish (sync always) c=4", "publish atomic batches of 16 (sync always) c=4", "ingest (sync always) c=4", "bare handler (sync always) c=4",
		"publish (default sync) c=4", "ingest (default sync) c=4", "bare handler (default sync) c=4",
		"upsert baseline p=1", "upsert baseline p=2", "raw fold baseline p=2", "worker drain",
		"e2e @100/s", "e2e flat out c=4", "api baseline c=4", "api /auth/me c=4",
	}
	var got []string
	for _, s := range rep.Stages {
		got = append(got, s.Stage)
		if s.Count == 0 || s.Failed() {
			t.Errorf("%s: %d operations, %d of %d attempts succeeded, error %q", s.Stage, s.Count, s.OK(), s.Attempts(), s.Error)
		}
	}
	if strings.Join(got, "|") != strings.Join(wantStages, "|") {
		t.Fatalf("stages\n got %q\nwant %q", got, wantStages)
	}
	for _, s := range rep.Stages {
		if s.Stage == "worker drain" && !strings.Contains(s.Note, "batches of") {
			t.Errorf("worker drain note lacks the worker's batches: %q", s.Note)
		}
		if strings.HasPrefix(s.Stage, "e2e") && (s.Lag == nil || s.Lag.Count != s.Count) {
			t.Errorf("%s: lag of %v events, want one per event (%d)", s.Stage, s.Lag, s.Count)
		}
	}
	// The CPU targets need /proc, which the machines this runs on have.
	if len(rep.Targets) != 15 {
		t.Errorf("%d targets, want 15: %+v", len(rep.Targets), rep.Targets)
	}

	var table bytes.Buffer
	if err := rep.WriteTable(&table, true); err != nil {
		t.Fatal(err)
	}
	for _, want := range append(wantStages, "worker ÷ raw upsert, p=2", "worker ÷ raw fold, p=2", "worker process CPU per event", "ingest ÷ bare handler, sync always, c=4", "webhook 2xx → row visible p99 @100/s") {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Stages []struct {
			Stage   string  `json:"stage"`
			Rate    float64 `json:"rate_per_s"`
			Elapsed float64 `json:"elapsed_s"`
		} `json:"stages"`
	}
	if err := json.Unmarshal(b, &back); err != nil || len(back.Stages) != len(wantStages) || back.Stages[0].Elapsed <= 0 {
		t.Errorf("JSON report does not read back: %v\n%s", err, b)
	}
	t.Logf("\n%s", table.String())
}
