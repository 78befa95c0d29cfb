"""Shipping participant: CreateShipment / CancelShipment, idempotent by saga_id, on SQLite."""
