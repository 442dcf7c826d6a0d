"""Upstream TLS: one context per process (loading the CAs costs ~40 ms a time, once
per app start), verifying exactly as httpx's default does."""

from __future__ import annotations

import ssl

from chroma_orch.dataplane.forward import upstream_tls


def test_the_upstream_tls_context_is_built_once_and_verifies_hosts() -> None:
    context = upstream_tls()
    assert upstream_tls() is context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # certifi's CAs, as httpx loads them
