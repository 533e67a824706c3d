package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

func TestCustomerRoundTrip(t *testing.T) {
	store := newTestStore(t)
	created := testNow().Add(-time.Hour)
	userID := uniqueID("user_")

	var first, second domain.Customer
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		var err error
		if first, err = tx.Customers().Ensure(ctx, domain.Customer{UserID: userID, CreatedAt: created}); err != nil {
			return err
		}
		second, err = tx.Customers().Ensure(ctx, domain.Customer{UserID: userID, StripeCustomerID: "cus_ignored"})
		return err
	})
	if first.UserID != userID || !first.CreatedAt.Equal(created) || first.StripeCustomerID != "" {
		t.Errorf("first Ensure returned %+v, want user %s created at %s with no Stripe id", first, userID, created)
	}
	if second.StripeCustomerID != "" || !second.CreatedAt.Equal(created) {
		t.Errorf("second Ensure returned %+v, want the stored row unchanged", second)
	}

	stripeID := "cus_" + userID
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		c, err := tx.Customers().GetForUpdate(ctx, userID)
		if err != nil {
			return err
		}
		c.StripeCustomerID = stripeID
		c.DefaultPaymentMethodID = "pm_default"
		return tx.Customers().Update(ctx, c)
	})
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		got, err := tx.Customers().Get(ctx, userID)
		if err != nil {
			return err
		}
		want := domain.Customer{UserID: userID, StripeCustomerID: stripeID, DefaultPaymentMethodID: "pm_default", CreatedAt: created}
		if got.UserID != want.UserID || got.StripeCustomerID != want.StripeCustomerID ||
			got.DefaultPaymentMethodID != want.DefaultPaymentMethodID || !got.CreatedAt.Equal(want.CreatedAt) {
			t.Errorf("Get returned %+v, want %+v", got, want)
		}
		return nil
	})

	other := uniqueID("user_")
	err := store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		if _, err := tx.Customers().Ensure(ctx, domain.Customer{UserID: other}); err != nil {
			return err
		}
		return tx.Customers().Update(ctx, domain.Customer{UserID: other, StripeCustomerID: stripeID})
	})
	if !errors.Is(err, domain.ErrConflict) {
		t.Errorf("reusing a Stripe customer id returned %v, want ErrConflict", err)
	}
}

func TestCustomerNotFound(t *testing.T) {
	store := newTestStore(t)
	missing := uniqueID("user_")
	err := store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		_, err := tx.Customers().Get(ctx, missing)
		return err
	})
	if !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("Get of a missing customer returned %v, want ErrNotFound", err)
	}
	err = store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		return tx.Customers().Update(ctx, domain.Customer{UserID: missing})
	})
	if !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("Update of a missing customer returned %v, want ErrNotFound", err)
	}
}

