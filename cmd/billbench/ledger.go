package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/adapters/outbox"
	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/adapters/system"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// A posting is one unit of work that appends a hold and the capture that
// resolves it, as a paid task's authorization and capture do. These are two
// ledger transactions of three entries each. Each debits
// customer_authorizations and credits the agent's payable and
// platform_fee_revenue.
const postingAmount = 1000 // minor units of usd

// postingIDs are the ids one posting writes.
type postingIDs struct {
	payment, task, hold, capture string
}

func newPostingIDs() postingIDs {
	ids := system.IDs{}
	return postingIDs{payment: ids.NewID("pay"), task: ids.NewID("task"), hold: ids.NewID("ltx"), capture: ids.NewID("ltx")}
}

// accountOwner names the per-writer accounts, so the postings of different
// writers never share an agent payable.
func accountOwner(worker int) string { return fmt.Sprintf("bench_w%02d", worker) }

// post appends one posting through the application's ports and the
// PostgreSQL adapter. With spread set, the two platform accounts are
// replaced by accounts of the owner, so no two writers touch one account.
func post(ctx context.Context, store ports.Store, owner string, ids postingIDs, spread bool) error {
	rec := domain.PaymentRecord{
		ID: ids.payment, TaskID: ids.task, AgentID: owner,
		Amount: domain.MustMoney(postingAmount, "usd"), FeeRate: 250, CapturedAmount: postingAmount,
	}
	meta := domain.LedgerMeta{
		Actor: "system:billbench", Reason: "benchmark posting", TaskID: ids.task, PaymentID: ids.payment,
		EffectiveAt: system.Clock{}.Now(),
	}
	hold, err := domain.HoldPosting(ids.hold, rec, meta)
	if err != nil {
		return err
	}
	capture, err := domain.CapturePosting(ids.capture, ids.hold, rec, meta)
	if err != nil {
		return err
	}
	if spread {
		spreadAccounts(&hold, owner)
		spreadAccounts(&capture, owner)
	}
	return store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		if err := tx.Ledger().Append(ctx, hold); err != nil {
			return err
		}
		return tx.Ledger().Append(ctx, capture)
	})
}

// spreadAccounts moves the shared platform accounts of t to accounts of owner.
func spreadAccounts(t *domain.LedgerTransaction, owner string) {
	for i, e := range t.Entries {
		switch e.Account {
		case domain.AccountCustomerAuthorizations, domain.AccountPlatformFeeRevenue:
			t.Entries[i].Account = domain.AccountID(string(e.Account) + ":" + owner)
		}
	}
}

// ledgerTemplate records the statements of one posting by the owner
// "bench_tmpl", after a first posting has created its accounts.
func ledgerTemplate(ctx context.Context, traced *pgxpool.Pool, spread bool) (postingIDs, *recorder, error) {
	store := postgres.NewStore(traced, outbox.NewTxOutbox)
	if err := post(ctx, store, "bench_tmpl", newPostingIDs(), spread); err != nil {
		return postingIDs{}, nil, err
	}
	ids := newPostingIDs()
	rec := &recorder{started: time.Now()}
	if err := post(withRecorder(ctx, rec), store, "bench_tmpl", ids, spread); err != nil {
		return postingIDs{}, nil, err
	}
	return ids, rec, nil
}

// replayPosting replays a posting trace for a worker with fresh ids.
func replayPosting(ctx context.Context, r *replayer, tmplIDs postingIDs, rec *recorder, worker int) error {
	ids := newPostingIDs()
	sub := newSubstitution(
		tmplIDs.payment, ids.payment, tmplIDs.task, ids.task,
		tmplIDs.hold, ids.hold, tmplIDs.capture, ids.capture,
		"bench_tmpl", accountOwner(worker),
	)
	sub.shift = time.Since(rec.started)
	return r.run(ctx, rec.events, sub)
}

