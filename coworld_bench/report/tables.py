"""Result tables in the paper's layout: rows = algorithms, columns = pairs, cells =
mean ± std over seeds of the per-seed score (the mean return of the run's final
evaluation), and the average over the table's columns. A last row, "Random actions",
holds uniformly random actions on the same evaluation seeds (per seed: the mean over the
table's runs of that seed on the column's target), where the runs recorded it.

std is the population std over seeds (``ddof=0``). A cell with fewer seeds than the
table's expected count says how many it has (``(1/3 seeds)``); an empty one reads
``– (0/3 seeds)``; an average over incomplete columns reads ``– (5/6 pairs)``.

Normalised scores (the evaluation protocol, ``coworld_bench/protocol.md``): each
per-seed score R becomes 100 (R - R_random) / (R_ref - R_random) with the target's
references (``coworld_bench.protocol.references``); the normalised table has the same
layout, and RoboDesk columns, which have no reference, read "raw only".
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Iterable

import numpy as np

from coworld_bench import tasks as tasks_lib
from coworld_bench.report.runs import RunRecord

__all__ = ["Table", "Cell", "build_tables", "display_name", "ABLATIONS", "MAX_RETURN",
           "column_order", "format_cell", "task_references"]

# The paper's row order (its tables' layout); names and families come from the
# algorithms themselves (``Algorithm.paper_name``, ``Algorithm.family``), so a
# plugin's results carry its own display name.
ROW_ORDER = ["bc", "dreamerv2", "drq-bc", "cql", "curl", "lompo", "d3rlpy-bc", "d3rlpy-td3bc",
             "d3rlpy-cql", "d3rlpy-iql", "offline-dv2", "dv2-finetune",
             "dv2-finetune-ewc", "lompo-finetune", "multitask-dv2", "coworld",
             "coworld-multisource", "coworld-no-state-align", "coworld-no-reward-align",
             "coworld-no-value-constraint", "coworld-brute-force"]
ABLATIONS = ("coworld-no-state-align", "coworld-no-reward-align", "coworld-no-value-constraint",
             "coworld-brute-force")  # the paper's Figure 5a order
RANDOM_ROW = "random"  # the random-action row's id in the long CSV
RANDOM_NAME = "Random actions"
# The most return an episode can give (500 steps x the largest per-step reward): the
# aggregates' scale where a task has no protocol reference (RoboDesk).
MAX_RETURN = {"metaworld": 5000.0, "robodesk": 500.0, "dmc": 1000.0}
_REFERENCES: dict[str, dict] = {}


def task_references(task_id: str) -> dict:
    """The protocol's R_random and R_ref of a task (``protocol.references``: the shipped
    table, else computed once and cached under the data root), once per process."""
    from coworld_bench import protocol

    if task_id not in _REFERENCES:
        _REFERENCES[task_id] = protocol.references(task_id)
    return _REFERENCES[task_id]


def normalised_cell(cell: "Cell") -> "Cell | None":
    """The cell with its scores normalised by the protocol; None without a reference."""
    from coworld_bench import protocol

    refs = task_references(_column_target(cell.column))
    if refs.get("reference") is None:
        return None
    scores = [protocol.normalised(s, refs) for s in cell.scores]
    return Cell(cell.algo, cell.column, list(cell.seeds), scores, list(cell.runs))


def _algorithm(algo: str):
    from coworld_bench import registry

    try:
        return registry.get(algo)
    except Exception:  # not installed here (a report of someone else's runs)
        return None


def display_name(algo: str) -> str:
    """The algorithm's own paper name (``Algorithm.paper_name``), else its registry name."""
    cls = _algorithm(algo)
    return cls.display_name() if cls is not None else algo


def is_ablation(algo: str) -> bool:
    cls = _algorithm(algo)
    return algo in ABLATIONS or (cls is not None and cls.family == "ablation")


def _row_key(algo: str) -> tuple:
    if algo in ROW_ORDER:
        index = ROW_ORDER.index(algo)
        return (2 if algo.startswith("coworld") else 0, index, algo)
    return (1, 0, algo)  # plugins: after the baselines, before CoWorld


def column_order(columns: Iterable[str], benchmark: str) -> list[str]:
    """The paper's pair order first, then the rest alphabetically."""
    paper = []
    for name in tasks_lib.PAPER_PAIRS.get(benchmark, ()):
        pair = tasks_lib.resolve_pair(name)
        paper.append(f"{pair.source.code}->{pair.target.code}")
    columns = set(columns)
    return [c for c in paper if c in columns] + sorted(columns - set(paper))


@dataclasses.dataclass
class Cell:
    algo: str
    column: str
    seeds: list[int]
    scores: list[float]
    runs: list[RunRecord]

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores)) if self.scores else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.scores)) if self.scores else math.nan


