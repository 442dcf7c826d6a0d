"""chroma-orch: a control plane for per-tenant Chroma servers."""

__version__ = "0.1.0"
