"""The ``chroma-orch`` client commands (instances, tenants, tokens): a person at a
terminal, or a script, against a running service's /v1 API.

``app`` puts them on the command line (typer), ``runner`` runs one against the
service, ``instances`` and ``admin`` are what they do, ``render`` and
``progress`` what people and scripts see."""
