"""End-to-end tests use the top-level ``service`` fixture (tests/conftest.py)."""
