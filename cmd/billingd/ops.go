package main

import "go.uber.org/fx"

// opsModule provides operational extras such as the relay's router metrics.
var opsModule = fx.Module("ops")
