package main

import (
	"fmt"
	"io"

	"go.uber.org/fx"

	apihttp "github.com/taskpod/billing/adapters/http"
)

// ledgerModule provides the auditor's ledger services.
var ledgerModule = fx.Module("ledger",
	fx.Provide(func() apihttp.AuditDeps { return apihttp.AuditDeps{} }),
)

// ledgerCommand runs the ledger subcommands.
func ledgerCommand(args []string, stdout io.Writer) error {
	return fmt.Errorf("ledger %v: not available yet", args)
}
