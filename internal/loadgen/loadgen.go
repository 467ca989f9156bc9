// Package loadgen measures clerksync against the raw limits of the machine it runs on. Each part
// is loaded next to the bare operation underneath it, with the same realistic Clerk history
// (clerkgen: creates, updates, deletes, late deliveries, ~10% resent svix-ids): ingest against
// a synchronous JetStream publish, the worker against a bare unnest upsert, /auth/me against an
// echo handler that only checks the RS256 token and reads one row; plus the pipeline end to end
// (webhook 2xx → row visible). All runs every stage against a stack it starts in this process
// and reports ratios against the baselines of the same run, which is what survives a noisy,
// shared machine. cmd/loadgen wires it; docs/benchmarks.md holds its results.
//
// It only measures: it must never write to a live projection (the upsert baseline writes into a
// scratch copy of users, the publish baseline into a scratch stream, All into a scratch database,
// each dropped afterwards), and it must not be imported by the services. Its few SQL statements
// live here rather than in queries/ because they touch scratch tables sqlc never sees, or only
// read what the worker wrote.
package loadgen
