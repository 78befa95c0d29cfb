"""Payment participant: Charge / Refund, idempotent by saga_id, on SQLite."""
