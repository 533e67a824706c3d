// Package migrations embeds the SQL schema migrations, applied in file-name
// order by the PostgreSQL adapter.
package migrations

import "embed"

// FS contains the numbered *.sql migration files.
//
//go:embed *.sql
var FS embed.FS
