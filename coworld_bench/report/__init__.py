"""``coworld-bench report RUNS_DIR``: every artefact of SPEC section 6 from a folder of
run directories, beside the paper's numbers.

Layout of the output folder::

    README.md            what was made, from which runs; runs left out and why; checks
    reproduction.md      every measured cell beside the paper's value
    claims.md            the paper's qualitative claims, each holding or not here
    runs/                (``--copy-runs``) the runs' small files, so the report can be
                         checked and remade without the run folders (latent figures
                         need the originals)
    tables/<table>.{csv,md,tex}   paper layout (mean ± std over seeds, avg)
    tables/<table>_long.csv       the same cells at full precision, with seeds and runs
    tables/<table>_normalised.csv the protocol's normalised scores (also in the .md)
    tables/training_time.{csv,md} (paper table 12)
    aggregates/aggregates_<table>.{csv,png,pdf}, improvement_<table>.csv   (rliable)
    figures/transfer_matrix_*, value_estimation_*, ablations_*, sensitivity_*,
            curves_*, latents_*   (PNG + PDF + the CSV each is drawn from)

A table is one (benchmark, dataset quality, preset, settings) group: runs at other
scales or with other settings (``--set beta2=0.5``) never mix into the default
table.

Every number of the tables and value-estimation files is then recomputed from the run
directories (``report.checks``); a difference stops the report with an error.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np

from coworld_bench.errors import UserError
from coworld_bench.report import plots
from coworld_bench.report.aggregates import aggregate
from coworld_bench.report.checks import check_report
from coworld_bench.report.claims import claims_markdown
from coworld_bench.report.figures import with_ext
from coworld_bench.report.paper import (find_paper_dir, multisource_selections,
                                        reproduction_markdown)
from coworld_bench.report.runs import Problem, RunRecord, load_runs
from coworld_bench.report.tables import build_tables, display_name
from coworld_bench.rundir import CONFIG_FILE, EVAL_FILE, METRICS_FILE, RESULT_FILE, VALUE_TRACE_FILE

__all__ = ["build_report", "ReportError", "Report", "check_report", "copy_runs"]

# What --copy-runs keeps of each run: what the tables, curves and value figures read; no
# checkpoints, replays, TensorBoard files or latent embeddings (2 MB a CoWorld run: the
# latent figures are made only from the original run folders).
RUN_FILES = (CONFIG_FILE, EVAL_FILE, RESULT_FILE, METRICS_FILE, VALUE_TRACE_FILE)


class ReportError(UserError):
    """A report that cannot be made; the message says why."""


@dataclasses.dataclass
class Report:
    out: Path
    records: list[RunRecord]
    problems: list[Problem]
    files: list[Path]
    summary: list[str]
    checked: int = 0


def copy_runs(runs_dir: Path, dest: Path) -> int:
    """Copies the files the report reads of every finished run under ``runs_dir``
    (``RUN_FILES``) to the same relative place under ``dest``, replacing what ``dest``
    held. A copy is a finished run to the runner too: a sweep pointed at a folder of
    copies runs only what is missing."""
    from coworld_bench.report.runs import find_runs

    if dest.exists():
        shutil.rmtree(dest)
    count = 0
    for run in find_runs(runs_dir):
        if not (run / RESULT_FILE).exists():
            continue  # unfinished: nothing to report, and a copy could not resume
        for name in RUN_FILES:
            if (run / name).exists():
                target = dest / run.relative_to(runs_dir) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run / name, target)
        count += 1
    return count


def build_report(runs_dir: str | Path, out: str | Path, seeds: int | None = None,
                 reps: int = 2000, embedding: str = "tsne", paper_dir: str | Path | None = None,
                 log=print, copy: bool = False) -> Report:
    """Writes the report into ``out``, whole or not at all: a report that fails (a bad
    run, a check that differs, Ctrl-C) leaves ``out`` as it was before, a previous report
    included; it is kept aside (``.NAME.before-report``, hard links: every report file
    is replaced by rename, never rewritten in place) while the new one is made."""
    out = Path(out)
    kept = out.parent / f".{out.name}.before-report"
    if kept.exists():  # a report killed before it could put the previous one back
        if out.exists():
            shutil.rmtree(out)
        os.replace(kept, out)
    if out.exists():
        shutil.copytree(out, kept, symlinks=True, copy_function=_link_or_copy)
    try:
        report = _build_report(Path(runs_dir), out, seeds, reps, embedding, paper_dir, log, copy)
    except BaseException:
        if out.exists():
            shutil.rmtree(out)
        if kept.exists():
            os.replace(kept, out)
        raise
    if kept.exists():
        shutil.rmtree(kept)
    return report


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _build_report(runs_dir: Path, out: Path, seeds, reps, embedding, paper_dir, log,
                  copy) -> Report:
    if not runs_dir.is_dir():
        raise ReportError(f"{runs_dir} is not a directory of runs.")
    if copy:
        if (out / "runs").resolve() == runs_dir.resolve():
            raise ReportError(f"{runs_dir} is already the report's copy of the runs; report "
                              "it without --copy-runs.")
        copied = copy_runs(runs_dir, out / "runs")
        log(f"Copied the report's files of {copied} runs to {out / 'runs'}.")
        runs_dir = out / "runs"
    if embedding not in ("tsne", "pca"):
        raise ReportError(f"Unknown embedding {embedding!r}; use tsne or pca.")
    records, problems = load_runs(runs_dir)
    if not records:
        why = "".join(f"\n  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ReportError(f"No finished run under {runs_dir} (a run directory holds "
                          "config.json and an eval.jsonl ending in the final evaluation)"
                          + (f"; every run found was left out:{why}{more}" if problems else "."))
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
        files.append(plots.write_text(out / "tables" / f"{table.name}_normalised.csv",
                                      table.to_normalised_csv()))
        agg = aggregate(table, reps=reps)
        if agg.matrices:
            files.append(plots.write_text(out / "aggregates" / f"aggregates_{table.name}.csv",
                                          agg.to_csv()))
            files += plots.aggregate_plots(agg, out)
            for algo in agg.matrices:
                low, high = agg.interval[algo]["IQM"]
                summary.append(f"{table.name}: {display_name(algo)} IQM "
                               f"{agg.point[algo]['IQM']:.3f} [{low:.3f}, {high:.3f}] "
                               f"({agg.scale})")
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
    claim_tables = [ablation_tables.get(t.name, t) for t in tables]
    files.append(plots.write_text(out / "claims.md", claims_markdown(claim_tables, records)))
    checked, mismatches = check_report(out)
    if mismatches:
        raise ReportError(f"The report's numbers differ from the run directories in "
                          f"{len(mismatches)} places (first: {'; '.join(mismatches[:5])}).")
    summary.append(f"checks: {checked} numbers of the tables and value-estimation files "
                   "recomputed from the run directories: all equal")
    files.append(plots.write_text(out / "README.md", _readme(out, runs_dir, records, problems,
                                                             files, tables, summary)))
    for line in summary:
        log(line)
    return Report(out, records, problems, files, summary, checked)


def _readme(out, runs_dir, records, problems, files, tables, summary) -> str:
    lines = ["# Report", "", f"Made by `coworld-bench report {runs_dir}` from {len(records)} "
             "finished runs.", ""]
    walls = [r.wall_time_s for r in records if r.wall_time_s is not None]
    if walls:
        devices = ", ".join(sorted({r.device for r in records}))
        lines += [f"Training and evaluation wall time of the runs (result.json): "
                  f"{sum(walls) / 3600:.2f} h in all over {len(walls)} runs, "
                  f"{np.mean(walls) / 60:.1f} min per run on average, on {devices} (runs that "
                  "shared a machine ran slower than alone).", ""]
    lines += ["## Tables", ""]
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