func TestPaymentMethodRoundTrip(t *testing.T) {
	store := newTestStore(t)
	userID, otherID := uniqueID("user_"), uniqueID("user_")
	older := domain.PaymentMethod{ID: uniqueID("pm_"), CustomerID: userID, Brand: "visa", Last4: "4242",
		ExpMonth: 12, ExpYear: 2030, CreatedAt: testNow().Add(-time.Minute)}
	newer := domain.PaymentMethod{ID: uniqueID("pm_"), CustomerID: userID, Brand: "mastercard", Last4: "4444",
		ExpMonth: 1, ExpYear: 2031, CreatedAt: testNow()}

	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		for _, id := range []string{userID, otherID} {
			if _, err := tx.Customers().Ensure(ctx, domain.Customer{UserID: id}); err != nil {
				return err
			}
		}
		for _, pm := range []domain.PaymentMethod{newer, older} {
			if err := tx.Customers().UpsertPaymentMethod(ctx, pm); err != nil {
				return err
			}
		}
		older.ExpYear = 2032
		return tx.Customers().UpsertPaymentMethod(ctx, older)
	})

	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		list, err := tx.Customers().ListPaymentMethods(ctx, userID)
		if err != nil {
			return err
		}
		if len(list) != 2 {
			t.Fatalf("ListPaymentMethods returned %d cards, want 2", len(list))
		}
		for i, want := range []domain.PaymentMethod{older, newer} {
			if !samePaymentMethod(list[i], want) {
				t.Errorf("card %d = %+v, want %+v", i, list[i], want)
			}
		}
		got, err := tx.Customers().GetPaymentMethod(ctx, userID, newer.ID)
		if err != nil {
			return err
		}
		if !samePaymentMethod(got, newer) {
			t.Errorf("GetPaymentMethod = %+v, want %+v", got, newer)
		}
		return nil
	})

	stolen := older
	stolen.CustomerID = otherID
	err := store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		return tx.Customers().UpsertPaymentMethod(ctx, stolen)
	})
	if !errors.Is(err, domain.ErrConflict) {
		t.Errorf("upserting another customer's card returned %v, want ErrConflict", err)
	}

	err = store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		return tx.Customers().DeletePaymentMethod(ctx, otherID, older.ID)
	})
	if !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("deleting another customer's card returned %v, want ErrNotFound", err)
	}
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		return tx.Customers().DeletePaymentMethod(ctx, userID, older.ID)
	})
	err = store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		_, err := tx.Customers().GetPaymentMethod(ctx, userID, older.ID)
		return err
	})
	if !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("GetPaymentMethod after delete returned %v, want ErrNotFound", err)
	}

	err = store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		orphan := newer
		orphan.ID, orphan.CustomerID = uniqueID("pm_"), uniqueID("user_")
		return tx.Customers().UpsertPaymentMethod(ctx, orphan)
	})
	if !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("a card for a missing customer returned %v, want ErrNotFound", err)
	}
}

func samePaymentMethod(a, b domain.PaymentMethod) bool {
	a.CreatedAt, b.CreatedAt = a.CreatedAt.UTC(), b.CreatedAt.UTC()
	return a == b
}

func TestAgentRoundTrip(t *testing.T) {
	store := newTestStore(t)
	agent := insertAgent(t, store)

	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		got, err := tx.Agents().GetForUpdate(ctx, agent.ID)
		if err != nil {
			return err
		}
		if !sameAgent(got, agent) {
			t.Errorf("GetForUpdate = %+v, want %+v", got, agent)
		}
		if err := got.Reprice(domain.MustMoney(900, "eur")); err != nil {
			return err
		}
		got.Active = false
		got.Name = "Renamed"
		agent = got
		return tx.Agents().Update(ctx, got)
	})
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		got, err := tx.Agents().Get(ctx, agent.ID)
		if err != nil {
			return err
		}
		if !sameAgent(got, agent) {
			t.Errorf("Get after Update = %+v, want %+v", got, agent)
		}
		return nil
	})

	err := store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		return tx.Agents().Insert(ctx, agent)
	})
	if !errors.Is(err, domain.ErrConflict) {
		t.Errorf("inserting a duplicate agent returned %v, want ErrConflict", err)
	}
	err = store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		missing := agent
		missing.ID = uniqueID("agt_")
		return tx.Agents().Update(ctx, missing)
	})
	if !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("updating a missing agent returned %v, want ErrNotFound", err)
	}
}

func sameAgent(a, b domain.Agent) bool {
	a.CreatedAt, b.CreatedAt = a.CreatedAt.UTC(), b.CreatedAt.UTC()
	return a == b
}

