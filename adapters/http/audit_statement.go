package http

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// statementFlushRows is how many statement rows are buffered before they are
// sent to the client, which bounds the memory a statement of any length uses.
const statementFlushRows = 500

// statementWriter renders a statement while the ledger streams it.
type statementWriter interface {
	ports.StatementSink
	// started reports whether the response status has been sent.
	started() bool
	// finish writes the closing balances, which mark a complete statement.
	finish() error
}

// getAccountStatement streams an account's posted entries with
// from <= effective_at < to, as JSON or, with Accept: text/csv, as CSV.
// Both formats end with the closing balances; a body without them was cut
// short by an error after the 200 status had been sent.
func (s *Server) getAccountStatement(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from, err := timeParam(q, "from")
	if err != nil {
		writeError(w, r, err)
		return
	}
	to, err := timeParam(q, "to")
	if err != nil {
		writeError(w, r, err)
		return
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		writeError(w, r, badRequest("invalid_time_range", "to", "to must be after from"))
		return
	}

	query := ports.StatementQuery{Account: domain.AccountID(r.PathValue("id")), From: from, To: to}
	var sw statementWriter
	if acceptsCSV(r.Header.Get("Accept")) {
		sw = newCSVStatement(w, query)
	} else {
		sw = newJSONStatement(w, query)
	}
	err = s.d.Audit.Books.Statement(r.Context(), query, sw)
	if err == nil {
		err = sw.finish()
	}
	if err == nil {
		return
	}
	if !sw.started() {
		writeError(w, r, err)
		return
	}
	slog.Default().ErrorContext(r.Context(), "statement stopped after the response started; the body has no closing balances",
		"account", query.Account, "error", err)
}

// acceptsCSV reports whether the Accept header lists text/csv.
func acceptsCSV(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "text/csv" {
			return true
		}
	}
	return false
}

// runningBalances keeps each currency's posted balance through a statement.
type runningBalances struct {
	account  domain.AccountID
	opening  map[domain.Currency]domain.AccountBalance
	balances map[domain.Currency]*domain.AccountBalance
	rows     int
}

func newRunningBalances(account domain.AccountID) *runningBalances {
	return &runningBalances{account: account, opening: map[domain.Currency]domain.AccountBalance{}, balances: map[domain.Currency]*domain.AccountBalance{}}
}

func (rb *runningBalances) open(balances []domain.AccountBalance) {
	for _, b := range balances {
		posted := domain.AccountBalance{Account: b.Account, Currency: b.Currency, PostedDebits: b.PostedDebits, PostedCredits: b.PostedCredits}
		rb.opening[b.Currency] = posted
		rb.balances[b.Currency] = &posted
	}
}

// add applies an entry and returns the currency's balance after it, and
// whether the buffered rows should be flushed now.
func (rb *runningBalances) add(e ports.LedgerEntryView) (int64, bool) {
	b, ok := rb.balances[e.Currency]
	if !ok {
		b = &domain.AccountBalance{Account: rb.account, Currency: e.Currency}
		rb.balances[e.Currency] = b
	}
	b.AddEntry(e.Amount, false)
	rb.rows++
	return b.Posted(), rb.rows%statementFlushRows == 0
}

