package postgres

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// seedTasks inserts count tasks for one new customer, one second apart, with
// pairs sharing a creation time so the id breaks ties. It returns the ids
// newest first, the order of a listing.
func seedTasks(t *testing.T, store *Store, count int) (customerID string, newestFirst []string) {
	t.Helper()
	agent := insertAgent(t, store)
	customerID = uniqueID("user_")
	base := testNow().Add(-time.Hour)
	var tasks []domain.Task
	for i := range count {
		tasks = append(tasks, newTask(t, agent, customerID, base.Add(time.Duration(i/2)*time.Second)))
	}
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		for _, task := range tasks {
			if err := tx.Tasks().Insert(ctx, task); err != nil {
				return err
			}
		}
		return nil
	})
	slices.SortFunc(tasks, func(a, b domain.Task) int {
		ra, rb := a.Record(), b.Record()
		if c := rb.CreatedAt.Compare(ra.CreatedAt); c != 0 {
			return c
		}
		return -compareStrings(ra.ID, rb.ID)
	})
	for _, task := range tasks {
		newestFirst = append(newestFirst, task.ID())
	}
	return customerID, newestFirst
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func listTaskIDs(t *testing.T, store *Store, f ports.TaskFilter, page ports.Page) ([]string, bool) {
	t.Helper()
	var ids []string
	var hasMore bool
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		tasks, more, err := tx.Tasks().List(ctx, f, page)
		for _, task := range tasks {
			ids = append(ids, task.ID())
		}
		hasMore = more
		return err
	})
	return ids, hasMore
}

// pageForward walks a listing from the newest item with StartingAfter.
func pageForward(t *testing.T, store *Store, f ports.TaskFilter, limit int) []string {
	t.Helper()
	var all []string
	cursor := ""
	for range 100 {
		ids, more := listTaskIDs(t, store, f, ports.Page{Limit: limit, StartingAfter: cursor})
		all = append(all, ids...)
		if !more {
			return all
		}
		if len(ids) == 0 {
			t.Fatal("an empty page reported more items")
		}
		cursor = ids[len(ids)-1]
	}
	t.Fatal("paging forward did not end after 100 pages")
	return nil
}

func TestTaskPaginationForwardAndBackward(t *testing.T) {
	store := newTestStore(t)
	customerID, want := seedTasks(t, store, 25)
	filter := ports.TaskFilter{CustomerID: customerID}

	if got := pageForward(t, store, filter, 10); !slices.Equal(got, want) {
		t.Fatalf("forward pages = %v\nwant %v", got, want)
	}

	// Walk back from the oldest item, prepending each newer page.
	var backward []string
	cursor := want[len(want)-1]
	pages := 0
	for {
		ids, more := listTaskIDs(t, store, filter, ports.Page{Limit: 10, EndingBefore: cursor})
		backward = append(slices.Clone(ids), backward...)
		pages++
		if !more {
			break
		}
		cursor = ids[0]
	}
	if wantBackward := want[:len(want)-1]; !slices.Equal(backward, wantBackward) {
		t.Errorf("backward pages = %v\nwant %v", backward, wantBackward)
	}
	if pages != 3 {
		t.Errorf("backward walk took %d pages, want 3 (10, 10, 4 items)", pages)
	}

	first, more := listTaskIDs(t, store, filter, ports.Page{})
	if len(first) != defaultPageLimit || !more {
		t.Errorf("default page has %d items and hasMore %v, want %d and true", len(first), more, defaultPageLimit)
	}
	all, more := listTaskIDs(t, store, filter, ports.Page{Limit: 1000})
	if len(all) != 25 || more {
		t.Errorf("a limit above the maximum returned %d items and hasMore %v, want 25 and false", len(all), more)
	}
}

