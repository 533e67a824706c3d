package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// sealerLockKey is the transaction-level advisory lock that lets one sealing
// pass run at a time across every instance of the service. Changing it lets
// an old and a new binary seal at once, which the chain trigger of migration
// 0006 would then reject for one of them.
const sealerLockKey int64 = 0x7461736b7365616c // "tasksea" + "l" in ASCII

// sealBatchSize bounds the transactions sealed in one database transaction.
const sealBatchSize = 500

// maxSealBatchesOnRead bounds the sealing a reader does before listing, so
// a listing under a steady stream of writes still returns.
const maxSealBatchesOnRead = 20

// zeroHash is the previous hash of the first seal.
var zeroHash = make([]byte, domain.SealHashSize)

// sealSourceColumns selects a transaction and its entries, aggregated in id
// order, for hashing. It expects the transaction as t and its entries as e.
// Every column is coalesced because verification joins seals to
// transactions that may have been deleted behind the triggers' back.
const sealSourceColumns = `coalesce(t.id, ''), coalesce(t.kind, ''), coalesce(t.pending, false),
	coalesce(t.resolves_id, ''), coalesce(t.reverses_id, ''), coalesce(t.actor, ''), coalesce(t.request_id, ''),
	coalesce(t.reason, ''), coalesce(t.task_id, ''), coalesce(t.payment_id, ''),
	coalesce(t.stripe_payment_intent_id, ''), coalesce(t.stripe_charge_id, ''),
	coalesce(t.stripe_balance_transaction_id, ''), coalesce(t.stripe_transfer_id, ''), coalesce(t.stripe_refund_id, ''),
	coalesce(t.effective_at, 'epoch'), coalesce(t.recorded_at, 'epoch'),
	coalesce(e.ids, '{}'), coalesce(e.accounts, '{}'), coalesce(e.currencies, '{}'), coalesce(e.amounts, '{}'),
	coalesce(e.pendings, '{}'), coalesce(e.effective_ats, '{}')`

// sealSourceEntries is the lateral join that sealSourceColumns reads as e.
const sealSourceEntries = `LEFT JOIN LATERAL (
		SELECT array_agg(x.id ORDER BY x.id) AS ids, array_agg(x.account_id ORDER BY x.id) AS accounts,
		       array_agg(x.currency ORDER BY x.id) AS currencies, array_agg(x.amount ORDER BY x.id) AS amounts,
		       array_agg(x.pending ORDER BY x.id) AS pendings, array_agg(x.effective_at ORDER BY x.id) AS effective_ats
		  FROM ledger_entries x WHERE x.transaction_id = t.id
	) e ON true`

// scanSealSource reads sealSourceColumns into a SealRecord, plus any
// columns the caller selected before them.
func scanSealSource(row pgx.Row, leading ...any) (domain.SealRecord, error) {
	var r domain.SealRecord
	var kind string
	var ids, amounts []int64
	var accounts, currencies []string
	var pendings []bool
	var effective []time.Time
	t := &r.Transaction
	m := &t.Meta
	dest := append(leading, &t.ID, &kind, &t.Pending, &t.ResolvesID, &t.ReversesID,
		&m.Actor, &m.RequestID, &m.Reason, &m.TaskID, &m.PaymentID, &m.Stripe.PaymentIntentID, &m.Stripe.ChargeID,
		&m.Stripe.BalanceTransactionID, &m.Stripe.TransferID, &m.Stripe.RefundID, &m.EffectiveAt, &r.RecordedAt,
		&ids, &accounts, &currencies, &amounts, &pendings, &effective)
	if err := row.Scan(dest...); err != nil {
		return r, err
	}
	t.Kind = domain.LedgerKind(kind)
	n := len(ids)
	if len(accounts) != n || len(currencies) != n || len(amounts) != n || len(pendings) != n || len(effective) != n {
		return r, fmt.Errorf("entries of ledger transaction %s have columns of different lengths", t.ID)
	}
	r.Entries = make([]domain.SealedEntry, n)
	for i := range ids {
		r.Entries[i] = domain.SealedEntry{
			ID: ids[i], Account: domain.AccountID(accounts[i]), Currency: domain.Currency(currencies[i]),
			Amount: amounts[i], Pending: pendings[i], EffectiveAt: effective[i],
		}
	}
	return r, nil
}

