package main

import (
	"go.uber.org/fx"

	apihttp "github.com/taskpod/billing/adapters/http"
)

// webhookModule provides Stripe webhook handling.
var webhookModule = fx.Module("webhooks",
	fx.Provide(func() apihttp.WebhookDeps { return apihttp.WebhookDeps{} }),
)
