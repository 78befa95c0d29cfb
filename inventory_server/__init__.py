"""Inventory participant: stock per product, Reserve / Release by saga_id, on SQLite."""
