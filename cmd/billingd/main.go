// Command billingd runs TaskPod Billing: the API with its outbox relay
// (serve, the default), schema migrations (migrate), the Stripe emulator
// alone (stripe-emulator) and API token administration (token).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/migrations"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "billingd:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve()
	case "migrate":
		return migrate()
	case "stripe-emulator":
		return runEmulator()
	case "token":
		return tokenCommand(args, stdout)
	case "ledger":
		return ledgerCommand(args, stdout)
	case "help", "-h", "--help":
		usage(stdout)
		return nil
	}
	usage(stderr)
	return fmt.Errorf("unknown command %q", cmd)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, `usage: billingd [command]

commands:
  serve                                   run the API and the outbox relay (default)
  migrate                                 apply database migrations and exit
  stripe-emulator                         run only the Stripe emulator on STRIPE_EMULATOR_ADDR
  token create --role ROLE --subject ID   mint an API token and print it (roles: customer, agent, auditor, admin)
         [--expires-in DURATION]
  token revoke TOKEN_ID                   revoke a token
  token list                              list tokens (never the token values)
  ledger verify                           recompute the ledger's hash chain and report the first broken link

environment:`)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, s := range envSpecs {
		fmt.Fprintf(tw, "  %s\t%s\t(default %q)\n", s.Name, s.Help, s.Default)
	}
	tw.Flush()
}

// defaultPoolSize is the database pool size unless DATABASE_URL sets
// pool_max_conns.
const defaultPoolSize = 16

// openDatabase creates the database if missing, connects and migrates it.
func openDatabase(ctx context.Context, cfg Config) (*pgxpool.Pool, int, error) {
	if err := postgres.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
		return nil, 0, fmt.Errorf("DATABASE_URL: %w", err)
	}
	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, 0, fmt.Errorf("DATABASE_URL: %w", err)
	}
	if !strings.Contains(cfg.DatabaseURL, "pool_max_conns") {
		// pgxpool's default, the number of CPUs with a floor of 4, makes
		// the relay, the sealer and the API queue for connections on a
		// small machine; pool_max_conns in DATABASE_URL overrides this.
		poolCfg.MaxConns = defaultPoolSize
	}
	// The service's queries are short, indexed lookups, for which
	// PostgreSQL's JIT compilation costs far more than it saves.
	poolCfg.ConnConfig.RuntimeParams["jit"] = "off"
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, 0, fmt.Errorf("DATABASE_URL: connect: %w", err)
	}
	version, err := postgres.Migrate(ctx, pool, migrations.FS)
	if err != nil {
		pool.Close()
		return nil, 0, fmt.Errorf("migrate database: %w", err)
	}
	return pool, version, nil
}

func migrate() error {
	cfg, err := LoadConfig()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pool, version, err := openDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	pool.Close()
	fmt.Printf("database at migration %d\n", version)
	return nil
}

func tokenCommand(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("token needs a subcommand: create, revoke or list")
	}
	cfg, err := LoadConfig()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, _, err := openDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	tokens := postgres.NewTokens(pool)

	switch args[0] {
	case "create":
		fs := flag.NewFlagSet("token create", flag.ContinueOnError)
		role := fs.String("role", "", "customer, agent, auditor or admin")
		subject := fs.String("subject", "", "customer: the TaskPod user id; agent: the agent id; others: a name")
		expiresIn := fs.Duration("expires-in", 0, "lifetime such as 720h; 0 means no expiry")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *role == "" || *subject == "" {
			return errors.New("token create needs --role and --subject")
		}
		var expires *time.Time
		if *expiresIn > 0 {
			t := time.Now().Add(*expiresIn)
			expires = &t
		}
		_, token, err := tokens.Create(ctx, *role, *subject, expires)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, token)
		return nil
	case "revoke":
		if len(args) != 2 {
			return errors.New("usage: billingd token revoke TOKEN_ID")
		}
		return tokens.Revoke(ctx, args[1])
	case "list":
		list, err := tokens.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tROLE\tSUBJECT\tCREATED\tLAST USED\tEXPIRES\tREVOKED")
		for _, t := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Role, t.Subject, stamp(&t.CreatedAt), stamp(t.LastUsedAt), stamp(t.ExpiresAt), stamp(t.RevokedAt))
		}
		return tw.Flush()
	}
	return fmt.Errorf("unknown token subcommand %q; use create, revoke or list", args[0])
}

func stamp(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
