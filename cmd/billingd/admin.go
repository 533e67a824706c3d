package main

import (
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/fx"

	apihttp "github.com/taskpod/billing/adapters/http"
	"github.com/taskpod/billing/adapters/outbox"
	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/ports"
)

// adminModule provides the admin services beyond agents: the outbox
// quarantine and the retry of transfers Stripe rejected.
var adminModule = fx.Module("admin",
	fx.Provide(newAdminDeps),
)

func newAdminDeps(pool *pgxpool.Pool, clock ports.Clock, log *slog.Logger) apihttp.AdminDeps {
	store := postgres.NewStore(pool, outbox.NewTxOutbox).WithLogger(log)
	return apihttp.AdminDeps{Admin: application.NewAdmin(store, clock, log)}
}
