"""Plain-text output shared by the command line and the modules that print through it
(``coworld-bench list``, ``status``, ``sweep --dry-run``, ``sweep status``)."""

from __future__ import annotations

__all__ = ["table"]


def table(rows: list[list[str]], header: list[str]) -> str:
    """Rows under a header: columns left-aligned, padded to their widest cell and two
    spaces apart, with a dashed rule under the header (trailing spaces trimmed)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
