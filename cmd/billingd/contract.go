package main

import (
	"go.uber.org/fx"

	apihttp "github.com/taskpod/billing/adapters/http"
)

// contractModule provides idempotency keys and rate limits for the API.
var contractModule = fx.Module("contract",
	fx.Provide(func() apihttp.ContractDeps { return apihttp.ContractDeps{} }),
)
