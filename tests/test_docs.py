"""Generated documents stay in sync with the code."""

from __future__ import annotations

import pathlib

from tdpmmu.mmu.locking import lock_table_markdown

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_docs_locking_md_is_the_generated_table():
    text = (ROOT / "docs" / "locking.md").read_text()
    table = text[text.index("| function |"):].strip()
    assert table == lock_table_markdown().strip(), \
        "regenerate: tdpmmu locks --markdown (see docs/locking.md header)"
