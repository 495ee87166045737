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

A claim holds on a pair only where the difference it rests on is larger than its
uncertainty over seeds (SPEC 7b): the 95% Welch interval of the difference of two means
(one-sample t interval for a value error's sign) must exclude zero on the claimed side.
With fewer than two seeds on a side there is no interval and the claim is "not
established". A comparison of two algorithms that both score below uniform random is
reported as such, never as a win.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

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


LEVEL = 0.95


def welch_interval(a, b, level: float = LEVEL) -> tuple[float, float, float] | None:
    """(mean(a) - mean(b), low, high): the Welch t interval of the difference of two
    means at ``level``; one-sample (a's mean against 0) when ``b`` is None. None with
    fewer than two values on a side."""
    a = np.asarray(a, np.float64)
    if a.size < 2 or (b is not None and len(b) < 2):
        return None
    if b is None:
        diff, var, df = a.mean(), a.var(ddof=1) / a.size, a.size - 1
    else:
        b = np.asarray(b, np.float64)
        va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
        diff, var = a.mean() - b.mean(), va + vb
        df = var ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)) if var > 0 else 1.0
    half = float(stats.t.ppf(0.5 + level / 2, df) * math.sqrt(var))
    return float(diff), float(diff - half), float(diff + half)


def _greater(a, b) -> tuple[bool, str]:
    """Whether mean(a) > mean(b) (b None: > 0) beyond the interval, and the interval's text."""
    interval = welch_interval(a, b)
    if interval is None:
        return False, "no interval with fewer than 2 seeds, so not established"
    diff, low, high = interval
    return low > 0, f"difference {diff:+.2f}, {LEVEL:.0%} Welch interval [{low:+.2f}, {high:+.2f}]"


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

    random = lambda c: table.random.get(c) if table.has_random() else None  # noqa: E731
    rows = []
    for c in table.columns:
        if not (has("coworld", c) and has("offline-dv2", c)):
            continue
        ours, theirs = table.cell("coworld", c), table.cell("offline-dv2", c)
        ok, interval = _greater(ours.scores, theirs.scores)
        text = (f"CoWorld {_cell(table, 'coworld', c)} vs Offline DV2 "
                f"{_cell(table, 'offline-dv2', c)}, {interval}")
        rand = random(c)
        if rand is not None and rand.n and max(ours.mean, theirs.mean) < rand.mean:
            ok, text = False, text + f"; both below uniform random ({rand.mean:.1f}), not a win"
        rows.append((c, text, ok))
    claim("1. CoWorld scores above Offline DV2", rows, ["coworld", "offline-dv2"])
    for number, algo, sign, word in ((2, "offline-dv2", 1, "overestimates"),
                                     (3, "coworld-brute-force", -1, "underestimates")):
        rows = []
        for c in table.columns:
            if (algo, c) not in errors:
                continue
            interval = welch_interval(errors[(algo, c)], None)
            if interval is None:
                ok, text = False, "no interval with fewer than 2 seeds, so not established"
            else:
                _, low, high = interval
                ok = low > 0 if sign > 0 else high < 0
                text = f"{LEVEL:.0%} t interval [{low:+.2f}, {high:+.2f}]"
            rows.append((c, f"mean V − G = {_error(errors[(algo, c)])}, {text}", ok))
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
        # Per-run |V - G|: CoWorld's below each other algorithm's beyond the interval.
        checks = [_greater(np.abs(errors[(a, c)]), np.abs(errors[("coworld", c)]))
                  for a in others]
        ok = mine < min(others.values()) and all(k for k, _ in checks)
        if mine < min(others.values()) and not ok:
            text += " (smallest, but not beyond the seeds' uncertainty for every other)"
        rows.append((c, text, ok))
    claim("4. CoWorld's value error is the smallest", rows,
          ["coworld", *sorted({a for a, _ in errors if a != "coworld"})])
    if table.has_random():
        def above_random(a, c) -> bool:
            rand = table.random.get(c)
            return bool(has(a, c) and rand is not None and rand.n
                        and _greater(table.cell(a, c).scores, rand.scores)[0])

        lines.append("### 5. Every algorithm above uniformly random actions on at least one "
                     "pair (beyond the seeds' uncertainty): " + _verdict([
                         any(above_random(a, c) for c in table.columns)
                         for a in table.algos], unit="algorithms"))
        lines.append("")
        for a in table.algos:
            above = [c for c in table.columns if above_random(a, c)]
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
           "it, per pair, and holds only where the difference exceeds its uncertainty over "
           "seeds (a 95% Welch interval that excludes zero). V − G: the critic's value minus the true discounted return, averaged "
           "along the final evaluation episodes (paper Figure 5b). Means over seeds; n = "
           "seeds (runs). Small-scale runs (smoke, quick) test the claims at their scale only.",
           ""]
    measured = [t for t in tables if "coworld" in t.algos]
    if not measured:
        out.append("No table holds CoWorld runs: nothing to compare.")
    for table in measured:
        out += table_claims(table, records)
    return "\n".join(out) + "\n"