func TestTaskRoundTrip(t *testing.T) {
	store := newTestStore(t)
	agent := insertAgent(t, store)
	task := insertTask(t, store, agent, uniqueID("user_"), testNow())

	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		got, err := tx.Tasks().GetForUpdate(ctx, task.ID())
		if err != nil {
			return err
		}
		if !sameRecord(got.Record(), task.Record()) {
			t.Errorf("GetForUpdate = %+v, want %+v", got.Record(), task.Record())
		}
		got.AttachPayment(uniqueID("pay_"))
		if err := got.MarkMatched(testNow()); err != nil {
			return err
		}
		task = got
		return tx.Tasks().Update(ctx, got)
	})
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		got, err := tx.Tasks().Get(ctx, task.ID())
		if err != nil {
			return err
		}
		if !sameRecord(got.Record(), task.Record()) {
			t.Errorf("Get after Update = %+v, want %+v", got.Record(), task.Record())
		}
		return nil
	})

	err := store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		orphan := newTask(t, domain.Agent{ID: uniqueID("agt_"), Name: "Missing", Price: domain.MustMoney(0, "usd"), Active: true},
			uniqueID("user_"), testNow())
		return tx.Tasks().Insert(ctx, orphan)
	})
	if !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("a task for a missing agent returned %v, want ErrNotFound", err)
	}
	err = store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		_, err := tx.Tasks().Get(ctx, uniqueID("task_"))
		return err
	})
	if !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("Get of a missing task returned %v, want ErrNotFound", err)
	}
}

// sameRecord compares two records after moving their times to UTC, because
// pgx returns timestamptz values in the local time zone.
func sameRecord[T any](a, b T) bool {
	return reflect.DeepEqual(utcTimes(a), utcTimes(b))
}

func utcTimes[T any](record T) T {
	v := reflect.ValueOf(&record).Elem()
	for i := range v.NumField() {
		if f, ok := v.Field(i).Interface().(time.Time); ok && v.Field(i).CanSet() {
			v.Field(i).Set(reflect.ValueOf(f.UTC()))
		}
	}
	return record
}

// fullPaymentRecord returns a payment with every field set to a value
// distinct from its zero value and from the other fields.
func fullPaymentRecord(t *testing.T, store *Store) domain.PaymentRecord {
	t.Helper()
	agent := insertAgent(t, store)
	task := insertTask(t, store, agent, uniqueID("user_"), testNow())
	now := testNow()
	return domain.PaymentRecord{
		ID: uniqueID("pay_"), TaskID: task.ID(), CustomerID: task.CustomerID(), AgentID: agent.ID,
		StripeCustomerID:      uniqueID("cus_"),
		DestinationAccountID:  "acct_dest42",
		Amount:                domain.MustMoney(5000, "eur"),
		CaptureAmount:         domain.MustMoney(4000, "eur"),
		FeeRate:               1250,
		Status:                domain.PaymentCaptured,
		AutoCharged:           true,
		PaymentMethodID:       "pm_card",
		StripePaymentIntentID: uniqueID("pi_"),
		ClientSecret:          "pi_secret",
		DeclineCode:           "insufficient_funds",
		FailureReason:         "retried",
		CaptureBefore:         now.Add(7 * 24 * time.Hour),
		CapturedAmount:        4000,
		PlatformFee:           500,
		AgentShare:            3500,
		StripeFee:             146,
		StripeChargeID:        "ch_1",
		StripeBalanceTxID:     "txn_1",
		StripeTransferID:      "tr_1",
		TransferFailedReason:  "account closed",
		CreatedAt:             now.Add(-time.Hour),
		UpdatedAt:             now,
	}
}

