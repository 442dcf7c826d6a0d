"""Logs, metrics and request context for operators."""
