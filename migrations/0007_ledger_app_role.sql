-- The role the service should run as in production: it may read and write
-- the operational tables but may only read and insert ledger rows, so even a
-- bug or an injected statement in the service cannot rewrite history.
-- Migrations keep running as the owner of the tables. The role has no login:
-- operators grant it to the service's login role (GRANT taskpod_billing_app
-- TO billingd_login) or give it LOGIN and a password.
--
-- Roles belong to the whole server, so another database on the same server
-- may have created it already, possibly at the same moment.
DO $$
BEGIN
    CREATE ROLE taskpod_billing_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO taskpod_billing_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO taskpod_billing_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO taskpod_billing_app;

-- Tables that later migrations create get the same operational grants;
-- a migration that adds an append-only table revokes UPDATE and DELETE
-- itself, as below.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO taskpod_billing_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO taskpod_billing_app;

-- Append-only tables: the triggers of migrations 0002 and 0006 reject these
-- statements too, but a missing privilege stops them before any trigger
-- runs, and it still holds while the owner has the triggers disabled with
-- ALTER TABLE ... DISABLE TRIGGER.
REVOKE UPDATE, DELETE, TRUNCATE ON ledger_accounts, ledger_transactions, ledger_entries, ledger_seals, audit_log
    FROM taskpod_billing_app;
