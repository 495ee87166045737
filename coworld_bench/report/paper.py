"""The reproduction report: every measured cell beside the paper's number.

The paper's tables are the CSVs of ``results/paper/`` (cells ``mean±std``). A
measured cell matches a paper cell when the algorithm, the pair, the dataset quality
and the setting agree (e.g. Table 2 = Meta-World pairs, medium-replay targets, default
settings). The difference is given in units of the paper's std, and every line says
at which scale (preset, updates, data) it was measured: a smoke or quick run is not
expected to come near the paper's numbers.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np

from coworld_bench import tasks as tasks_lib
from coworld_bench.report.runs import RunRecord
from coworld_bench.rundir import WORK_DIR

__all__ = ["find_paper_dir", "reproduction_markdown", "PAPER_MODELS"]

# Paper model names -> (algorithm, settings that select its runs).
PAPER_MODELS = {
    "Offline DV2": ("offline-dv2", ""),
    "DrQ+BC": ("drq-bc", ""),
    "CQL": ("cql", ""),
    "CURL": ("curl", ""),
    "LOMPO": ("lompo", ""),
    "DV2 Finetune": ("dv2-finetune", ""),
    "DV2 Finetune + EWC": ("dv2-finetune-ewc", ""),
    "DV2 Finetune+EWC": ("dv2-finetune-ewc", ""),
    "LOMPO Finetune": ("lompo-finetune", ""),
    "CoWorld (best-source)": ("coworld", ""),
    "CoWorld": ("coworld", ""),
    "CoWorld (multi-source)": ("coworld-multisource", ""),
    "Multi-Task DV2": ("multitask-dv2", ""),
}
# RoboDesk-similarity settings -> the run settings that reproduce them.
ROBODESK_SETTINGS = {"lowdim_source": "source_obs=state", "sparse_source": "source_sparse_reward=true",
                     "multitask": ""}
TABLES = (("table2_metaworld_medium_replay.csv", "Table 2: Meta-World, medium-replay", "metaworld",
           "medium-replay"),
          ("table3_dmc_medium_replay.csv", "Table 3: DMC cross-dynamics, medium-replay", "dmc",
           "medium-replay"),
          ("table4_dmc_medium_expert.csv", "Appendix: DMC cross-dynamics, medium-expert", "dmc",
           "medium-expert"))
NOT_COMPARED = {
    "table_r3m.csv": "R3M is not an algorithm of this library; its CoWorld and DV2 Finetune "
                     "columns repeat Table 2.",
    "table_sim2real_noise.csv": "the noise magnitudes are not legible in the paper, so runs "
                                "cannot be matched to its rows.",
}


def find_paper_dir(explicit: str | Path | None = None) -> Path | None:
    candidates = [Path(explicit)] if explicit else [
        Path.cwd() / "results" / "paper", Path(__file__).resolve().parents[2] / "results" / "paper"]
    for path in candidates:
        if (path / "table2_metaworld_medium_replay.csv").exists():
            return path
    return None


def read_paper_csv(path: Path) -> list[dict[str, str]]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return list(csv.DictReader(lines))


def parse_cell(text: str) -> tuple[float, float | None] | None:
    match = re.fullmatch(r"\s*(-?[\d.]+)\s*(?:±\s*([\d.]+))?\s*", text or "")
    if not match:
        return None
    return float(match.group(1)), (float(match.group(2)) if match.group(2) else None)


def paper_pair(column: str) -> tuple[str, str]:
    """``BP->DC*`` or ``MW:Button Press -> RD:Push Button`` -> (source id, target id)."""
    source, target = [s.strip() for s in column.split("->")]
    return _task(source).id, _task(target).id


def _task(text: str):
    if ":" in text:
        suite, name = text.split(":", 1)
        suite = {"MW": "metaworld", "RD": "robodesk", "DMC": "dmc"}[suite.strip()]
        for t in tasks_lib.TASKS:
            if t.suite == suite and t.paper_name.lower() == name.strip().lower():
                return t
        raise KeyError(text)
    return tasks_lib.resolve_task(text)


@dataclasses.dataclass
class Line:
    model: str
    column: str
    paper_mean: float
    paper_std: float | None
    measured: list[RunRecord]

    def row(self) -> str:
        scores = [r.score for r in self.measured]
        mean, std = float(np.mean(scores)), float(np.std(scores))
        if self.paper_std:
            delta = f"{(mean - self.paper_mean) / self.paper_std:+.1f}σ"
        else:
            delta = "n/a (no paper std)" if self.paper_std is None else "n/a (paper std 0)"
        paper = f"{self.paper_mean:g}" + (f" ± {self.paper_std:g}" if self.paper_std is not None
                                           else "")
        scale = self.measured[0].scale
        return (f"| {self.model} | {self.column.replace('->', '→')} | {paper} | "
                f"{mean:.1f} ± {std:.1f} | {delta} | {len(scores)} | {scale} |")


HEADER = ["| Model | Pair | Paper | Measured | Δ (paper std) | Seeds | Scale |",
          "|---|---|---:|---:|---:|---:|---|"]


def _runs_for(records, algo, variant, quality, source_id, target_id):
    """Runs of ``algo`` for the pair, grouped by preset (an offline algorithm's run
    on the target serves the pair)."""
    by_preset: dict[str, list[RunRecord]] = {}
    for r in records:
        if r.algo != algo or r.quality != quality or r.target.id != target_id:
            continue
        if r.source is not None and r.source.id != source_id:
            continue
        wanted = variant if r.source is not None else ""
        if r.variant != wanted:
            continue
        by_preset.setdefault(r.preset, []).append(r)
    return by_preset


def _compare(records, rows, columns, model_of, quality, lines, missing):
    for row in rows:
        model = model_of(row)
        if model is None:
            continue
        name, (algo, variant) = model
        for column in columns:
            cell = parse_cell(row.get(column, ""))
            if cell is None:
                continue
            source_id, target_id = paper_pair(column)
            found = _runs_for(records, algo, variant, quality, source_id, target_id)
            if not found:
                missing.append((name, algo, column.replace("->", "→")))
            for preset, runs in sorted(found.items()):
                runs = sorted(runs, key=lambda r: r.seed)
                lines.append(Line(name, column, cell[0], cell[1], runs))


def reproduction_markdown(records: list[RunRecord], paper_dir: Path | None,
                          selections: dict[str, dict[str, int]] | None = None) -> str:
    out = ["# Reproduction report", "",
           "Every cell measured here beside the paper's number. Measured = mean ± std over "
           "seeds of the per-seed mean final return; Δ = (measured − paper mean) / paper std. "
           "The scale column says how each cell was measured: only the `paper` preset on the "
           "paper's datasets is comparable in earnest; smoke and quick runs check the "
           "pipeline, not the numbers.", ""]
    if paper_dir is None:
        out.append("The paper's tables were not found (results/paper/; pass --paper DIR), so "
                   "nothing is compared.")
        return "\n".join(out) + "\n"
    total_measured = 0
    for filename, title, benchmark, quality in TABLES:
        path = paper_dir / filename
        if not path.exists():
            continue
        rows = read_paper_csv(path)
        columns = [c for c in rows[0] if "->" in c]
        lines, missing = [], []
        _compare(records, rows, columns,
                 lambda row: (row["model"], PAPER_MODELS[row["model"]])
                 if row["model"] in PAPER_MODELS else None, quality, lines, missing)
        out += _section(title, filename, lines, missing)
        total_measured += len(lines)
    path = paper_dir / "tables_robodesk_domain_similarity.csv"
    if path.exists():
        rows = read_paper_csv(path)
        columns = [c for c in rows[0] if "->" in c]
        lines, missing = [], []

        def model_of(row):
            algo, _ = PAPER_MODELS.get(row["model"], (None, None))
            if algo is None:
                return None
            return (f"{row['model']} [{row['setting']}]",
                    (algo, ROBODESK_SETTINGS.get(row["setting"], "")))

        _compare(records, rows, columns, model_of, "medium-replay", lines, missing)
        out += _section("Meta-World → RoboDesk with dissimilar sources", path.name, lines, missing)
        total_measured += len(lines)
    path = paper_dir / "table_multisource_selection.csv"
    if path.exists() and selections:
        out += ["## Source selected by multi-source CoWorld (table_multisource_selection.csv)", "",
                "| Target | Paper's choice | Most selected here | Share of target steps | Agrees |",
                "|---|---|---|---:|---|"]
        for row in read_paper_csv(path):
            target, chosen = _task(row["target"]), _task(row["selected_source"])
            counts = selections.get(target.id)
            if not counts:
                continue
            top = max(counts, key=counts.get)
            share = counts[top] / sum(counts.values())
            out.append(f"| {row['target']} | {row['selected_source']} | "
                       f"{tasks_lib.resolve_task(top).paper_name} | {share:.0%} | "
                       f"{'yes' if top == chosen.id else 'no'} |")
        out.append("")
    path = paper_dir / "table_training_efficiency.csv"
    if path.exists():
        hp_bt = [r for r in records if r.target.code == "BT" and r.variant == ""
                 and (r.source is None or r.source.code == "HP")]
        out += ["## Training efficiency, HP→BT (table_training_efficiency.csv)", "",
                "The paper's times are on one RTX 3090; the device of each run is given.", "",
                "| Model | Paper updates | Updates here | Paper training (min) | Here (min) | "
                "Paper inference (s/episode) | Here (s/episode) | Device | Scale |",
                "|---|---:|---:|---:|---:|---:|---:|---|---|"]
        measured_any = False
        for row in read_paper_csv(path):
            algo = PAPER_MODELS.get(row["model"], (None,))[0]
            runs = [r for r in hp_bt if r.algo == algo]
            if not runs:
                continue
            measured_any = True
            minutes = [r.wall_time_s / 60 for r in runs if r.wall_time_s is not None]
            infer = [r.eval_seconds_per_episode for r in runs if r.eval_seconds_per_episode]
            out.append(f"| {row['model']} | {int(row['iterations']):,} | {runs[0].steps:,} | "
                       f"{row['training_min']} | "
                       f"{np.mean(minutes):.1f} | {row['inference_s_per_episode']} | "
                       f"{np.mean(infer):.2f} | {runs[0].device} | {runs[0].scale} |"
                       if minutes and infer else
                       f"| {row['model']} | {row['iterations']} | {runs[0].steps:,} | "
                       f"{row['training_min']} | – | {row['inference_s_per_episode']} | – | "
                       f"{runs[0].device} | {runs[0].scale} |")
        if not measured_any:
            out.append("| (no HP→BT runs found) | | | | | | | | |")
        elif any(r.algo == "lompo" for r in hp_bt):
            out += ["", "LOMPO's paper updates are its agent updates; its runs here also count "
                    "the world-model updates before them (25,000 at the paper preset: "
                    "125,000 in all)."]
        out.append("")
    for name, why in NOT_COMPARED.items():
        if (paper_dir / name).exists():
            out.append(f"- `{name}` is not compared: {why}")
    out += ["", f"{total_measured} measured cells in all."]
    return "\n".join(out) + "\n"


def _section(title, filename, lines, missing) -> list[str]:
    out = [f"## {title} ({filename})", ""]
    if lines:
        out += HEADER + [line.row() for line in lines]
    else:
        out.append("No run matches a cell of this table.")
    if missing:
        from coworld_bench import registry

        known = set(registry.names())
        out += ["", f"Paper cells without runs here ({len(missing)}):", ""]
        models: dict[tuple[str, str], list[str]] = {}
        for name, algo, column in missing:
            models.setdefault((name, algo), []).append(column)
        for (name, algo), columns in models.items():
            why = "not run" if algo in known else f"no algorithm `{algo}` is registered"
            out.append(f"- {name}: {', '.join(columns)} ({why})")
    return out + [""]


def multisource_selections(records: list[RunRecord]) -> dict[str, dict[str, int]]:
    """Target id -> {source id: target steps it was selected}, over every multi-source
    run's ``work/source_selection.csv``."""
    counts: dict[str, dict[str, int]] = {}
    for r in records:
        if r.algo != "coworld-multisource":
            continue
        path = r.path / WORK_DIR / "source_selection.csv"
        if not path.exists():
            continue
        with open(path) as f:
            for row in csv.DictReader(f):
                source = row.get("selected")
                if source:
                    target = counts.setdefault(r.target.id, {})
                    target[source] = target.get(source, 0) + 1
    return counts
