"""The paper's qualitative claims, measured on the runs at hand (``claims.md``).

Each claim is stated per pair (table column) as holding or not, with the numbers it
rests on and the scale they were measured at; nothing is tuned or filtered to make a
claim hold. The claims (paper section 4 and Figure 5b):

1. CoWorld scores above Offline DV2.
2. Offline DV2 overestimates its values: mean(V - G) > 0 along its final evaluation
   episodes (V: its critic's value of each visited state, G: the true discounted return
   from that step).
3. CoWorld w/o Max underestimates: mean(V - G) < 0.
4. CoWorld's value error is the smallest: |mean(V - G)| below every other algorithm's
   on the pair.
5. Every algorithm scores above uniformly random actions on the same evaluation seeds
   on at least one pair.
"""

from __future__ import annotations

import numpy as np

from coworld_bench.report.runs import RunRecord
from coworld_bench.report.tables import Table, display_name

__all__ = ["claims_markdown", "value_errors"]


def value_errors(table: Table, records: list[RunRecord]) -> dict[tuple[str, str], list[float]]:
    """(algo, column) -> mean(V - G) of each run with a finite value trace in the table's
    group (an offline algorithm's run on a target serves each column with it)."""
    out: dict[tuple[str, str], list[float]] = {}
    group = (table.benchmark, table.quality, table.preset, table.variant)
    for r in sorted(records, key=lambda r: (r.seed, str(r.path))):
        if (r.benchmark, r.quality, r.preset, r.variant) != group:
            continue
        trace = r.value_trace()
        if trace is None or not np.isfinite(trace["value"]).all():
            continue
        error = float((trace["value"] - trace["discounted_return"]).mean())
        columns = [r.column] if r.source is not None else \
            [c for c in table.columns if c.split("->")[-1] == r.target.code]
        for column in columns:
            out.setdefault((r.algo, column), []).append(error)
    return out


def _scale(table: Table, column: str, algos: list[str]) -> str:
    """How the runs a claim rests on were measured (``algos`` on ``column``)."""
    algos = [a for a in algos if a in table.algos]
    runs = [r for a in algos for r in table.cell(a, column).runs]
    if not runs:
        return "no runs"
    steps = sorted({r.steps for r in runs})
    episodes = sorted({len(r.final["returns"]) for r in runs})
    seeds = max(table.cell(a, column).n for a in algos)
    data = runs[0].config
    return (f"preset {table.preset}, {'/'.join(f'{s:,}' for s in steps)} updates, "
            f"{'/'.join(map(str, episodes))} eval episodes, {seeds} seeds, "
            f"{data.get('dataset_quality')} data ({data.get('dataset_behaviour')}, "
            f"{data.get('dataset_episodes')} episodes)")


def _cell(table: Table, algo: str, column: str) -> str:
    cell = table.cell(algo, column)
    return f"{cell.mean:.1f} ± {cell.std:.1f} (n={cell.n})"


def _verdict(holds: list[bool], unit: str = "pairs") -> str:
    if not holds:
        return "not measured"
    if all(holds):
        return "**holds**"
    return "**does not hold**" if not any(holds) else \
        f"**holds for {sum(holds)} of {len(holds)} {unit}**"


def _error(errors: list[float]) -> str:
    return f"{np.mean(errors):+.2f} (n={len(errors)})"


def table_claims(table: Table, records: list[RunRecord]) -> list[str]:
    """The claims on one table (built with the ablations), as markdown lines."""
    has = lambda algo, c: algo in table.algos and table.cell(algo, c).n > 0  # noqa: E731
    errors = value_errors(table, records)
    lines = [f"## {table.title}", ""]

    def claim(title: str, rows: list[tuple[str, str, bool]], algos: list[str]) -> None:
        lines.append(f"### {title}: {_verdict([ok for _, _, ok in rows])}")
        lines.append("")
        for column, text, ok in rows:
            lines.append(f"- {column.replace('->', '→')}: {text}: "
                         f"{'holds' if ok else 'does not hold'} "
                         f"({_scale(table, column, algos)})")
        if not rows:
            lines.append("- not measured here (the runs it needs are not in this table)")
        lines.append("")

    rows = [(c, f"CoWorld {_cell(table, 'coworld', c)} vs Offline DV2 "
                f"{_cell(table, 'offline-dv2', c)}",
             table.cell("coworld", c).mean > table.cell("offline-dv2", c).mean)
            for c in table.columns if has("coworld", c) and has("offline-dv2", c)]
    claim("1. CoWorld scores above Offline DV2", rows, ["coworld", "offline-dv2"])
    for number, algo, sign, word in ((2, "offline-dv2", 1, "overestimates"),
                                     (3, "coworld-brute-force", -1, "underestimates")):
        rows = [(c, f"mean V − G = {_error(errors[(algo, c)])}",
                 sign * float(np.mean(errors[(algo, c)])) > 0)
                for c in table.columns if (algo, c) in errors]
        claim(f"{number}. {display_name(algo)} {word} its values", rows, [algo])
    rows = []
    for c in table.columns:
        if ("coworld", c) not in errors:
            continue
        others = {a: abs(float(np.mean(e))) for (a, col), e in errors.items()
                  if col == c and a != "coworld"}
        if not others:
            continue
        mine = abs(float(np.mean(errors[("coworld", c)])))
        text = f"|V − G| CoWorld {mine:.2f}; " + ", ".join(
            f"{display_name(a)} {v:.2f}" for a, v in sorted(others.items(), key=lambda kv: kv[1]))
        rows.append((c, text, mine < min(others.values())))
    claim("4. CoWorld's value error is the smallest", rows,
          ["coworld", *sorted({a for a, _ in errors if a != "coworld"})])
    if table.has_random():
        lines.append("### 5. Every algorithm above uniformly random actions on at least one "
                     "pair: " + _verdict([
                         any(has(a, c) and table.random.get(c) is not None
                             and table.random[c].n and table.cell(a, c).mean
                             > table.random[c].mean for c in table.columns)
                         for a in table.algos], unit="algorithms"))
        lines.append("")
        for a in table.algos:
            above = [c for c in table.columns if has(a, c) and table.random.get(c) is not None
                     and table.random[c].n and table.cell(a, c).mean > table.random[c].mean]
            parts = [f"{c.replace('->', '→')} {table.cell(a, c).mean:.1f} vs random "
                     f"{table.random[c].mean:.1f}" for c in table.columns
                     if has(a, c) and table.random.get(c) is not None and table.random[c].n]
            lines.append(f"- {display_name(a)}: above random on {len(above)} of "
                         f"{len(parts)} pairs ({'; '.join(parts)})")
        lines.append("")
    return lines


def claims_markdown(tables: list[Table], records: list[RunRecord]) -> str:
    out = ["# The paper's claims at this scale", "",
           "Measured on the runs of this report; each claim holds or not as the numbers give "
           "it, per pair. V − G: the critic's value minus the true discounted return, averaged "
           "along the final evaluation episodes (paper Figure 5b). Means over seeds; n = "
           "seeds (runs). Small-scale runs (smoke, quick) test the claims at their scale only.",
           ""]
    measured = [t for t in tables if "coworld" in t.algos]
    if not measured:
        out.append("No table holds CoWorld runs: nothing to compare.")
    for table in measured:
        out += table_claims(table, records)
    return "\n".join(out) + "\n"
