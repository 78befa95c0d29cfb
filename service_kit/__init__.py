"""Plumbing shared by every minisaga server: errors, storage, serving, faults."""
