package postgres

import (
	"testing"

	"github.com/taskpod/billing/migrations"
	"github.com/taskpod/billing/ports"
)

// TestEntriesPagingSeesLateCommits commits a transaction whose entry ids
// were taken before those of a transaction already listed. Paging by entry
// id would skip it; paging in seal order lists it on the next page.
func TestEntriesPagingSeesLateCommits(t *testing.T) {
	ctx := testContext(t)
	pool, _ := freshPool(t)
	if _, err := Migrate(ctx, pool, migrations.FS); err != nil {
		t.Fatal(err)
	}
	reader := NewLedgerReader(pool)
	// The platform accounts must exist already: a writer inserting a new
	// account waits for another uncommitted insert of it.
	setup := paymentPostings(t)[0]
	if err := appendLedger(t, NewStore(pool, nil), setup); err != nil {
		t.Fatal(err)
	}
	listed, _, err := reader.Entries(ctx, ports.LedgerEntryFilter{}, ports.EntryPage{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	cursor := listed[len(listed)-1].ID

	early := paymentPostings(t)[0]
	slow, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = slow.Rollback(ctx) }()
	if err := (ledgerRepository{slow}).Append(ctx, early); err != nil {
		t.Fatal(err)
	}
	late := paymentPostings(t)[0]
	if err := appendLedger(t, NewStore(pool, nil), late); err != nil {
		t.Fatal(err)
	}

	first, more, err := reader.Entries(ctx, ports.LedgerEntryFilter{}, ports.EntryPage{Limit: 100, After: cursor})
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != len(late.Entries) || more {
		t.Fatalf("first page has %d entries (hasMore %v), want the %d committed ones", len(first), more, len(late.Entries))
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	second, _, err := reader.Entries(ctx, ports.LedgerEntryFilter{}, ports.EntryPage{Limit: 100, After: first[len(first)-1].ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(second) != len(early.Entries) || second[0].TransactionID != early.ID {
		t.Fatalf("second page = %v, want the %d entries of the late commit %s", entryIDs(second), len(early.Entries), early.ID)
	}
	if second[0].ID >= first[0].ID {
		t.Errorf("the late commit's entry ids (%d...) are not below the first page's (%d...), so the test proves nothing",
			second[0].ID, first[0].ID)
	}
	back, _, err := reader.Entries(ctx, ports.LedgerEntryFilter{}, ports.EntryPage{Limit: 100, Before: second[0].ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(first)+len(listed) || back[len(listed)].ID != first[0].ID {
		t.Errorf("page before the late commit = %v, want the first page %v", entryIDs(back), entryIDs(first))
	}
}
