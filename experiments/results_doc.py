"""Regenerable sections of ``docs/results.md``: each measuring script replaces its own block.

    from experiments.results_doc import markdown_table, update_section
    update_section("adapt", markdown_table(["stage", "seconds"], rows), command="python benchmarks/adapt.py --write-results")

A section is the text between ``<!-- results:NAME:begin -->`` and ``<!-- results:NAME:end -->``. It
starts with one header line (the command that regenerates it, the machine, the date) followed by the
caller's markdown. Text outside the blocks (headings, notes) is kept as it is. The file is rewritten
atomically (a temporary file in the same folder, then ``os.replace``), so a reader or a killed writer
never sees half a document.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATH = "docs/results.md"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
TITLE = "# Measured results\n"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- results:{name}:begin -->", f"<!-- results:{name}:end -->"


def default_machine() -> str:
    """A short description of this machine: cores, architecture, VM or not, GPU or not (no torch
    import), e.g. '2-core x86_64 VM, no GPU'."""
    try:
        vm = " VM" if " hypervisor" in Path("/proc/cpuinfo").read_text() else ""
    except OSError:
        vm = ""
    gpu = "NVIDIA GPU" if Path("/proc/driver/nvidia/gpus").is_dir() else "no GPU"
    return f"{os.cpu_count()}-core {platform.machine()}{vm}, {gpu}"


def invocation() -> str:
    """The command line of the running script, with its path relative to the repository root
    (``python benchmarks/adapt.py --write-results``)."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_s = str(script.relative_to(ROOT))
    except ValueError:
        script_s = str(script)
    return shlex.join(["python", script_s, *sys.argv[1:]])


def header_line(command: str, machine: str, date: str) -> str:
    return f"_Regenerate: `{command}` | machine: {machine} | measured {date}._"


def _resolve(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p if p.is_absolute() else ROOT / p


def update_section(name: str, markdown: str, command: str, machine: str | None = None, date: str | None = None,
                   path: str | os.PathLike = DEFAULT_PATH) -> Path:
    """Replace the block ``name`` of the results document (a path relative to the repository root, or
    absolute) with a header line and ``markdown``; a missing block is appended at the end, a missing
    file created. ``machine`` defaults to :func:`default_machine`, ``date`` to today (ISO). Returns
    the file's path. Raises ``ValueError`` for a bad name, markdown holding a results marker, or a
    document whose block ``name`` is unterminated or duplicated (nothing is written then)."""
    if not _NAME.match(name):
        raise ValueError(f"results section name {name!r}: use letters, digits, '_', '-', '.'")
    if "<!-- results:" in markdown:
        raise ValueError(f"results section {name!r}: its markdown must not contain a results marker")
    begin, end = _markers(name)
    target = _resolve(path)
    text = target.read_text(encoding="utf-8") if target.exists() else TITLE
    block = "\n".join([begin, header_line(command, machine or default_machine(), date or _dt.date.today().isoformat()),
                       "", markdown.strip("\n"), end])
    n_begin, n_end = text.count(begin), text.count(end)
    if n_begin == n_end == 0:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    elif n_begin == n_end == 1 and text.index(begin) < text.index(end):
        i, j = text.index(begin), text.index(end) + len(end)
        text = text[:i] + block + text[j:]
    else:
        raise ValueError(f"{target}: section {name!r} has {n_begin} begin and {n_end} end markers; fix it by hand")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_section(name: str, path: str | os.PathLike = DEFAULT_PATH) -> str | None:
    """The text between the markers of block ``name`` (header line included), or None if absent."""
    target = _resolve(path)
    if not target.exists():
        return None
    begin, end = _markers(name)
    text = target.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        return None
    return text[text.index(begin) + len(begin): text.index(end)].strip("\n")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table; floats as given by the caller (format them first), '|' escaped."""
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
