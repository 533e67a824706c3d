package main

import (
	"go.uber.org/fx"

	apihttp "github.com/taskpod/billing/adapters/http"
)

// adminModule provides the admin services beyond agents.
var adminModule = fx.Module("admin",
	fx.Provide(func() apihttp.AdminDeps { return apihttp.AdminDeps{} }),
)
