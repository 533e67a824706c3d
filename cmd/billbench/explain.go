package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// readAudit runs the reader call behind auditor query qi in this process,
// on pool, so its statements can be recorded and profiled.
func readAudit(ctx context.Context, pool *pgxpool.Pool, a *auditDB, qi int) error {
	reader := postgres.NewLedgerReader(pool)
	var books ports.LedgerBooks = reader
	var entries ports.LedgerReader = reader
	asOf := middleOfHistory(a)
	switch qi {
	case 0:
		_, _, err := entries.Entries(ctx, ports.LedgerEntryFilter{}, ports.EntryPage{Limit: 50})
		return err
	case 1:
		cursor, err := a.middleEntry(ctx)
		if err != nil {
			return err
		}
		_, _, err = entries.Entries(ctx, ports.LedgerEntryFilter{AccountID: statementAccount}, ports.EntryPage{Limit: 50, After: cursor})
		return err
	case 2:
		_, err := books.Account(ctx, domain.AccountID(statementAccount), asOf)
		return err
	case 3:
		_, err := books.TrialBalance(ctx, asOf)
		return err
	}
	return fmt.Errorf("no reader call for auditor query %d", qi)
}

// explainAudit records the statements of auditor query qi and returns the
// plan of the slowest one, run again under EXPLAIN (ANALYZE, BUFFERS).
func (b *bench) explainAudit(ctx context.Context, a *auditDB, qi int) (string, error) {
	traced, err := newPoolOn(ctx, a.url, 2, true)
	if err != nil {
		return "", err
	}
	defer traced.Close()
	rec := &recorder{started: time.Now()}
	if err := readAudit(withRecorder(ctx, rec), traced, a, qi); err != nil {
		return "", err
	}
	return explainSlowest(ctx, a.pool, rec.trace())
}

// explainSlowest returns EXPLAIN (ANALYZE, BUFFERS) of the slowest SELECT
// of a trace, with the statement and its recorded time.
func explainSlowest(ctx context.Context, pool *pgxpool.Pool, events []event) (string, error) {
	var reads []event
	for _, e := range events {
		verb := strings.ToUpper(strings.Fields(e.SQL + " x")[0])
		if e.HTTP == nil && (verb == "SELECT" || verb == "WITH") {
			reads = append(reads, e)
		}
	}
	if len(reads) == 0 {
		return "", fmt.Errorf("the trace has no SELECT among %d statements", len(events))
	}
	sort.SliceStable(reads, func(i, j int) bool { return reads[i].Took > reads[j].Took })
	slowest := reads[0]

	rows, err := pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+slowest.SQL, slowest.Args...)
	if err != nil {
		return "", fmt.Errorf("explain %s: %w", firstLine(slowest.SQL), err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return "", err
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	return fmt.Sprintf("The slowest of its %d statements took %s when recorded:\n\n```sql\n%s\n```\n\n```\n%s\n```",
		len(events), formatDuration(slowest.Took), strings.TrimSpace(dedent(slowest.SQL)), strings.Join(plan, "\n")), nil
}

// dedent removes the indentation common to the lines of an SQL literal.
func dedent(sql string) string {
	lines := strings.Split(strings.Trim(sql, "\n"), "\n")
	common := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		indent := len(l) - len(strings.TrimLeft(l, " \t"))
		if common < 0 || indent < common {
			common = indent
		}
	}
	for i, l := range lines {
		if len(l) >= common && common > 0 {
			lines[i] = l[common:]
		}
	}
	return strings.Join(lines, "\n")
}
