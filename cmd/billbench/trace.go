package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The baselines replay, with pgx and net/http only, the exact statements and
// Stripe requests that the application sent for one operation. A trace is
// recorded once per scenario from the application code; each baseline
// operation then replays it with fresh ids substituted into the arguments.
// Recording instead of hand-writing the baseline SQL keeps the baseline in
// step with the adapters as they change.

// event is one traced step: an SQL statement or an HTTP request.
type event struct {
	SQL  string
	Args []any
	// Tag is the command tag the template run got, such as "UPDATE 1"; a
	// replay that gets another tag diverged from the template.
	Tag  string
	HTTP *httpCall
	// Took is how long the statement ran in the template run.
	Took time.Duration
}

// httpCall is one request to the Stripe emulator and its template response.
type httpCall struct {
	Method   string
	URL      string
	Header   http.Header
	Body     []byte
	Status   int
	Response []byte
}

// recorder collects the events of one traced operation.
type recorder struct {
	mu     sync.Mutex
	events []event
	// started is the template run's start, used to shift timestamps.
	started time.Time
}

type recorderKey struct{}

// eventStart identifies a traced statement between its start and its end.
type eventStart struct {
	index int
	at    time.Time
}

func withRecorder(ctx context.Context, r *recorder) context.Context {
	return context.WithValue(ctx, recorderKey{}, r)
}

func recorderFrom(ctx context.Context) *recorder {
	r, _ := ctx.Value(recorderKey{}).(*recorder)
	return r
}

func (r *recorder) add(e event) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return len(r.events) - 1
}

func (r *recorder) finish(i int, tag string, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events[i].Tag = tag
	r.events[i].Took = took
}

// trace returns the events recorded so far.
func (r *recorder) trace() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events...)
}

// sqlTracer records the statements of contexts that carry a recorder. It is
// set on the pools the application code runs on during template runs.
type sqlTracer struct{}

func (sqlTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	r := recorderFrom(ctx)
	if r == nil {
		return ctx
	}
	i := r.add(event{SQL: data.SQL, Args: append([]any(nil), data.Args...)})
	return context.WithValue(ctx, eventStart{}, eventStart{index: i, at: time.Now()})
}

func (sqlTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	r := recorderFrom(ctx)
	start, ok := ctx.Value(eventStart{}).(eventStart)
	if r == nil || !ok {
		return
	}
	r.finish(start.index, data.CommandTag.String(), time.Since(start.at))
}

// recordingTransport records the requests of contexts that carry a recorder.
type recordingTransport struct {
	next http.RoundTripper
}

func (t recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := recorderFrom(req.Context())
	if r == nil {
		return t.next.RoundTrip(req)
	}
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	respBody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	r.add(event{HTTP: &httpCall{
		Method: req.Method, URL: req.URL.String(), Header: req.Header.Clone(), Body: body,
		Status: resp.StatusCode, Response: respBody,
	}})
	return resp, nil
}

// substitution maps template values to the values of one replayed
// operation. It applies to every string, []string and []byte argument and
// to request bodies, URLs and headers. Timestamp arguments move by shift,
// and tables renames tables in the SQL text.
type substitution struct {
	pairs    []string
	replacer *strings.Replacer
	// tables renames tables in the SQL text, template name to replay name.
	tables *strings.Replacer
	// shift moves timestamp arguments from the template run to now.
	shift time.Duration
}

func newSubstitution(pairs ...string) *substitution {
	s := &substitution{}
	for i := 0; i+1 < len(pairs); i += 2 {
		s.set(pairs[i], pairs[i+1])
	}
	return s
}

// set maps old to new, replacing an earlier mapping of old.
func (s *substitution) set(old, new string) {
	if old == "" || old == new {
		return
	}
	for i := 0; i < len(s.pairs); i += 2 {
		if s.pairs[i] == old {
			s.pairs[i+1] = new
			s.replacer = nil
			return
		}
	}
	s.pairs = append(s.pairs, old, new)
	s.replacer = nil
}

func (s *substitution) clone() *substitution {
	return &substitution{pairs: append([]string(nil), s.pairs...), tables: s.tables, shift: s.shift}
}

func (s *substitution) apply(v string) string {
	if len(s.pairs) == 0 {
		return v
	}
	if s.replacer == nil {
		s.replacer = longestFirst(s.pairs)
	}
	return s.replacer.Replace(v)
}

func (s *substitution) applyArg(v any) any {
	switch a := v.(type) {
	case string:
		return s.apply(a)
	case []string:
		out := make([]string, len(a))
		for i, e := range a {
			out[i] = s.apply(e)
		}
		return out
	case []byte:
		return []byte(s.apply(string(a)))
	case json.RawMessage:
		return json.RawMessage(s.apply(string(a)))
	case time.Time:
		if a.IsZero() {
			return a
		}
		return a.Add(s.shift)
	case *time.Time:
		if a == nil || a.IsZero() {
			return a
		}
		t := a.Add(s.shift)
		return &t
	}
	return v
}

// longestFirst builds a replacer that tries longer old strings first, so a
// client secret such as pi_X_secret_Y maps as a whole before its prefix pi_X.
func longestFirst(pairs []string) *strings.Replacer {
	idx := make([]int, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		idx = append(idx, i)
	}
	sort.SliceStable(idx, func(a, b int) bool { return len(pairs[idx[a]]) > len(pairs[idx[b]]) })
	ordered := make([]string, 0, len(pairs))
	for _, i := range idx {
		ordered = append(ordered, pairs[i], pairs[i+1])
	}
	return strings.NewReplacer(ordered...)
}