func TestTaskPaginationWithConcurrentInserts(t *testing.T) {
	store := newTestStore(t)
	customerID, want := seedTasks(t, store, 25)
	filter := ports.TaskFilter{CustomerID: customerID}
	agent := insertAgent(t, store)

	// Newer tasks arrive while a client pages through the older ones.
	stop := make(chan struct{})
	var inserted atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			task, err := domain.NewTask(domain.NewTaskInput{
				ID: uniqueID("task_"), CustomerID: customerID, Title: "Concurrent", MaxPrice: 2000, Agent: agent, Now: testNow(),
			})
			if err != nil {
				t.Errorf("build concurrent task: %v", err)
				return
			}
			if err := store.InTx(context.Background(), func(ctx context.Context, tx ports.Tx) error {
				return tx.Tasks().Insert(ctx, task)
			}); err != nil {
				t.Errorf("concurrent insert: %v", err)
				return
			}
			inserted.Add(1)
		}
	})

	var got []string
	cursor := ""
	for {
		ids, more := listTaskIDs(t, store, filter, ports.Page{Limit: 3, StartingAfter: cursor})
		got = append(got, ids...)
		if !more {
			break
		}
		cursor = ids[len(ids)-1]

		// Make sure at least one insert lands between any two pages.
		seen := inserted.Load()
		for inserted.Load() == seen && !t.Failed() {
			time.Sleep(time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()

	// The walk began at the newest task of the moment, so it may start with
	// some concurrent tasks and then must list every seeded task exactly once.
	start := slices.Index(got, want[0])
	if start < 0 {
		t.Fatalf("the walk never reached the newest seeded task; got %v", got)
	}
	if !slices.Equal(got[start:], want) {
		t.Errorf("seeded tasks listed as %v\nwant %v", got[start:], want)
	}
}

func TestPaginationRejectsBadCursors(t *testing.T) {
	store := newTestStore(t)
	customerID, ids := seedTasks(t, store, 2)
	_, otherIDs := seedTasks(t, store, 1)

	cases := []struct {
		name  string
		page  ports.Page
		field string
	}{
		{"unknown startingAfter", ports.Page{StartingAfter: uniqueID("task_")}, "startingAfter"},
		{"unknown endingBefore", ports.Page{EndingBefore: uniqueID("task_")}, "endingBefore"},
		{"another customer's task", ports.Page{StartingAfter: otherIDs[0]}, "startingAfter"},
		{"both cursors", ports.Page{StartingAfter: ids[0], EndingBefore: ids[1]}, "endingBefore"},
		{"negative limit", ports.Page{Limit: -1}, "limit"},
	}
	for _, c := range cases {
		err := store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
			_, _, err := tx.Tasks().List(ctx, ports.TaskFilter{CustomerID: customerID}, c.page)
			return err
		})
		var invalid *domain.ValidationError
		if !errors.As(err, &invalid) {
			t.Errorf("%s: got %v, want a *domain.ValidationError", c.name, err)
			continue
		}
		if invalid.Field != c.field {
			t.Errorf("%s: error names field %q, want %q", c.name, invalid.Field, c.field)
		}
	}
}

func TestAgentListActiveOnly(t *testing.T) {
	store := newTestStore(t)
	active := insertAgent(t, store)
	inactive := insertAgent(t, store)
	inactive.Active = false
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		return tx.Agents().Update(ctx, inactive)
	})

	listed := func(f ports.AgentFilter) map[string]bool {
		seen := map[string]bool{}
		cursor := ""
		for {
			var page []domain.Agent
			var more bool
			inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
				var err error
				page, more, err = tx.Agents().List(ctx, f, ports.Page{Limit: 100, StartingAfter: cursor})
				return err
			})
			for _, a := range page {
				if seen[a.ID] {
					t.Errorf("agent %s listed twice", a.ID)
				}
				seen[a.ID] = true
			}
			if !more {
				return seen
			}
			cursor = page[len(page)-1].ID
		}
	}

	all := listed(ports.AgentFilter{})
	if !all[active.ID] || !all[inactive.ID] {
		t.Errorf("unfiltered list misses an agent: active %v, inactive %v", all[active.ID], all[inactive.ID])
	}
	activeOnly := listed(ports.AgentFilter{ActiveOnly: true})
	if !activeOnly[active.ID] {
		t.Error("ActiveOnly list misses the active agent")
	}
	if activeOnly[inactive.ID] {
		t.Error("ActiveOnly list includes the inactive agent")
	}
}
