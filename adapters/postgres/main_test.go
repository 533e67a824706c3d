package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/adapters/postgres/pgtest"
	"github.com/taskpod/billing/migrations"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var (
	migrateOnce sync.Once
	migrateErr  error
)

// migratedPool returns the package's shared pool with every migration
// applied. Tests that share it use random ids so they can run in parallel.
func migratedPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool := pgtest.Pool(t)
	migrateOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, migrateErr = Migrate(ctx, pool, migrations.FS)
	})
	if migrateErr != nil {
		t.Fatalf("migrate the shared test database: %v", migrateErr)
	}
	return pool
}

// freshPool creates an empty database for a test that needs its own schema
// and drops it when the test ends.
func freshPool(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	ctx := testContext(t)
	name, err := pgtest.CreateDatabase(ctx, "m")
	if err != nil {
		t.Fatalf("create database: %v", err)
	}
	url := pgtest.DatabaseURL(name)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("connect to %s: %v", name, err)
	}
	t.Cleanup(func() {
		pool.Close()
		dropCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pgtest.DropDatabase(dropCtx, name); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return pool, url
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// uniqueID returns prefix followed by random hex, so parallel tests and
// repeated runs never collide on keys.
func uniqueID(prefix string) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b)
}