// sealBatch seals up to sealBatchSize queued transactions in one database
// transaction under the sealer lock. With wait unset it gives up at once
// when another pass holds the lock and reports locked false.
func sealBatch(ctx context.Context, pool *pgxpool.Pool, wait bool) (sealed int, locked bool, err error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return 0, false, fmt.Errorf("seal ledger: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	if wait {
		_, err = tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, sealerLockKey)
		locked = err == nil
	} else {
		err = tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, sealerLockKey).Scan(&locked)
	}
	if err != nil || !locked {
		return 0, false, mapError(err, "seal ledger: take the sealer lock")
	}

	head, err := readHead(ctx, tx)
	if err != nil {
		return 0, true, err
	}
	queueIDs, records, err := readQueued(ctx, tx)
	if err != nil || len(records) == 0 {
		return 0, true, err
	}
	if err := insertSeals(ctx, tx, head, records); err != nil {
		return 0, true, err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM ledger_unsealed WHERE id = ANY($1)`, queueIDs); err != nil {
		return 0, true, mapError(err, "seal ledger: dequeue sealed transactions")
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, true, fmt.Errorf("seal ledger: commit: %w", err)
	}
	return len(records), true, nil
}

func readHead(ctx context.Context, q queryer) (ports.ChainHead, error) {
	var h ports.ChainHead
	err := q.QueryRow(ctx, `SELECT sequence, hash, transaction_id, sealed_at FROM ledger_seals ORDER BY sequence DESC LIMIT 1`).
		Scan(&h.Sequence, &h.Hash, &h.TransactionID, &h.SealedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return ports.ChainHead{Hash: zeroHash}, nil
	}
	return h, mapError(err, "read ledger chain head")
}

// readQueued returns the oldest queued transactions that are committed. A
// queue row whose transaction is missing stays queued and shows as lag.
func readQueued(ctx context.Context, tx pgx.Tx) ([]int64, []domain.SealRecord, error) {
	rows, err := tx.Query(ctx, `
		SELECT q.id, `+sealSourceColumns+`
		  FROM ledger_unsealed q
		  JOIN ledger_transactions t ON t.id = q.transaction_id
		  `+sealSourceEntries+`
		 ORDER BY q.id
		 LIMIT $1`, sealBatchSize)
	if err != nil {
		return nil, nil, mapError(err, "seal ledger: read queued transactions")
	}
	defer rows.Close()
	var queueIDs []int64
	var records []domain.SealRecord
	for rows.Next() {
		var queueID int64
		r, err := scanSealSource(rows, &queueID)
		if err != nil {
			return nil, nil, fmt.Errorf("seal ledger: read queued transaction: %w", err)
		}
		queueIDs = append(queueIDs, queueID)
		records = append(records, r)
	}
	return queueIDs, records, mapError(rows.Err(), "seal ledger: read queued transactions")
}

// insertSeals chains records after head and inserts their seals in one
// statement, in sequence order, which the chain trigger requires.
func insertSeals(ctx context.Context, tx pgx.Tx, head ports.ChainHead, records []domain.SealRecord) error {
	sequences := make([]int64, len(records))
	ids := make([]string, len(records))
	prevs := make([][]byte, len(records))
	hashes := make([][]byte, len(records))
	prev, seq := head.Hash, head.Sequence
	for i := range records {
		seq++
		records[i].Sequence, records[i].PrevHash = seq, prev
		hash := domain.SealHash(records[i])
		sequences[i], ids[i], prevs[i], hashes[i] = seq, records[i].Transaction.ID, prev, hash
		prev = hash
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO ledger_seals (sequence, transaction_id, prev_hash, hash)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::bytea[]) ORDER BY 1`,
		sequences, ids, prevs, hashes)
	return mapError(err, "seal ledger: insert seals")
}

// sealPending seals queued transactions, waiting for a pass that runs
// elsewhere, until the queue is empty or maxBatches batches are done.
func sealPending(ctx context.Context, pool *pgxpool.Pool, maxBatches int) (int, error) {
	total := 0
	for range maxBatches {
		n, _, err := sealBatch(ctx, pool, true)
		total += n
		if err != nil || n < sealBatchSize {
			return total, err
		}
	}
	return total, nil
}

