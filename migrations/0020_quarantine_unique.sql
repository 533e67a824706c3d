-- One open quarantine entry per outbox message, so a message redelivered
-- after a crash between its quarantine and its acknowledgement is kept once.
CREATE UNIQUE INDEX outbox_quarantine_message_open ON outbox_quarantine (message_uuid) WHERE requeued_at IS NULL;