func TestPaymentRoundTripAllFields(t *testing.T) {
	store := newTestStore(t)
	record := fullPaymentRecord(t, store)
	fields := reflect.ValueOf(record)
	for i := range fields.NumField() {
		if fields.Field(i).IsZero() {
			t.Fatalf("fixture field %s is zero, so the round trip would not cover it", fields.Type().Field(i).Name)
		}
	}
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		return tx.Payments().Insert(ctx, domain.UnmarshalPaymentFromDatabase(record))
	})

	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		byID, err := tx.Payments().Get(ctx, record.ID)
		if err != nil {
			return err
		}
		if !sameRecord(byID.Record(), record) {
			t.Errorf("Get = %+v\nwant  %+v", byID.Record(), record)
		}
		byIntent, err := tx.Payments().GetByPaymentIntent(ctx, record.StripePaymentIntentID)
		if err != nil {
			return err
		}
		if !sameRecord(byIntent.Record(), record) {
			t.Errorf("GetByPaymentIntent = %+v\nwant  %+v", byIntent.Record(), record)
		}
		return nil
	})

	updated := record
	updated.Status = domain.PaymentTransferred
	updated.CaptureBefore = time.Time{}
	updated.StripePaymentIntentID = ""
	updated.TransferFailedReason = ""
	updated.UpdatedAt = testNow().Add(time.Second)
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		locked, err := tx.Payments().GetForUpdate(ctx, record.ID)
		if err != nil {
			return err
		}
		if locked.ID() != record.ID {
			t.Errorf("GetForUpdate returned payment %s, want %s", locked.ID(), record.ID)
		}
		return tx.Payments().Update(ctx, domain.UnmarshalPaymentFromDatabase(updated))
	})
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		got, err := tx.Payments().Get(ctx, record.ID)
		if err != nil {
			return err
		}
		if !sameRecord(got.Record(), updated) {
			t.Errorf("Get after Update = %+v\nwant  %+v", got.Record(), updated)
		}
		return nil
	})
}

func TestPaymentConstraintsMapToDomainErrors(t *testing.T) {
	store := newTestStore(t)
	record := fullPaymentRecord(t, store)
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		return tx.Payments().Insert(ctx, domain.UnmarshalPaymentFromDatabase(record))
	})

	sameTask := record
	sameTask.ID, sameTask.StripePaymentIntentID = uniqueID("pay_"), uniqueID("pi_")
	sameIntent := fullPaymentRecord(t, store)
	sameIntent.StripePaymentIntentID = record.StripePaymentIntentID
	otherCurrency := record
	otherCurrency.Amount, otherCurrency.CaptureAmount = domain.MustMoney(5000, "usd"), domain.MustMoney(4000, "usd")
	missing := record
	missing.ID = uniqueID("pay_")

	cases := []struct {
		name string
		run  func(ctx context.Context, tx ports.Tx) error
		want error
	}{
		{"second payment for a task", func(ctx context.Context, tx ports.Tx) error {
			return tx.Payments().Insert(ctx, domain.UnmarshalPaymentFromDatabase(sameTask))
		}, domain.ErrConflict},
		{"reused PaymentIntent", func(ctx context.Context, tx ports.Tx) error {
			return tx.Payments().Insert(ctx, domain.UnmarshalPaymentFromDatabase(sameIntent))
		}, domain.ErrConflict},
		{"currency change", func(ctx context.Context, tx ports.Tx) error {
			return tx.Payments().Update(ctx, domain.UnmarshalPaymentFromDatabase(otherCurrency))
		}, domain.ErrCurrencyMismatch},
		{"update of a missing payment", func(ctx context.Context, tx ports.Tx) error {
			return tx.Payments().Update(ctx, domain.UnmarshalPaymentFromDatabase(missing))
		}, domain.ErrNotFound},
		{"unknown PaymentIntent", func(ctx context.Context, tx ports.Tx) error {
			_, err := tx.Payments().GetByPaymentIntent(ctx, uniqueID("pi_"))
			return err
		}, domain.ErrNotFound},
	}
	for _, c := range cases {
		err := store.InTx(testContext(t), c.run)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestPaymentStepRoundTrip(t *testing.T) {
	store := newTestStore(t)
	payment := insertPayment(t, store)

	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		got, err := tx.Payments().Step(ctx, payment.ID(), domain.StepCapture)
		if err != nil {
			return err
		}
		want := ports.StepState{PaymentID: payment.ID(), Step: domain.StepCapture, Attempt: 1}
		if got != want {
			t.Errorf("Step before any save = %+v, want %+v", got, want)
		}
		return nil
	})

	states := []ports.StepState{
		{PaymentID: payment.ID(), Step: domain.StepCapture, Attempt: 1, Claimed: true,
			LeaseUntil: testNow().Add(time.Minute)},
		{PaymentID: payment.ID(), Step: domain.StepCapture, Attempt: 2, Done: true, LastError: "card_declined"},
	}
	for _, want := range states {
		inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
			return tx.Payments().SaveStep(ctx, want)
		})
		inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
			got, err := tx.Payments().Step(ctx, payment.ID(), domain.StepCapture)
			if err != nil {
				return err
			}
			got.LeaseUntil = got.LeaseUntil.UTC()
			if got != want {
				t.Errorf("Step after SaveStep = %+v, want %+v", got, want)
			}
			return nil
		})
	}

	err := store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		return tx.Payments().SaveStep(ctx, ports.StepState{PaymentID: uniqueID("pay_"), Step: domain.StepCapture, Attempt: 1})
	})
	if !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("SaveStep for a missing payment returned %v, want ErrNotFound", err)
	}
	err = store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		return tx.Payments().SaveStep(ctx, ports.StepState{PaymentID: payment.ID(), Step: domain.StepCapture, Attempt: 0})
	})
	if err == nil {
		t.Error("SaveStep accepted attempt 0")
	}
}

