"""experiments.results_doc: the regenerable blocks of docs/results.md."""

from __future__ import annotations

import os

import pytest

from experiments.results_doc import markdown_table, read_section, update_section

DOC = """# Measured results

Prose before the blocks stays.

## Speed

<!-- results:speed:begin -->
_Regenerate: `python old.py` | machine: m | measured 2020-01-01._

| a | b |
|---|---|
| 1 | 2 |
<!-- results:speed:end -->

Notes between blocks stay.

<!-- results:quality:begin -->
_Regenerate: `python q.py` | machine: m | measured 2020-01-01._

quality table
<!-- results:quality:end -->
"""


@pytest.fixture
def doc(tmp_path):
    p = tmp_path / "results.md"
    p.write_text(DOC)
    return p


def test_replacing_one_section_leaves_the_rest_intact(doc):
    update_section("speed", markdown_table(["a", "b"], [[3, 4]]), command="python new.py --write-results",
                   machine="2-core x86_64 VM, no GPU", date="2026-11-23", path=doc)
    text = doc.read_text()
    assert read_section("speed", doc) == (
        "_Regenerate: `python new.py --write-results` | machine: 2-core x86_64 VM, no GPU | measured 2026-11-23._\n\n"
        "| a | b |\n|---|---|\n| 3 | 4 |")
    assert "| 1 | 2 |" not in text and "python old.py" not in text
    # everything outside the replaced block is byte for byte what it was
    before, after = DOC.split("<!-- results:speed:begin -->")[0], DOC.split("<!-- results:speed:end -->")[1]
    assert text.startswith(before) and text.endswith(after)
    assert read_section("quality", doc) == "_Regenerate: `python q.py` | machine: m | measured 2020-01-01._\n\nquality table"


def test_replacing_twice_is_stable(doc):
    for _ in range(2):
        update_section("quality", "new quality", command="c", machine="m", date="2026-01-02", path=doc)
    text = doc.read_text()
    assert text.count("<!-- results:quality:begin -->") == 1 and text.count("new quality") == 1
    assert text.endswith("<!-- results:quality:end -->\n")


def test_missing_section_is_appended_and_missing_file_created(doc, tmp_path):
    update_section("detect", "| x |\n|---|\n| 1 |", command="python benchmarks/detect.py --write-results",
                   machine="m", date="2026-11-23", path=doc)
    text = doc.read_text()
    assert text.startswith(DOC.rstrip("\n"))
    assert text.rstrip().endswith("<!-- results:detect:end -->")
    assert text.index("<!-- results:quality:end -->") < text.index("<!-- results:detect:begin -->")
    assert "| 1 |" in read_section("detect", doc)

    fresh = tmp_path / "sub" / "new.md"
    update_section("adapt", "body", command="c", path=fresh)
    body = read_section("adapt", fresh)
    assert body.startswith("_Regenerate: `c` | machine: ") and body.endswith("body")
    assert fresh.read_text().startswith("# Measured results")


def test_write_is_atomic(doc, monkeypatch):
    """The new text goes to a temporary file that replaces the document in one rename; if writing
    fails the document is untouched and no temporary file is left behind."""
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((src, dst))
        assert os.path.dirname(src) == os.path.dirname(os.fspath(dst)), "same folder: a rename, not a copy"
        assert doc.read_text() == DOC, "the document is unchanged until the rename"
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    update_section("speed", "fast", command="c", machine="m", date="d", path=doc)
    assert len(calls) == 1 and "fast" in doc.read_text()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    snapshot = doc.read_text()
    with pytest.raises(OSError):
        update_section("speed", "lost", command="c", machine="m", date="d", path=doc)
    assert doc.read_text() == snapshot
    assert sorted(p.name for p in doc.parent.iterdir()) == ["results.md"]


def test_bad_input_writes_nothing(doc):
    with pytest.raises(ValueError):
        update_section("bad name", "x", command="c", path=doc)
    with pytest.raises(ValueError):
        update_section("speed", "<!-- results:quality:end -->", command="c", path=doc)
    broken = DOC.replace("<!-- results:speed:end -->", "")
    doc.write_text(broken)
    with pytest.raises(ValueError, match="speed"):
        update_section("speed", "x", command="c", path=doc)
    assert doc.read_text() == broken


def test_markdown_table_escapes_pipes():
    assert markdown_table(["k", "v"], [["a|b", 1.5]]) == "| k | v |\n|---|---|\n| a\\|b | 1.5 |"