// replayer runs traces against the database and the emulator.
type replayer struct {
	pool   *pgxpool.Pool
	client *http.Client
	// httpCalls and httpNanos count the emulator requests and their time.
	httpCalls, httpNanos atomic.Int64
}

// run replays events with sub applied. Statements between BEGIN and COMMIT
// run on one connection, the others on any connection of the pool. Each
// emulator response is compared with the template's, and ids that differ
// are added to sub, so later statements carry the new ids. A statement
// whose command tag differs from the template's is an error, because the
// replay would then do less work than the application did.
func (p *replayer) run(ctx context.Context, events []event, sub *substitution) error {
	var conn *pgxpool.Conn
	defer func() {
		if conn != nil {
			_, _ = conn.Exec(context.WithoutCancel(ctx), "rollback")
			conn.Release()
		}
	}()

	for i, e := range events {
		if e.HTTP != nil {
			if err := p.replayHTTP(ctx, e.HTTP, sub); err != nil {
				return fmt.Errorf("replay event %d: %w", i, err)
			}
			continue
		}

		sql := e.SQL
		if sub.tables != nil {
			sql = sub.tables.Replace(sql)
		}
		args := make([]any, len(e.Args))
		for j, a := range e.Args {
			args[j] = sub.applyArg(a)
		}

		verb := strings.ToLower(strings.Fields(sql)[0])
		if verb == "begin" && conn == nil {
			var err error
			if conn, err = p.pool.Acquire(ctx); err != nil {
				return fmt.Errorf("replay event %d: acquire connection: %w", i, err)
			}
		}

		var tag string
		var err error
		if conn != nil {
			ct, execErr := conn.Exec(ctx, sql, args...)
			tag, err = ct.String(), execErr
		} else {
			ct, execErr := p.pool.Exec(ctx, sql, args...)
			tag, err = ct.String(), execErr
		}
		if err != nil {
			return fmt.Errorf("replay event %d (%s): %w", i, firstLine(sql), err)
		}
		if !tagsMatch(sql, tag, e.Tag) {
			return fmt.Errorf("replay event %d (%s) diverged: command tag %q, the template got %q", i, firstLine(sql), tag, e.Tag)
		}

		if (verb == "commit" || verb == "rollback") && conn != nil {
			conn.Release()
			conn = nil
		}
	}
	return nil
}

// tagsMatch compares command tags. An INSERT ... ON CONFLICT legitimately
// inserts a different number of rows, such as ledger accounts that exist
// already, so only its verb must match.
func tagsMatch(sql, got, want string) bool {
	if got == want {
		return true
	}
	if !strings.Contains(strings.ToUpper(sql), "ON CONFLICT") {
		return false
	}
	gotVerb, _, _ := strings.Cut(got, " ")
	wantVerb, _, _ := strings.Cut(want, " ")
	return gotVerb == wantVerb
}

func (p *replayer) replayHTTP(ctx context.Context, c *httpCall, sub *substitution) error {
	req, err := http.NewRequestWithContext(ctx, c.Method, sub.apply(c.URL), bytes.NewReader([]byte(sub.apply(string(c.Body)))))
	if err != nil {
		return err
	}
	for name, values := range c.Header {
		for _, v := range values {
			req.Header.Add(name, sub.apply(v))
		}
	}
	started := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", c.Method, c.URL, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	p.httpCalls.Add(1)
	p.httpNanos.Add(int64(time.Since(started)))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", c.Method, c.URL, err)
	}
	if resp.StatusCode != c.Status {
		return fmt.Errorf("%s %s diverged: status %d, the template got %d: %s", c.Method, req.URL, resp.StatusCode, c.Status, truncate(string(body), 300))
	}
	return learnIDs(c.Response, body, sub)
}

// stripeID matches Stripe object ids and client secrets such as
// pi_3Nx..., ch_..., txn_... and pi_..._secret_....
var stripeID = regexp.MustCompile(`^[a-z]{2,5}_[A-Za-z0-9_]{6,}$`)

// learnIDs walks the template and the replayed JSON responses side by side
// and maps every id of the template to the id at the same place in the
// replay.
func learnIDs(template, replayed []byte, sub *substitution) error {
	var a, b any
	if err := json.Unmarshal(template, &a); err != nil {
		return fmt.Errorf("decode template response: %w", err)
	}
	if err := json.Unmarshal(replayed, &b); err != nil {
		return fmt.Errorf("decode replayed response: %w", err)
	}
	var walk func(x, y any)
	walk = func(x, y any) {
		switch xv := x.(type) {
		case map[string]any:
			yv, ok := y.(map[string]any)
			if !ok {
				return
			}
			for k, v := range xv {
				walk(v, yv[k])
			}
		case []any:
			yv, ok := y.([]any)
			if !ok {
				return
			}
			for i := 0; i < len(xv) && i < len(yv); i++ {
				walk(xv[i], yv[i])
			}
		case string:
			yv, ok := y.(string)
			if ok && xv != yv && stripeID.MatchString(xv) && stripeID.MatchString(yv) {
				sub.set(xv, yv)
			}
		}
	}
	walk(a, b)
	return nil
}

// describe returns one line per event of a trace, for the report.
func describe(events []event) []string {
	var out []string
	for _, e := range events {
		if e.HTTP != nil {
			u := e.HTTP.URL
			if i := strings.Index(u, "/v1/"); i >= 0 {
				u = u[i:]
			}
			out = append(out, fmt.Sprintf("HTTP %s %s", e.HTTP.Method, u))
			continue
		}
		out = append(out, "SQL "+truncate(strings.Join(strings.Fields(e.SQL), " "), 110))
	}
	return out
}

func firstLine(sql string) string {
	return truncate(strings.Join(strings.Fields(sql), " "), 80)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
