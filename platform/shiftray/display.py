"""Terminal output: rich on a terminal, plain aligned text everywhere else.

Plain text is the contract for pipes, CI logs and tests (they read these lines); rich is only
for people at a terminal. The choice is made by ``isatty`` of the stream written to, as before
rich, so ``FORCE_COLOR`` in a CI environment does not change what the logs contain;
``TTY_COMPATIBLE=0`` turns rich off on a terminal too. Tests pass a forced ``Console``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console


def terminal_console(stream: TextIO | None = None, console: Console | None = None):
    """A rich ``Console`` writing to ``stream`` when it is a terminal, else None."""
    if console is not None:
        return console if console.is_terminal else None
    stream = stream or sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed (end of a pytest run)
        tty = False
    if not tty:
        return None
    from rich.console import Console

    made = Console(file=stream)
    return made if made.is_terminal else None


def plain_table(rows: list[dict], columns: list[str]) -> str:
    """Columns left-aligned to their widest cell, a dashed rule under the header."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines) + "\n"


def print_table(
    rows: list[dict], columns: list[str], out: TextIO | None = None, console: Console | None = None
) -> None:
    """``rows`` (one dict per row) under ``columns``: a rich table on a terminal, else plain."""
    out = out or sys.stdout
    rich_console = terminal_console(out, console)
    if rich_console is None:
        out.write(plain_table(rows, columns))
        return
    from rich.table import Table

    table = Table(*columns, header_style="bold")
    for r in rows:
        table.add_row(*(str(r.get(c, "")) for c in columns))
    for col in table.columns:
        col.overflow = "fold"  # run directories are copied from here: wrap, never cut
    rich_console.print(table)
