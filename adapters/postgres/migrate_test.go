package postgres

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/taskpod/billing/adapters/postgres/pgtest"
	"github.com/taskpod/billing/migrations"
)

func TestMigrateTwiceIsIdempotent(t *testing.T) {
	ctx := testContext(t)
	pool, _ := freshPool(t)
	latest := LatestVersion(migrations.FS)
	if latest < 2 {
		t.Fatalf("LatestVersion(migrations.FS) = %d, want at least 2", latest)
	}

	before, err := CurrentVersion(ctx, pool)
	if err != nil {
		t.Fatalf("CurrentVersion on an empty database: %v", err)
	}
	if before != 0 {
		t.Errorf("CurrentVersion on an empty database = %d, want 0", before)
	}

	for run := 1; run <= 2; run++ {
		version, err := Migrate(ctx, pool, migrations.FS)
		if err != nil {
			t.Fatalf("Migrate run %d: %v", run, err)
		}
		if version != latest {
			t.Errorf("Migrate run %d returned version %d, want %d", run, version, latest)
		}
	}

	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if want := migrationCount(t); rows != want {
		t.Errorf("schema_migrations has %d rows, want one per file (%d)", rows, want)
	}
	current, err := CurrentVersion(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if current != latest {
		t.Errorf("CurrentVersion = %d, want %d", current, latest)
	}
}

// migrationCount returns the number of files in migrations.FS, which can
// be more than the latest version when versions were skipped.
func migrationCount(t *testing.T) int {
	t.Helper()
	files, err := readMigrations(migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	return len(files)
}

func TestMigrateConcurrently(t *testing.T) {
	ctx := testContext(t)
	pool, _ := freshPool(t)

	const runners = 2
	var wg sync.WaitGroup
	errs := make([]error, runners)
	versions := make([]int, runners)
	for i := range runners {
		wg.Go(func() {
			versions[i], errs[i] = Migrate(ctx, pool, migrations.FS)
		})
	}
	wg.Wait()

	for i := range runners {
		if errs[i] != nil {
			t.Errorf("runner %d: %v", i, errs[i])
		}
		if versions[i] != LatestVersion(migrations.FS) {
			t.Errorf("runner %d returned version %d, want %d", i, versions[i], LatestVersion(migrations.FS))
		}
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if want := migrationCount(t); rows != want {
		t.Errorf("schema_migrations has %d rows, want one per file (%d)", rows, want)
	}
}

func TestMigrateRejectsChangedFile(t *testing.T) {
	ctx := testContext(t)
	pool, _ := freshPool(t)

	original := fstest.MapFS{
		"0001_first.sql":  {Data: []byte("CREATE TABLE first (id int);")},
		"0002_second.sql": {Data: []byte("CREATE TABLE second (id int);")},
	}
	if _, err := Migrate(ctx, pool, original); err != nil {
		t.Fatalf("first Migrate: %v", err)
	}

	changed := fstest.MapFS{
		"0001_first.sql":  {Data: []byte("CREATE TABLE first (id bigint);")},
		"0002_second.sql": original["0002_second.sql"],
	}
	_, err := Migrate(ctx, pool, changed)
	if err == nil {
		t.Fatal("Migrate accepted an applied file whose content changed")
	}
	if !strings.Contains(err.Error(), "0001_first.sql") {
		t.Errorf("error %q does not name the changed file", err)
	}
}

func TestMigrateRollsBackFailedFile(t *testing.T) {
	ctx := testContext(t)
	pool, _ := freshPool(t)

	files := fstest.MapFS{
		"0001_good.sql": {Data: []byte("CREATE TABLE good (id int);")},
		"0002_bad.sql":  {Data: []byte("CREATE TABLE half (id int); SELECT * FROM missing_table;")},
	}
	if _, err := Migrate(ctx, pool, files); err == nil {
		t.Fatal("Migrate succeeded with a failing file")
	}
	version, err := CurrentVersion(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if version != 1 {
		t.Errorf("CurrentVersion = %d after a failed 0002, want 1", version)
	}
	var half *string
	if err := pool.QueryRow(ctx, "SELECT to_regclass('half')::text").Scan(&half); err != nil {
		t.Fatal(err)
	}
	if half != nil {
		t.Error("table half exists: the failed migration was not rolled back as a whole")
	}
}

func TestReadMigrationsRejectsBadNames(t *testing.T) {
	cases := map[string]fstest.MapFS{
		"bad name":          {"1_short.sql": {Data: []byte("")}},
		"duplicate version": {"0001_a.sql": {Data: []byte("")}, "0001_b.sql": {Data: []byte("")}},
		"version zero":      {"0000_zero.sql": {Data: []byte("")}},
	}
	for name, fsys := range cases {
		if _, err := readMigrations(fsys); err == nil {
			t.Errorf("%s: readMigrations accepted the files", name)
		}
	}
	ignored := fstest.MapFS{"0001_a.sql": {Data: []byte("")}, "embed.go": {Data: []byte("")}}
	if got := LatestVersion(ignored); got != 1 {
		t.Errorf("LatestVersion with a non-SQL file = %d, want 1", got)
	}
}

func TestEnsureDatabaseCreatesOnce(t *testing.T) {
	ctx := testContext(t)
	name := uniqueID("ensure_")
	url := pgtest.DatabaseURL(name)
	t.Cleanup(func() {
		if err := pgtest.DropDatabase(ctx, name); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = EnsureDatabase(ctx, url) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent EnsureDatabase: %v", err)
	}
	if err := EnsureDatabase(ctx, url); err != nil {
		t.Fatalf("EnsureDatabase on an existing database: %v", err)
	}
}
