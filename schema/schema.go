// Package schema holds the goose migrations that define clerksync's Postgres tables. They are
// embedded so every binary can migrate without files on disk; sqlc reads the same files.
// Migrations are append-only: never edit one that has shipped.
package schema

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