// ledgerScenario measures postings per second through the application
// against the replayed SQL at each concurrency, then shared against
// per-writer platform accounts.
func (b *bench) ledgerScenario(ctx context.Context) error {
	traced, err := b.newPool(ctx, 2, true)
	if err != nil {
		return err
	}
	defer traced.Close()
	tmplIDs, rec, err := ledgerTemplate(ctx, traced, false)
	if err != nil {
		return fmt.Errorf("record posting template: %w", err)
	}
	b.section("Ledger posting: statements of one posting", traceBlock(rec.events))

	appRun := func(pool *pgxpool.Pool, writers int, spread bool) func(context.Context) (loadResult, error) {
		store := postgres.NewStore(pool, outbox.NewTxOutbox)
		return func(ctx context.Context) (loadResult, error) {
			return runLoad(ctx, writers, b.cfg.duration, 3, func(ctx context.Context, w int) error {
				return post(ctx, store, accountOwner(w), newPostingIDs(), spread)
			}), nil
		}
	}

	for _, writers := range []int{1, 8, 32} {
		appPool, err := b.newPool(ctx, writers, false)
		if err != nil {
			return err
		}
		basePool, err := b.newPool(ctx, writers, false)
		if err != nil {
			appPool.Close()
			return err
		}
		r := &replayer{pool: basePool}
		cmp, err := compare(ctx, b.cfg.rounds,
			variant{"app", appRun(appPool, writers, false)},
			variant{"baseline", func(ctx context.Context) (loadResult, error) {
				return runLoad(ctx, writers, b.cfg.duration, 3, func(ctx context.Context, w int) error {
					return replayPosting(ctx, r, tmplIDs, rec, w)
				}), nil
			}},
		)
		appPool.Close()
		basePool.Close()
		if err != nil {
			return fmt.Errorf("ledger posting at %d writers: %w", writers, err)
		}
		target := "—"
		var min float64
		if writers >= 8 {
			target, min = "≥ 0.7", 0.7
		}
		b.addRatio(resultRow{
			scenario: "ledger posting", measure: fmt.Sprintf("postings/s, %s", countOf(writers, "writer")),
			appLabel: "app", baseLabel: "raw SQL", unit: "/s",
			app: cmp.rate("app"), base: cmp.rate("baseline"), target: target, min: min,
			detail: fmt.Sprintf("app rounds %s; raw SQL rounds %s; app p99 %s", formatRates(cmp.rates("app")),
				formatRates(cmp.rates("baseline")), formatDuration(percentile(cmp.latencies("app"), 99))),
		})
		if (min > 0 && cmp.rate("app") < min*cmp.rate("baseline")) || (b.cfg.profileAll && writers == 32) {
			b.profileLater("ledger posting at "+fmt.Sprint(writers)+" writers", func(ctx context.Context) error {
				pool, err := b.newPool(ctx, writers, false)
				if err != nil {
					return err
				}
				defer pool.Close()
				res, _ := appRun(pool, writers, false)(ctx)
				return res.firstErr
			})
		}
	}

	for _, writers := range []int{8, 32} {
		hotPool, err := b.newPool(ctx, writers, false)
		if err != nil {
			return err
		}
		spreadPool, err := b.newPool(ctx, writers, false)
		if err != nil {
			hotPool.Close()
			return err
		}
		cmp, err := compare(ctx, b.cfg.rounds,
			variant{"hot", appRun(hotPool, writers, false)},
			variant{"spread", appRun(spreadPool, writers, true)},
		)
		hotPool.Close()
		spreadPool.Close()
		if err != nil {
			return fmt.Errorf("hot account at %d writers: %w", writers, err)
		}
		row := resultRow{
			scenario: "hot account", measure: fmt.Sprintf("postings/s, %d writers", writers),
			appLabel: "hot", baseLabel: "spread", unit: "/s",
			app: cmp.rate("hot"), base: cmp.rate("spread"), target: "≥ 0.8", min: 0.8,
			detail: fmt.Sprintf("hot rounds %s; spread rounds %s", formatRates(cmp.rates("hot")), formatRates(cmp.rates("spread"))),
		}
		b.addRatio(row)
		if row.failed() {
			b.profileLater(fmt.Sprintf("hot account at %d writers", writers), func(ctx context.Context) error {
				pool, err := b.newPool(ctx, writers, false)
				if err != nil {
					return err
				}
				defer pool.Close()
				res, _ := appRun(pool, writers, false)(ctx)
				return res.firstErr
			})
		}
	}
	return nil
}

// countOf returns "1 writer" or "8 writers".
func countOf(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// traceBlock renders a trace as a fenced list for the report.
func traceBlock(events []event) string {
	return "```\n" + strings.Join(describe(events), "\n") + "\n```"
}