func (rb *runningBalances) currencies() []domain.Currency {
	out := make([]domain.Currency, 0, len(rb.balances))
	for c := range rb.balances {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

func (rb *runningBalances) openingViews() []statementOpeningView {
	out := []statementOpeningView{}
	for _, c := range rb.currencies() {
		if b, ok := rb.opening[c]; ok {
			out = append(out, statementOpeningView{Currency: string(c), BalanceCents: b.Posted()})
		}
	}
	return out
}

// closingViews returns, per currency, the opening balance, the debits and
// credits of the period and the closing balance.
func (rb *runningBalances) closingViews() []statementClosingView {
	out := []statementClosingView{}
	for _, c := range rb.currencies() {
		b, start := rb.balances[c], rb.opening[c]
		out = append(out, statementClosingView{
			Currency: string(c), OpeningCents: start.Posted(),
			DebitsCents: b.PostedDebits - start.PostedDebits, CreditsCents: b.PostedCredits - start.PostedCredits,
			BalanceCents: b.Posted(),
		})
	}
	return out
}

func flushResponse(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

type statementOpeningView struct {
	Currency     string `json:"currency"`
	BalanceCents int64  `json:"balanceCents"`
}

type statementClosingView struct {
	Currency     string `json:"currency"`
	OpeningCents int64  `json:"openingCents"`
	DebitsCents  int64  `json:"debitsCents"`
	CreditsCents int64  `json:"creditsCents"`
	BalanceCents int64  `json:"balanceCents"`
}

// statementEntryView is an entry with the account's posted balance in the
// entry's currency after it, on the account's normal side.
type statementEntryView struct {
	entryView
	BalanceCents int64 `json:"balanceCents"`
}

// jsonStatement writes {"account", "type", "normalBalance", "from", "to",
// "opening", "entries", "closing"} as the rows arrive.
type jsonStatement struct {
	w       http.ResponseWriter
	buf     *bufio.Writer
	query   ports.StatementQuery
	running *runningBalances
	entries int
	begun   bool
}

func newJSONStatement(w http.ResponseWriter, q ports.StatementQuery) *jsonStatement {
	return &jsonStatement{w: w, buf: bufio.NewWriterSize(w, 32<<10), query: q, running: newRunningBalances(q.Account)}
}

func (s *jsonStatement) started() bool { return s.begun }

func (s *jsonStatement) Opening(balances []domain.AccountBalance) error {
	s.running.open(balances)
	class, _ := domain.ClassOf(s.query.Account)
	head := struct {
		Account       string                 `json:"account"`
		Type          string                 `json:"type"`
		NormalBalance string                 `json:"normalBalance"`
		From          *time.Time             `json:"from"`
		To            *time.Time             `json:"to"`
		Opening       []statementOpeningView `json:"opening"`
	}{Account: string(s.query.Account), Type: string(class.Type), NormalBalance: string(class.Normal),
		From: optionalTime(s.query.From), To: optionalTime(s.query.To), Opening: s.running.openingViews()}
	encoded, err := json.Marshal(head)
	if err != nil {
		return err
	}

	s.w.Header().Set("Content-Type", "application/json")
	s.w.WriteHeader(http.StatusOK)
	s.begun = true
	// Reopen the object to append the streamed fields.
	_, err = s.buf.Write(append(encoded[:len(encoded)-1], `,"entries":[`...))
	return err
}

func (s *jsonStatement) Entry(e ports.LedgerEntryView) error {
	balance, flush := s.running.add(e)
	encoded, err := json.Marshal(statementEntryView{entryView: entryOf(e), BalanceCents: balance})
	if err != nil {
		return err
	}
	if s.entries > 0 {
		if err := s.buf.WriteByte(','); err != nil {
			return err
		}
	}
	s.entries++
	if _, err := s.buf.Write(encoded); err != nil {
		return err
	}
	if flush {
		return s.flush()
	}
	return nil
}

func (s *jsonStatement) finish() error {
	encoded, err := json.Marshal(s.running.closingViews())
	if err != nil {
		return err
	}
	if _, err := io.WriteString(s.buf, `],"closing":`); err != nil {
		return err
	}
	if _, err := s.buf.Write(append(encoded, '}', '\n')); err != nil {
		return err
	}
	return s.flush()
}

func (s *jsonStatement) flush() error {
	if err := s.buf.Flush(); err != nil {
		return err
	}
	flushResponse(s.w)
	return nil
}

func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// csvStatementHeader names the CSV columns. record_type is opening, entry or
// closing. Amounts are minor units; balance_cents is the posted balance on
// the account's normal side after the row. A closing row carries the
// period's debits and credits.
var csvStatementHeader = []string{
	"record_type", "entry_id", "transaction_id", "kind", "effective_at", "recorded_at", "currency",
	"debit_cents", "credit_cents", "balance_cents", "task_id", "payment_id", "stripe_ids", "actor", "reason",
}

// csvStatement writes the statement as CSV rows as they arrive.
type csvStatement struct {
	w       http.ResponseWriter
	csv     *csv.Writer
	query   ports.StatementQuery
	running *runningBalances
	begun   bool
}

func newCSVStatement(w http.ResponseWriter, q ports.StatementQuery) *csvStatement {
	return &csvStatement{w: w, csv: csv.NewWriter(w), query: q, running: newRunningBalances(q.Account)}
}

func (s *csvStatement) started() bool { return s.begun }

func (s *csvStatement) Opening(balances []domain.AccountBalance) error {
	s.running.open(balances)
	s.w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	s.w.Header().Set("Content-Disposition", `attachment; filename="`+statementFileName(s.query.Account)+`"`)
	s.w.WriteHeader(http.StatusOK)
	s.begun = true

	if err := s.csv.Write(csvStatementHeader); err != nil {
		return err
	}
	for _, o := range s.running.openingViews() {
		row := make([]string, len(csvStatementHeader))
		row[0], row[6], row[9] = "opening", o.Currency, strconv.FormatInt(o.BalanceCents, 10)
		if err := s.csv.Write(row); err != nil {
			return err
		}
	}
	return nil
}

func (s *csvStatement) Entry(e ports.LedgerEntryView) error {
	balance, flush := s.running.add(e)
	debit, credit := "", ""
	if e.Amount > 0 {
		debit = strconv.FormatInt(e.Amount, 10)
	} else {
		credit = strconv.FormatInt(-e.Amount, 10)
	}
	err := s.csv.Write([]string{
		"entry", entryCursor(e.ID), e.TransactionID, string(e.Kind), csvTime(e.EffectiveAt), csvTime(e.RecordedAt),
		string(e.Currency), debit, credit, strconv.FormatInt(balance, 10), e.TaskID, e.PaymentID,
		stripeIDs(e.Stripe), e.Actor, e.Reason,
	})
	if err != nil {
		return err
	}
	if flush {
		return s.flush()
	}
	return nil
}

func (s *csvStatement) finish() error {
	for _, c := range s.running.closingViews() {
		row := make([]string, len(csvStatementHeader))
		row[0], row[6] = "closing", c.Currency
		row[7], row[8] = strconv.FormatInt(c.DebitsCents, 10), strconv.FormatInt(c.CreditsCents, 10)
		row[9] = strconv.FormatInt(c.BalanceCents, 10)
		if err := s.csv.Write(row); err != nil {
			return err
		}
	}
	return s.flush()
}

func (s *csvStatement) flush() error {
	s.csv.Flush()
	if err := s.csv.Error(); err != nil {
		return err
	}
	flushResponse(s.w)
	return nil
}

func csvTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func stripeIDs(r domain.StripeRefs) string {
	var ids []string
	for _, id := range []string{r.PaymentIntentID, r.ChargeID, r.BalanceTransactionID, r.TransferID, r.RefundID} {
		if id != "" {
			ids = append(ids, id)
		}
	}
	return strings.Join(ids, " ")
}

// statementFileName keeps letters, digits, '-' and '_' of the account id.
func statementFileName(account domain.AccountID) string {
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, string(account))
	return "statement-" + safe + ".csv"
}