def format_number(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def format_cell(cell: Cell, expected: int, decimals: int, plus_minus: str = "±") -> str:
    if cell.n == 0:
        return f"– (0/{expected} seeds)"
    text = f"{format_number(cell.mean, decimals)}{plus_minus}{format_number(cell.std, decimals)}"
    if cell.n < expected:
        text += f" ({cell.n}/{expected} seeds)"
    return text


@dataclasses.dataclass
class Table:
    """One result table: a benchmark, a dataset quality, a preset and a variant."""

    benchmark: str
    quality: str
    preset: str
    variant: str
    columns: list[str]
    algos: list[str]
    cells: dict[tuple[str, str], Cell]
    expected_seeds: int
    random: dict[str, Cell] = dataclasses.field(default_factory=dict)  # column -> cell

    @property
    def name(self) -> str:
        name = f"{self.benchmark}_{self.quality}_{self.preset}"
        if self.variant:
            name += "__" + re.sub(r"[^A-Za-z0-9.=_-]+", "_", self.variant)
        return name

    @property
    def title(self) -> str:
        bench = {"metaworld": "Meta-World", "dmc": "DMC cross-dynamics",
                 "metaworld-robodesk": "Meta-World → RoboDesk"}.get(self.benchmark, self.benchmark)
        title = f"{bench}, offline {self.quality} target, preset {self.preset}"
        if self.variant:
            title += f", settings {self.variant}"
        return title

    def cell(self, algo: str, column: str) -> Cell:
        return self.cells[(algo, column)]

    def has_random(self) -> bool:
        return any(cell.n for cell in self.random.values())

    def _cells_of(self, algo: str) -> list[Cell]:
        if algo == RANDOM_ROW:
            return [self.random.get(c) or Cell(RANDOM_ROW, c, [], [], []) for c in self.columns]
        return [self.cell(algo, c) for c in self.columns]

    def average(self, algo: str) -> float | None:
        """Mean over columns of the cell means; None unless every column has a seed."""
        cells = self._cells_of(algo)
        if any(c.n == 0 for c in cells):
            return None
        return float(np.mean([c.mean for c in cells]))

    def average_text(self, algo: str, decimals: int) -> str:
        value = self.average(algo)
        if value is None:
            filled = sum(cell.n > 0 for cell in self._cells_of(algo))
            return f"– ({filled}/{len(self.columns)} pairs)"
        return format_number(value, decimals)

    def decimals(self) -> int:
        """Whole numbers as in the paper, unless the scores are small (smoke runs)."""
        means = [abs(c.mean) for c in self.cells.values() if c.n]
        return 0 if means and max(means) >= 100 else 1

    # Renderings --------------------------------------------------------------------

    def rows(self, plus_minus: str = "±") -> list[list[str]]:
        d = self.decimals()
        algos = [*self.algos, RANDOM_ROW] if self.has_random() else self.algos
        return [[RANDOM_NAME if a == RANDOM_ROW else display_name(a),
                 *[format_cell(cell, self.expected_seeds, d, plus_minus)
                   for cell in self._cells_of(a)],
                 self.average_text(a, d)] for a in algos]

    def to_csv(self) -> str:
        import csv
        import io

        out = io.StringIO()
        out.write(f"# {self.title}. Mean±std over seeds of the per-seed mean final return "
                  f"(expected seeds: {self.expected_seeds}).\n")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["model", *self.columns, "avg"])
        writer.writerows(self.rows())
        return out.getvalue()

    def to_long_csv(self) -> str:
        """One line per cell at full precision (what the paper layout is rounded from)."""
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["algo", "model", "column", "n_seeds", "expected_seeds", "mean", "std",
                         "seeds", "scores", "runs"])
        for a in [*self.algos, RANDOM_ROW] if self.has_random() else self.algos:
            for cell in self._cells_of(a):
                c = cell.column
                writer.writerow([a, RANDOM_NAME if a == RANDOM_ROW else display_name(a), c,
                                 cell.n, self.expected_seeds,
                                 repr(cell.mean), repr(cell.std),
                                 " ".join(map(str, cell.seeds)),
                                 " ".join(repr(s) for s in cell.scores),
                                 json.dumps([str(r.path) for r in cell.runs])])
        return out.getvalue()

    def to_markdown(self) -> str:
        header = ["Model", *[c.replace("->", "→") for c in self.columns], "Avg."]
        rule = "|" + "|".join(["---"] + [":---:"] * (len(header) - 1)) + "|"
        lines = [f"**{self.title}.** Mean ± std over seeds of the per-seed mean final return.",
                 "", "| " + " | ".join(header) + " |", rule]
        for row in self.rows(plus_minus=" ± "):
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", "**Normalised scores** (the evaluation protocol: 100 (R − R_random) / "
                  "(R_ref − R_random), `coworld-bench list protocol`). Mean ± std over seeds.",
                  "", "| " + " | ".join(header) + " |", rule]
        for row in self.normalised_rows(plus_minus=" ± "):
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines) + "\n"

    # Normalised scores ------------------------------------------------------------------

    def normalised_rows(self, plus_minus: str = "±") -> list[list[str]]:
        """The table's rows in normalised scores, then the references: R_random and
        R_ref per column (raw returns)."""
        algos = [*self.algos, RANDOM_ROW] if self.has_random() else self.algos
        rows = []
        for a in algos:
            cells = [normalised_cell(c) for c in self._cells_of(a)]
            texts = ["raw only" if c is None else format_cell(c, self.expected_seeds, 1,
                                                               plus_minus) for c in cells]
            means = [c.mean for c in cells if c is not None and c.n]
            complete = all(c is not None and c.n for c in cells)
            average = format_number(float(np.mean(means)), 1) if complete else "–"
            rows.append([RANDOM_NAME if a == RANDOM_ROW else display_name(a), *texts, average])
        for key, name in (("random", "R_random (protocol)"), ("reference", "R_ref (protocol)")):
            values = [task_references(_column_target(c)).get(key) for c in self.columns]
            rows.append([name, *["–" if v is None else format_number(v, 1) for v in values],
                         ""])
        return rows

    def to_normalised_csv(self) -> str:
        import csv
        import io

        out = io.StringIO()
        out.write(f"# {self.title}. Normalised scores, 100 (R - R_random) / (R_ref - R_random) "
                  "(coworld_bench/protocol.md): mean±std over seeds; the last rows are the "
                  "references in raw returns.\n")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["model", *self.columns, "avg"])
        writer.writerows(self.normalised_rows())
        return out.getvalue()

    def to_latex(self) -> str:
        def esc(text: str) -> str:
            return (text.replace("\\", r"\textbackslash{}").replace("&", r"\&")
                    .replace("%", r"\%").replace("_", r"\_").replace("#", r"\#"))

        def col(c: str) -> str:
            return esc(c).replace("->", r"$\rightarrow$")

        body = []
        for row in self.rows(plus_minus=r" $\pm$ "):
            cells = [esc(row[0])] + [r.replace("–", "--") for r in row[1:]]
            body.append(" & ".join(cells) + r" \\")
        spec = "l" + "c" * (len(self.columns) + 1)
        return "\n".join([
            r"\begin{table}[t]", r"\centering", r"\small",
            rf"\caption{{{esc(self.title)}. Mean $\pm$ std over seeds of the per-seed mean "
            r"final return.}",
            rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
            "Model & " + " & ".join(col(c) for c in self.columns) + r" & Avg. \\",
            r"\midrule", *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


def build_tables(records: list[RunRecord], seeds: int | None = None,
                 include_ablations: bool = False) -> list[Table]:
    """Groups runs by (benchmark, quality, preset, variant). Columns are the pairs seen
    in the group; an offline algorithm's run fills every column with its target (and
    a column of its own, the target code, when no pair has that target)."""
    groups: dict[tuple, list[RunRecord]] = {}
    for r in records:
        if is_ablation(r.algo) and not include_ablations:
            continue
        groups.setdefault((r.benchmark, r.quality, r.preset, r.variant), []).append(r)
    tables = []
    for (benchmark, quality, preset, variant), runs in sorted(groups.items()):
        pair_columns = {r.column for r in runs if r.source is not None}
        pair_targets = {r.target.id for r in runs if r.source is not None}
        target_only = {r.column for r in runs if r.source is None and r.target.id not in pair_targets}
        columns = column_order(pair_columns | target_only, benchmark)
        algos = sorted({r.algo for r in runs}, key=_row_key)
        cells = {(a, c): Cell(a, c, [], [], []) for a in algos for c in columns}
        for r in sorted(runs, key=lambda r: (r.seed, str(r.path))):
            if r.source is not None:
                targets = [r.column]
            else:
                targets = [c for c in columns if _column_target(c) == r.target.id]
            for c in targets:
                cell = cells[(r.algo, c)]
                cell.seeds.append(r.seed)
                cell.scores.append(r.score)
                cell.runs.append(r)
        expected = seeds or max(c.n for c in cells.values())
        tables.append(Table(benchmark, quality, preset, variant, columns, algos, cells, expected,
                            _random_cells(runs, columns)))
    return tables


def _random_cells(runs: list[RunRecord], columns: list[str]) -> dict[str, Cell]:
    """Per column, per seed: the mean of the random-action returns recorded by the
    group's runs of that seed on the column's target."""
    out = {}
    for c in columns:
        target = _column_target(c)
        by_seed: dict[int, list[RunRecord]] = {}
        for r in runs:
            if r.target.id == target and r.random_action is not None:
                by_seed.setdefault(r.seed, []).append(r)
        cell = Cell(RANDOM_ROW, c, [], [], [])
        for seed in sorted(by_seed):
            cell.seeds.append(seed)
            cell.scores.append(random_score(by_seed[seed]))
            cell.runs += by_seed[seed]
        out[c] = cell
    return out


def random_score(runs: list[RunRecord]) -> float:
    """One seed's random-action score: the mean over runs of their recorded mean."""
    return float(np.mean([np.mean(r.random_action["returns"]) for r in runs]))


def _column_target(column: str) -> str:
    return tasks_lib.resolve_task(column.split("->")[-1]).id
