"""The public API's contract, kept beside the code: ``docs/openapi.json`` is the
OpenAPI document the service serves (SDKs can be generated from it offline), and
this test fails when the two differ, so every change of the public API shows up as
a diff of that file in review (issue 13: the document stays the same apart from
added descriptions). After a deliberate change, rewrite it:

    CHROMA_ORCH_WRITE_OPENAPI=1 .venv/bin/pytest tests/api/test_openapi_document.py
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

from chroma_orch.app import create_app
from chroma_orch.settings import Settings

DOCUMENT = Path(__file__).parents[2] / "docs" / "openapi.json"


def _served() -> str:
    spec = create_app(Settings()).openapi()
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_the_served_document_is_the_one_in_docs() -> None:
    served = _served()
    if os.environ.get("CHROMA_ORCH_WRITE_OPENAPI"):
        DOCUMENT.write_text(served)
    kept = DOCUMENT.read_text()
    diff = "".join(
        difflib.unified_diff(
            kept.splitlines(keepends=True),
            served.splitlines(keepends=True),
            "docs/openapi.json",
            "served",
            n=2,
        )
    )
    assert served == kept, f"the public API changed; review, then rewrite the file:\n{diff[:6000]}"
