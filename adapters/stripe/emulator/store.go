package emulator

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// querier is the subset of pgx.Tx and pgxpool.Pool that the store uses.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// randomToken returns n characters drawn from crypto/rand, as in the suffix of
// Stripe's ids.
func randomToken(n int) string {
	var b strings.Builder
	max := big.NewInt(int64(len(idAlphabet)))
	for range n {
		i, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(fmt.Sprintf("emulator: crypto/rand failed: %v", err))
		}
		b.WriteByte(idAlphabet[i.Int64()])
	}
	return b.String()
}

// newID returns a Stripe-style id such as "pi_3Nx…" for prefix "pi".
func newID(prefix string) string {
	return prefix + "_" + randomToken(24)
}

// call is the state of one API request: its transaction, clock reading and
// parameters. Handlers read and write objects through it.
type call struct {
	ctx    context.Context
	e      *Emulator
	tx     pgx.Tx
	now    int64
	p      *params
	r      *http.Request
	events []pendingEvent
	// publishable marks a pk_test_ key, which must prove the intent's
	// client_secret.
	publishable bool
}

// checkClientSecret rejects a publishable-key request whose client_secret
// parameter does not match the intent's. Secret-key requests need none.
func (c *call) checkClientSecret(objectType, want string) error {
	if !c.publishable {
		return nil
	}
	got, err := c.p.str("client_secret")
	if err != nil {
		return err
	}
	if got == "" {
		return missingParam("client_secret")
	}
	if got != want {
		return invalidParam("client_secret", "The client_secret provided does not match the client_secret associated with the "+objectType+".")
	}
	return nil
}

func (c *call) pathID() string {
	return c.r.PathValue("id")
}

// load reads the object id of type typ into dst and reports whether it exists.
// lock takes a row lock (FOR UPDATE) that lasts until the request's
// transaction ends.
func (c *call) load(id, typ string, dst any, lock bool) (bool, error) {
	query := `SELECT data FROM stripe_emulator.objects WHERE id = $1 AND type = $2`
	if lock {
		query += ` FOR UPDATE`
	}
	var data []byte
	err := c.tx.QueryRow(c.ctx, query, id, typ).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("load %s %s: %w", typ, id, err)
	}
	if err := json.Unmarshal(data, dst); err != nil {
		return false, fmt.Errorf("decode %s %s: %w", typ, id, err)
	}
	return true, nil
}

// mustLoad is load that turns a missing object into Stripe's 404
// resource_missing error naming param.
func (c *call) mustLoad(id, typ, param string, dst any, lock bool) error {
	if id == "" {
		return missingParam(param)
	}
	found, err := c.load(id, typ, dst, lock)
	if err != nil {
		return err
	}
	if !found {
		return notFound(typ, id, param)
	}
	return nil
}

// save inserts or replaces an object.
func (c *call) save(typ, id string, created int64, obj any) error {
	data, err := json.Marshal(obj)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", typ, id, err)
	}
	_, err = c.tx.Exec(c.ctx, `
		INSERT INTO stripe_emulator.objects (id, type, created, data) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET data = excluded.data`, id, typ, created, data)
	if err != nil {
		return fmt.Errorf("save %s %s: %w", typ, id, err)
	}
	return nil
}

// setCaptureDeadline records when an authorized PaymentIntent expires; nil
// clears it after capture or cancellation.
func (c *call) setCaptureDeadline(id string, at *int64) error {
	_, err := c.tx.Exec(c.ctx, `UPDATE stripe_emulator.objects SET expires_at = $2 WHERE id = $1`, id, at)
	if err != nil {
		return fmt.Errorf("set capture deadline of %s: %w", id, err)
	}
	return nil
}

// listFilter restricts a list to objects whose top-level JSON field equals
// value. field is always a constant from the code, never request input.
type listFilter struct {
	field string
	value string
}

// listPage is Stripe's list object.
type listPage struct {
	Object  string            `json:"object"`
	Data    []json.RawMessage `json:"data"`
	HasMore bool              `json:"has_more"`
	URL     string            `json:"url"`
}