func TestOperationsBeginConcurrently(t *testing.T) {
	store := newTestStore(t)
	subject, kind := uniqueID("user_"), "attach_card"

	const callers = 10
	ids := make([]string, callers)
	errs := make([]error, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			errs[i] = store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
				var err error
				ids[i], err = tx.Operations().Begin(ctx, subject, kind)
				return err
			})
		})
	}
	close(start)
	wg.Wait()

	for i := range callers {
		if errs[i] != nil {
			t.Errorf("caller %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Errorf("caller %d got operation %s, caller 0 got %s", i, ids[i], ids[0])
		}
	}

	var next string
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		if err := tx.Operations().Finish(ctx, ids[0]); err != nil {
			return err
		}
		if err := tx.Operations().Finish(ctx, ids[0]); err != nil {
			return err
		}
		var err error
		next, err = tx.Operations().Begin(ctx, subject, kind)
		return err
	})
	if next == ids[0] || next == "" {
		t.Errorf("Begin after Finish returned %q, want a new id", next)
	}

	err := store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		return tx.Operations().Finish(ctx, uniqueID("op_"))
	})
	if !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("Finish of a missing operation returned %v, want ErrNotFound", err)
	}
}

func TestAuditRecordIsAppendOnly(t *testing.T) {
	store := newTestStore(t)
	subject := uniqueID("agt_")
	at := testNow()
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		return tx.Audit().Record(ctx, ports.AuditEvent{
			Actor: "admin_1", Action: "agent.reprice", Subject: subject, RequestID: "req_1",
			Details: map[string]any{"priceCents": 900}, At: at,
		})
	})

	ctx := testContext(t)
	pool := migratedPool(t)
	var actor, action, requestID string
	var details []byte
	var storedAt time.Time
	err := pool.QueryRow(ctx, `SELECT actor, action, request_id, details, at FROM audit_log WHERE subject = $1`, subject).
		Scan(&actor, &action, &requestID, &details, &storedAt)
	if err != nil {
		t.Fatal(err)
	}
	if actor != "admin_1" || action != "agent.reprice" || requestID != "req_1" || !storedAt.Equal(at) {
		t.Errorf("stored event = %s %s %s at %s", actor, action, requestID, storedAt)
	}
	var decoded map[string]any
	if err := json.Unmarshal(details, &decoded); err != nil || decoded["priceCents"] != float64(900) {
		t.Errorf("stored details = %s, want {\"priceCents\": 900}", details)
	}

	if _, err := pool.Exec(ctx, `UPDATE audit_log SET actor = 'someone' WHERE subject = $1`, subject); err == nil {
		t.Error("UPDATE of audit_log succeeded")
	}
	if _, err := pool.Exec(ctx, `DELETE FROM audit_log WHERE subject = $1`, subject); err == nil {
		t.Error("DELETE from audit_log succeeded")
	}
}
