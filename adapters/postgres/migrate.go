// Package postgres implements the storage ports on PostgreSQL, the system
// of record: the unit of work, the repositories, the ledger, the ledger
// reader, API tokens and the schema migrations.
package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationLockKey is the pg_advisory_lock key that serialises Migrate
// across processes. Changing it lets an old and a new binary migrate at once.
const migrationLockKey int64 = 0x7461736b706f6431 // "taskpod1" in ASCII

// migrationFileName matches NNNN_name.sql, whose four digits are the version.
var migrationFileName = regexp.MustCompile(`^([0-9]{4})_([a-z0-9_]+)\.sql$`)

type migrationFile struct {
	version  int
	name     string
	sql      string
	checksum string
}

// Migrate applies the NNNN_name.sql files of fsys that the database has not
// seen yet, in version order, each in its own transaction, and records them
// in schema_migrations. It returns the highest applied version.
//
// A session-level advisory lock, held on one connection for the whole run,
// makes concurrent callers wait, so each file is applied once. A recorded
// file whose content changed since it was applied is an error naming the
// file. Versions recorded in the database but absent from fsys are accepted,
// so a binary older than the schema can still start.
func Migrate(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS) (version int, err error) {
	files, err := readMigrations(fsys)
	if err != nil {
		return 0, err
	}

	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("migrate: acquire connection: %w", err)
	}
	defer conn.Release()

	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLockKey); err != nil {
		return 0, fmt.Errorf("migrate: take advisory lock %d: %w", migrationLockKey, err)
	}
	defer func() {
		unlockCtx := context.WithoutCancel(ctx)
		if _, unlockErr := conn.Exec(unlockCtx, "SELECT pg_advisory_unlock($1)", migrationLockKey); unlockErr != nil {
			// Closing the session is the only other way to release the
			// lock, and a released pool connection would keep it.
			_ = conn.Hijack().Close(unlockCtx)
			err = errors.Join(err, fmt.Errorf("migrate: release advisory lock %d: %w", migrationLockKey, unlockErr))
		}
	}()

	_, err = conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    int PRIMARY KEY,
		name       text NOT NULL,
		checksum   text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`)
	if err != nil {
		return 0, fmt.Errorf("migrate: create schema_migrations: %w", err)
	}

	applied, err := appliedChecksums(ctx, conn.Conn())
	if err != nil {
		return 0, err
	}
	for _, f := range files {
		if sum, ok := applied[f.version]; ok && sum != f.checksum {
			return 0, fmt.Errorf("migrate: %s was changed after it was applied (recorded checksum %s, file checksum %s), so add a new migration instead of editing an applied one",
				f.name, sum, f.checksum)
		}
	}

	for _, f := range files {
		if _, ok := applied[f.version]; ok {
			continue
		}
		if err := applyMigration(ctx, conn.Conn(), f); err != nil {
			return 0, err
		}
	}

	return currentVersion(ctx, conn.Conn())
}

func applyMigration(ctx context.Context, conn *pgx.Conn, f migrationFile) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate: begin %s: %w", f.name, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	// Without arguments pgx sends the file with the simple query protocol,
	// which accepts several statements in one string.
	if _, err := tx.Exec(ctx, f.sql); err != nil {
		return fmt.Errorf("migrate: apply %s: %w", f.name, err)
	}
	_, err = tx.Exec(ctx, "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
		f.version, f.name, f.checksum)
	if err != nil {
		return fmt.Errorf("migrate: record %s: %w", f.name, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate: commit %s (check schema_migrations before retrying): %w", f.name, err)
	}
	return nil
}

func appliedChecksums(ctx context.Context, conn *pgx.Conn) (map[int]string, error) {
	rows, err := conn.Query(ctx, "SELECT version, checksum FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	applied := map[int]string{}
	var version int
	var checksum string
	_, err = pgx.ForEachRow(rows, []any{&version, &checksum}, func() error {
		applied[version] = checksum
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	return applied, nil
}

// CurrentVersion returns the highest applied migration version, or 0 when
// no migration ran yet.
func CurrentVersion(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("read schema version: acquire connection: %w", err)
	}
	defer conn.Release()
	return currentVersion(ctx, conn.Conn())
}

func currentVersion(ctx context.Context, conn *pgx.Conn) (int, error) {
	var version int
	err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&version)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return version, nil
}

// LatestVersion returns the highest migration version in fsys, for a
// readiness check that compares it with CurrentVersion. It returns 0 when
// fsys cannot be read or holds no valid migration, because Migrate reports
// those problems at startup.
//
// NOTE: Migrate also applies a file numbered below an applied version, for
// example 0003 added after 0005 ran. CurrentVersion does not show whether
// such a file ran, so the readiness check can pass while it is missing.
func LatestVersion(fsys fs.FS) int {
	files, err := readMigrations(fsys)
	if err != nil || len(files) == 0 {
		return 0
	}
	return files[len(files)-1].version
}

// readMigrations returns the *.sql files at the root of fsys sorted by
// version. A .sql file whose name is not NNNN_name.sql, or two files with
// one version, is an error rather than a file that is silently skipped.
func readMigrations(fsys fs.FS) ([]migrationFile, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("migrate: list migration files: %w", err)
	}
	var files []migrationFile
	seen := map[int]string{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		m := migrationFileName.FindStringSubmatch(e.Name())
		if m == nil {
			if len(e.Name()) > 4 && e.Name()[len(e.Name())-4:] == ".sql" {
				return nil, fmt.Errorf("migrate: file name %s is invalid: expected NNNN_name.sql with a four-digit version and a lower-case name", e.Name())
			}
			continue
		}
		version, _ := strconv.Atoi(m[1])
		if version == 0 {
			return nil, fmt.Errorf("migrate: %s has version 0, but versions start at 0001", e.Name())
		}
		if other, dup := seen[version]; dup {
			return nil, fmt.Errorf("migrate: %s and %s share version %d", other, e.Name(), version)
		}
		seen[version] = e.Name()

		body, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("migrate: read %s: %w", e.Name(), err)
		}
		sum := sha256.Sum256(body)
		files = append(files, migrationFile{
			version:  version,
			name:     e.Name(),
			sql:      string(body),
			checksum: hex.EncodeToString(sum[:]),
		})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].version < files[j].version })
	return files, nil
}

// EnsureDatabase creates the database named in databaseURL if it does not
// exist, by connecting to the postgres database of the same server. A
// concurrent creation of the same database is not an error.
func EnsureDatabase(ctx context.Context, databaseURL string) error {
	// pgxpool's own parameters (pool_max_conns and the like) are not
	// PostgreSQL settings; parsing as a pool config strips them.
	poolCfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return fmt.Errorf("ensure database: parse connection string: %w", err)
	}
	cfg := poolCfg.ConnConfig
	if cfg.Database == "" {
		return errors.New("ensure database: the connection string names no database")
	}

	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		return conn.Close(ctx)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" { // invalid_catalog_name
		return fmt.Errorf("ensure database: connect to %s: %w", cfg.Database, err)
	}

	adminCfg := cfg.Copy()
	adminCfg.Database = "postgres"
	admin, err := pgx.ConnectConfig(ctx, adminCfg)
	if err != nil {
		return fmt.Errorf("ensure database: connect to the postgres database to create %s: %w", cfg.Database, err)
	}
	defer func() { _ = admin.Close(context.WithoutCancel(ctx)) }()

	_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{cfg.Database}.Sanitize())
	if err == nil {
		return nil
	}
	// A concurrent CREATE DATABASE of the same name fails with
	// duplicate_database, or with unique_violation on pg_database when both
	// passed the existence check together.
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") {
		return nil
	}
	return fmt.Errorf("ensure database: create %s: %w", cfg.Database, err)
}
