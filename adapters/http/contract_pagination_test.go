package http

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
)

type pageItem struct {
	ID string `json:"id"`
}

type listPage struct {
	Data    []pageItem `json:"data"`
	HasMore bool       `json:"hasMore"`
}

// walkPages follows startingAfter (or endingBefore when backward) from the
// first page to the last and returns the ids in the order received.
func walkPages(env *contractEnv, path, token string, limit int, backwardFrom string) []string {
	env.t.Helper()
	var ids []string
	cursor := ""
	if backwardFrom != "" {
		cursor = "&endingBefore=" + backwardFrom
	}
	for range 100 {
		resp := env.expect(http.StatusOK, contractRequest{Method: "GET", Path: fmt.Sprintf("%s?limit=%d%s", path, limit, cursor), Token: token})
		var page listPage
		contractDecode(env.t, resp.Body, &page)
		if len(page.Data) > limit {
			env.t.Fatalf("page of %d items, above limit %d", len(page.Data), limit)
		}
		if backwardFrom != "" {
			// Each page is newest first; pages go towards newer items.
			pageIDs := []string{}
			for _, it := range page.Data {
				pageIDs = append(pageIDs, it.ID)
			}
			ids = append(pageIDs, ids...)
			if !page.HasMore {
				return ids
			}
			cursor = "&endingBefore=" + page.Data[0].ID
			continue
		}
		for _, it := range page.Data {
			ids = append(ids, it.ID)
		}
		if !page.HasMore {
			return ids
		}
		cursor = "&startingAfter=" + page.Data[len(page.Data)-1].ID
	}
	env.t.Fatal("pagination did not end after 100 pages")
	return nil
}

// Listing page by page while other requests insert tasks returns every
// task that existed at the start exactly once, in order.
func TestTaskPagesStableUnderInserts(t *testing.T) {
	env := newContractEnv(t)
	admin := env.token("admin", "ops")
	env.createAgent(admin, "free", 0, "usd")
	customer := env.token("customer", "user_pages")
	create := contractRequest{Method: "POST", Path: "/v1/tasks", Token: customer, Body: `{"title":"t","agentId":"free","maxPriceCents":0}`}

	var existing []string
	for range 23 {
		resp := env.expect(http.StatusCreated, create)
		var task pageItem
		contractDecode(t, resp.Body, &task)
		existing = append(existing, task.ID)
	}
	slices.Reverse(existing) // the list is newest first

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var inserted int
	var insertErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := env.sendE(create)
			if err != nil || resp.Status != http.StatusCreated {
				insertErr = fmt.Errorf("concurrent insert: %v, status %d", err, resp.Status)
				return
			}
			inserted++
		}
	}()
	forward := walkPages(env, "/v1/tasks", customer, 5, "")
	close(stop)
	wg.Wait()
	if insertErr != nil {
		t.Fatal(insertErr)
	}
	if inserted == 0 {
		t.Log("no insert landed during the walk; the check still covers ordering")
	}

	// New tasks are newer than every existing one, so they may only appear
	// before the existing ones; the existing ones appear once, in order.
	start := slices.Index(forward, existing[0])
	if start < 0 {
		t.Fatalf("the newest existing task %s is missing from the walk", existing[0])
	}
	if got := forward[start:]; !slices.Equal(got, existing) {
		t.Errorf("forward walk from the newest existing task:\n%v\nwant\n%v", got, existing)
	}

	backward := walkPages(env, "/v1/tasks", customer, 4, existing[len(existing)-1])
	want := forward[:len(forward)-1]
	if len(backward) < len(want) || !slices.Equal(backward[len(backward)-len(want):], want) {
		t.Errorf("backward walk ends with\n%v\nwant\n%v", backward, want)
	}
}

func TestAgentPagesForwardAndBackward(t *testing.T) {
	env := newContractEnv(t)
	admin := env.token("admin", "ops")
	for i := range 7 {
		env.createAgent(admin, fmt.Sprintf("agent%02d", i), 0, "usd")
	}
	forward := walkPages(env, "/v1/agents", admin, 3, "")
	if len(forward) != 7 {
		t.Fatalf("forward walk returned %d agents, want 7: %v", len(forward), forward)
	}
	for i, id := range forward {
		if want := fmt.Sprintf("agent%02d", 6-i); id != want {
			t.Errorf("agent %d is %s, want %s (newest first)", i, id, want)
		}
	}
	backward := walkPages(env, "/v1/agents", admin, 2, forward[6])
	if !slices.Equal(backward, forward[:6]) {
		t.Errorf("backward walk %v, want %v", backward, forward[:6])
	}
}