// Chain reads, extends and verifies the ledger's hash chain.
type Chain struct {
	pool *pgxpool.Pool
}

var _ ports.LedgerChain = (*Chain)(nil)

// NewChain returns a Chain on pool.
func NewChain(pool *pgxpool.Pool) *Chain {
	return &Chain{pool: pool}
}

// SealPending seals every queued transaction and returns how many it
// sealed. It waits while another pass holds the sealer lock.
func (c *Chain) SealPending(ctx context.Context) (int, error) {
	return sealPending(ctx, c.pool, int(^uint(0)>>1))
}

// Head returns the newest seal, with Sequence 0 and a zero hash for an
// empty chain.
func (c *Chain) Head(ctx context.Context) (ports.ChainHead, error) {
	return readHead(ctx, c.pool)
}

// Verify recomputes the chain from the first seal in one read-only snapshot
// and stops at the first seal whose sequence, link or hash does not match
// the stored rows. Rows are streamed, so memory does not grow with the
// ledger.
func (c *Chain) Verify(ctx context.Context) (ports.ChainReport, error) {
	tx, err := c.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return ports.ChainReport{}, fmt.Errorf("verify ledger chain: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	var report ports.ChainReport
	if report.Head, err = readHead(ctx, tx); err != nil {
		return ports.ChainReport{}, err
	}
	if report.Broken, report.Checked, err = walkChain(ctx, tx); err != nil {
		return ports.ChainReport{}, err
	}
	err = tx.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM ledger_unsealed),
		       (SELECT count(*) FROM ledger_transactions t
		         WHERE NOT EXISTS (SELECT 1 FROM ledger_seals s WHERE s.transaction_id = t.id)
		           AND NOT EXISTS (SELECT 1 FROM ledger_unsealed q WHERE q.transaction_id = t.id))`).
		Scan(&report.Unsealed, &report.Unqueued)
	if err != nil {
		return ports.ChainReport{}, mapError(err, "verify ledger chain: count unsealed transactions")
	}
	return report, nil
}

// walkChain recomputes seals in sequence order and returns the first break
// and the number of seals that matched before it.
func walkChain(ctx context.Context, tx pgx.Tx) (*ports.ChainBreak, int64, error) {
	rows, err := tx.Query(ctx, `
		SELECT s.sequence, s.transaction_id, s.prev_hash, s.hash, t.id IS NOT NULL, `+sealSourceColumns+`
		  FROM ledger_seals s
		  LEFT JOIN ledger_transactions t ON t.id = s.transaction_id
		  `+sealSourceEntries+`
		 ORDER BY s.sequence`)
	if err != nil {
		return nil, 0, mapError(err, "verify ledger chain: read seals")
	}
	defer rows.Close()

	var checked int64
	prevHash := zeroHash
	for rows.Next() {
		var sequence int64
		var sealedID string
		var storedPrev, storedHash []byte
		var found bool
		r, err := scanSealSource(rows, &sequence, &sealedID, &storedPrev, &storedHash, &found)
		if err != nil {
			return nil, 0, fmt.Errorf("verify ledger chain: read seal %d: %w", checked+1, err)
		}
		broken := func(problem string) (*ports.ChainBreak, int64, error) {
			return &ports.ChainBreak{Sequence: sequence, TransactionID: sealedID, Problem: problem}, checked, nil
		}

		switch {
		case sequence != checked+1:
			return broken(fmt.Sprintf("seal %d follows seal %d; a seal is missing", sequence, checked))
		case !bytes.Equal(storedPrev, prevHash):
			return broken("the seal's previous hash differs from the hash of the seal before it")
		case !found:
			return broken("the sealed transaction no longer exists")
		}
		r.Sequence, r.PrevHash = sequence, storedPrev
		if !bytes.Equal(domain.SealHash(r), storedHash) {
			return broken("the transaction or its entries differ from what was sealed")
		}
		checked++
		prevHash = storedHash
	}
	return nil, checked, mapError(rows.Err(), "verify ledger chain: read seals")
}
