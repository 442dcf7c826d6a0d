"""Snapshot archives and the stores that keep them (docs/data.md)."""