// list returns one page of objects of type typ, newest first, using the
// limit, starting_after and ending_before parameters as Stripe does.
func (c *call) list(typ, url string, filters ...listFilter) (*listPage, error) {
	limit, sent, err := c.p.int("limit")
	if err != nil {
		return nil, err
	}
	if !sent {
		limit = 10
	}
	if limit < 1 || limit > 100 {
		return nil, invalidParam("limit", fmt.Sprintf("Invalid limit: must be between 1 and 100, got %d.", limit))
	}
	startingAfter, err := c.p.str("starting_after")
	if err != nil {
		return nil, err
	}
	endingBefore, err := c.p.str("ending_before")
	if err != nil {
		return nil, err
	}
	if startingAfter != "" && endingBefore != "" {
		return nil, invalidParam("ending_before", "You may only specify one of these parameters: starting_after, ending_before.")
	}

	where := []string{"type = $1"}
	args := []any{typ}
	for _, f := range filters {
		args = append(args, f.value)
		where = append(where, fmt.Sprintf("data->>'%s' = $%d", f.field, len(args)))
	}
	order := "DESC"
	for _, cursor := range []struct{ param, id, op string }{
		{"starting_after", startingAfter, "<"},
		{"ending_before", endingBefore, ">"},
	} {
		if cursor.id == "" {
			continue
		}
		var seq int64
		err := c.tx.QueryRow(c.ctx, `SELECT seq FROM stripe_emulator.objects WHERE id = $1 AND type = $2`, cursor.id, typ).Scan(&seq)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, notFound(typ, cursor.id, cursor.param)
		}
		if err != nil {
			return nil, fmt.Errorf("find list cursor %s: %w", cursor.id, err)
		}
		args = append(args, seq)
		where = append(where, fmt.Sprintf("seq %s $%d", cursor.op, len(args)))
		if cursor.op == ">" {
			order = "ASC"
		}
	}
	args = append(args, limit+1)
	query := fmt.Sprintf(`SELECT data FROM stripe_emulator.objects WHERE %s ORDER BY seq %s LIMIT $%d`,
		strings.Join(where, " AND "), order, len(args))
	rows, err := c.tx.Query(c.ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", typ, err)
	}
	data, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", typ, err)
	}
	page := &listPage{Object: "list", URL: url, Data: []json.RawMessage{}}
	if int64(len(data)) > limit {
		page.HasMore = true
		data = data[:limit]
	}
	if order == "ASC" {
		// ending_before walks backwards; Stripe still returns newest first.
		for i, j := 0, len(data)-1; i < j; i, j = i+1, j-1 {
			data[i], data[j] = data[j], data[i]
		}
	}
	for _, d := range data {
		page.Data = append(page.Data, d)
	}
	return page, nil
}

// render encodes a handler's result and replaces ids by objects along each
// expand path, such as "latest_charge" or "latest_charge.balance_transaction".
// For a list, paths start with "data.".
func (c *call) render(result any) ([]byte, error) {
	expand, err := c.p.list("expand")
	if err != nil {
		return nil, err
	}
	if len(expand) == 0 {
		return json.Marshal(result)
	}
	raw, err := json.Marshal(result)
	if err != nil {
		return nil, err
	}
	var tree map[string]any
	if err := json.Unmarshal(raw, &tree); err != nil {
		return nil, err
	}
	for _, path := range expand {
		if err := c.expand(tree, strings.Split(path, "."), path); err != nil {
			return nil, err
		}
	}
	return json.Marshal(tree)
}

func (c *call) expand(node map[string]any, path []string, full string) error {
	field := path[0]
	value, ok := node[field]
	if !ok {
		return invalidParam("expand", fmt.Sprintf("This property cannot be expanded (%s).", full))
	}
	if node["object"] == "list" && field == "data" && len(path) > 1 {
		items, _ := value.([]any)
		for _, item := range items {
			if m, ok := item.(map[string]any); ok {
				if err := c.expand(m, path[1:], full); err != nil {
					return err
				}
			}
		}
		return nil
	}
	var child map[string]any
	switch v := value.(type) {
	case nil:
		return nil
	case string:
		var data []byte
		err := c.tx.QueryRow(c.ctx, `SELECT data FROM stripe_emulator.objects WHERE id = $1`, v).Scan(&data)
		if errors.Is(err, pgx.ErrNoRows) {
			// Ids of objects the emulator does not model, such as connected
			// accounts, stay ids.
			return nil
		}
		if err != nil {
			return fmt.Errorf("expand %s: %w", full, err)
		}
		if err := json.Unmarshal(data, &child); err != nil {
			return err
		}
		node[field] = child
	case map[string]any:
		child = v
	default:
		return invalidParam("expand", fmt.Sprintf("This property cannot be expanded (%s).", full))
	}
	if len(path) > 1 {
		return c.expand(child, path[1:], full)
	}
	return nil
}

// marshalObject returns obj as a generic JSON value for embedding in an
// error body or an event.
func marshalObject(obj any) any {
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil
	}
	return v
}

func ptr[T any](v T) *T {
	return &v
}
