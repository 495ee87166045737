"""``coworld-bench report RUNS_DIR``: every artefact of SPEC section 6 from a folder of
run directories, beside the paper's numbers.

Layout of the output folder::

    README.md            what was made, from which runs; runs left out and why
    reproduction.md      every measured cell beside the paper's value
    tables/<table>.{csv,md,tex}   paper layout (mean ± std over seeds, avg)
    tables/<table>_long.csv       the same cells at full precision, with seeds and runs
    tables/training_time.{csv,md} (paper table 12)
    aggregates/aggregates_<table>.{csv,png,pdf}, improvement_<table>.csv   (rliable)
    figures/transfer_matrix_*, value_estimation_*, ablations_*, sensitivity_*,
            curves_*, latents_*   (PNG + PDF + the CSV each is drawn from)

A table is one (benchmark, dataset quality, preset, settings) group: runs at other
scales or with other settings (``--set beta2=0.5``) never mix into the default
table.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from coworld_bench.errors import UserError
from coworld_bench.report import plots
from coworld_bench.report.aggregates import aggregate
from coworld_bench.report.figures import with_ext
from coworld_bench.report.paper import (find_paper_dir, multisource_selections,
                                        reproduction_markdown)
from coworld_bench.report.runs import Problem, RunRecord, load_runs
from coworld_bench.report.tables import build_tables, display_name

__all__ = ["build_report", "ReportError", "Report"]


class ReportError(UserError):
    """A report that cannot be made; the message says why."""


@dataclasses.dataclass
class Report:
    out: Path
    records: list[RunRecord]
    problems: list[Problem]
    files: list[Path]
    summary: list[str]


def build_report(runs_dir: str | Path, out: str | Path, seeds: int | None = None,
                 reps: int = 2000, embedding: str = "tsne", paper_dir: str | Path | None = None,
                 log=print) -> Report:
    runs_dir, out = Path(runs_dir), Path(out)
    if not runs_dir.is_dir():
        raise ReportError(f"{runs_dir} is not a directory of runs.")
    if embedding not in ("tsne", "pca"):
        raise ReportError(f"Unknown embedding {embedding!r}; use tsne or pca.")
    records, problems = load_runs(runs_dir)
    if not records:
        raise ReportError(f"No finished run under {runs_dir} (a run directory holds "
                          "config.json and an eval.jsonl ending in the final evaluation).")
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    summary: list[str] = []
    tables = build_tables(records, seeds)
    ablation_tables = {t.name: t for t in build_tables(records, seeds, include_ablations=True)}
    for table in tables:
        stem = out / "tables" / table.name
        files.append(plots.write_text(with_ext(stem, 'csv'), table.to_csv()))
        files.append(plots.write_text(with_ext(stem, 'md'), table.to_markdown()))
        files.append(plots.write_text(with_ext(stem, 'tex'), table.to_latex()))
        files.append(plots.write_text(out / "tables" / f"{table.name}_long.csv",
                                      table.to_long_csv()))
        agg = aggregate(table, reps=reps)
        if agg.matrices:
            files.append(plots.write_text(out / "aggregates" / f"aggregates_{table.name}.csv",
                                          agg.to_csv()))
            files += plots.aggregate_plots(agg, out)
            for algo in agg.matrices:
                low, high = agg.interval[algo]["IQM"]
                summary.append(f"{table.name}: {display_name(algo)} IQM "
                               f"{agg.point[algo]['IQM']:.3f} [{low:.3f}, {high:.3f}]")
        if agg.improvement:
            files.append(plots.write_text(out / "aggregates" / f"improvement_{table.name}.csv",
                                          agg.improvement_csv()))
        for algo, why in agg.left_out.items():
            summary.append(f"{table.name}: {display_name(algo)} not aggregated ({why})")
        files += plots.training_curves(table, out)
        with_ablations = ablation_tables.get(table.name)
        if with_ablations is not None and set(with_ablations.algos) != set(table.algos):
            files += plots.ablations(with_ablations, out)
            ablated = dataclasses.replace(
                with_ablations, algos=[a for a in with_ablations.algos
                                       if a == "coworld" or a not in table.algos])
            files += plots.training_curves(ablated, out, suffix="_ablations")
        paths, lines = plots.value_estimation(with_ablations or table, records, out)
        files += paths
        summary += lines
    for name, table in ablation_tables.items():  # groups of ablation runs only
        if name not in {t.name for t in tables}:
            files += plots.ablations(table, out)
    files += plots.transfer_matrix(records, out)
    files += plots.sensitivity(records, out)
    files += plots.latents(records, out, method=embedding)
    files += plots.training_time(tables, out)
    paper = find_paper_dir(paper_dir)
    files.append(plots.write_text(out / "reproduction.md", reproduction_markdown(
        records, paper, multisource_selections(records))))
    files.append(plots.write_text(out / "README.md", _readme(out, runs_dir, records, problems,
                                                             files, tables, summary)))
    for line in summary:
        log(line)
    return Report(out, records, problems, files, summary)


def _readme(out, runs_dir, records, problems, files, tables, summary) -> str:
    lines = ["# Report", "", f"Made by `coworld-bench report {runs_dir}` from {len(records)} "
             "finished runs.", "", "## Tables", ""]
    for table in tables:
        lines.append(f"- `tables/{table.name}` ({table.title}): {len(table.algos)} algorithms "
                     f"x {len(table.columns)} columns, {table.expected_seeds} seeds expected")
    lines += ["", "## Summary", ""] + [f"- {line}" for line in summary]
    lines += ["", "## Files", ""]
    for path in files:
        lines.append(f"- `{path.relative_to(out)}`")
    lines += ["", "## Runs left out", ""]
    if problems:
        lines += [f"- `{p.path}`: {p.reason}" for p in problems]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"
