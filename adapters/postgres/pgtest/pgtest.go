// Package pgtest gives each test package its own fresh PostgreSQL database.
//
// A package calls Main from TestMain; Main creates a database with a unique
// name on the server named by TEST_DATABASE_URL, runs the tests and drops the
// database afterwards. Tests then call Pool or URL to reach it.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultServerURL is the administrative connection used when
// TEST_DATABASE_URL is unset: the local developer and CI server.
const DefaultServerURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

var (
	mu    sync.Mutex
	dbURL string
	pool  *pgxpool.Pool
)

// ServerURL returns the administrative connection string for the test server.
func ServerURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultServerURL
}

// Main creates the package's database, runs the tests and drops the database.
// Use it as the body of TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	name, err := CreateDatabase(ctx, "t")
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}
	dbURL = DatabaseURL(name)

	code := m.Run()

	mu.Lock()
	if pool != nil {
		pool.Close()
	}
	mu.Unlock()

	dropCtx, dropCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer dropCancel()
	if err := DropDatabase(dropCtx, name); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
	}
	return code
}

// URL returns the connection string of the package's database.
func URL(t testing.TB) string {
	t.Helper()
	if dbURL == "" {
		t.Fatal("pgtest: the package has no database; call pgtest.Main from TestMain")
	}
	return dbURL
}

// Pool returns a connection pool to the package's database, shared by all
// tests of the package and closed by Main.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	u := URL(t)

	mu.Lock()
	defer mu.Unlock()
	if pool != nil {
		return pool
	}
	p, err := pgxpool.New(context.Background(), u)
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v", u, err)
	}
	pool = p
	return pool
}

// CreateDatabase creates an empty database whose name starts with prefix and
// the test binary's name, and returns that name.
func CreateDatabase(ctx context.Context, prefix string) (string, error) {
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return "", err
	}
	binary := strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
	binary = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, strings.ToLower(binary))
	if len(binary) > 30 {
		binary = binary[:30]
	}
	name := fmt.Sprintf("%s_%s_%s", prefix, binary, hex.EncodeToString(suffix))

	conn, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		return "", fmt.Errorf("connect to test server %s (is PostgreSQL running?): %w", redact(ServerURL()), err)
	}
	defer conn.Close(ctx)

	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return name, nil
}

// DropDatabase drops a database made by CreateDatabase, ending its sessions.
func DropDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		return fmt.Errorf("connect to test server: %w", err)
	}
	defer conn.Close(ctx)

	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	if err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// DatabaseURL returns the test server's connection string with the database
// replaced by name.
func DatabaseURL(name string) string {
	u, err := url.Parse(ServerURL())
	if err != nil {
		panic(fmt.Sprintf("pgtest: TEST_DATABASE_URL is not a URL: %v", err))
	}
	u.Path = "/" + name
	return u.String()
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
