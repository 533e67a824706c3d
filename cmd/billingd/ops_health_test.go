package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/migrations"
)

// TestReadyzFollowsSchemaVersion checks /readyz against the database's
// migration version. A newer schema, as during a rollout beside a newer
// binary, is ready. An older one is not, and the body gives the reason.
func TestReadyzFollowsSchemaVersion(t *testing.T) {
	e := newOpsEnv(t)
	e.startEmulator()
	e.startServer()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := e.client.Get(e.apiURL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	if status, body := get("/livez"); status != http.StatusOK || body != "ok" {
		t.Fatalf("GET /livez = %d %q, want 200 ok", status, body)
	}
	if status, body := get("/readyz"); status != http.StatusOK {
		t.Fatalf("GET /readyz = %d %q, want 200", status, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var dbURL string
	for _, kv := range e.env {
		if v, ok := strings.CutPrefix(kv, "DATABASE_URL="); ok {
			dbURL = v
		}
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect to the test database: %v", err)
	}
	defer conn.Close(ctx)

	latest := postgres.LatestVersion(migrations.FS)
	if _, err := conn.Exec(ctx, `INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, 'from_a_newer_binary', 'x')`, latest+100); err != nil {
		t.Fatalf("record a newer migration: %v", err)
	}
	if status, body := get("/readyz"); status != http.StatusOK {
		t.Errorf("GET /readyz with a newer schema = %d %q, want 200", status, body)
	}

	if _, err := conn.Exec(ctx, `DELETE FROM schema_migrations WHERE version >= $1`, latest); err != nil {
		t.Fatalf("forget the latest migrations: %v", err)
	}
	status, body := get("/readyz")
	if status != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz with an older schema = %d, want 503", status)
	}
	if !strings.Contains(body, "database at migration") {
		t.Errorf("GET /readyz with an older schema: body %q does not name the migration", body)
	}
	if status, _ := get("/livez"); status != http.StatusOK {
		t.Errorf("GET /livez with an older schema = %d, want 200: liveness must not depend on the database", status)
	}
}
