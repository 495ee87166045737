"""The artefacts of SPEC section 6 other than the tables: transfer matrix (fig. 3),
value overestimation (fig. 5b), ablations (fig. 5a), sensitivity (fig. 6), training
curves (fig. 10), latent embeddings (fig. 11), training time (table 12) and the
aggregate plots. Each function writes its files under ``out`` and returns the paths.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from coworld_bench import tasks as tasks_lib
from coworld_bench.data.format import atomic_write_bytes
from coworld_bench.report.aggregates import Aggregates
from coworld_bench.report.figures import (GRAYS, HATCHES, MARKERS, line_style, panel_grid, save, style,
                                          text_color, with_ext)
from coworld_bench.report.runs import RunRecord
from coworld_bench.report.tables import ABLATIONS, Table, display_name
from coworld_bench.rundir import WORK_DIR

BENCH_NAMES = {"metaworld": "Meta-World", "dmc": "DMC", "metaworld-robodesk": "MW → RoboDesk"}


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    atomic_write_bytes(path, lambda f: f.write(data))
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, out.getvalue())


def task_label(task) -> str:
    return f"{task.paper_name} ({task.code})"


def _group_label(benchmark: str, quality: str, preset: str) -> str:
    return f"{BENCH_NAMES.get(benchmark, benchmark)}, {quality} data, preset {preset}"


def ratio_text(value: float) -> str:
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.2g}"


def _scores(runs: list[RunRecord]) -> tuple[float, int]:
    return float(np.mean([r.score for r in runs])), len(runs)


# Transfer matrix (fig. 3 left) -------------------------------------------------------

def transfer_matrix(records: list[RunRecord], out: Path) -> list[Path]:
    """CoWorld return / Offline DV2 return for every ordered Meta-World pair, with the
    multi-source row; one matrix per (dataset quality, preset)."""
    plt = style()
    from matplotlib.patches import Rectangle

    paths = []
    mw = [t for t in tasks_lib.TASKS if t.suite == "metaworld"]
    keyed: dict[tuple, dict] = {}
    for r in records:
        if r.variant or r.target.suite != "metaworld":
            continue
        if r.algo == "coworld" and r.source is not None and r.source.suite == "metaworld":
            key = ("coworld", r.source.id, r.target.id)
        elif r.algo == "coworld-multisource":
            key = ("multi", None, r.target.id)
        elif r.algo == "offline-dv2":
            key = ("dv2", None, r.target.id)
        else:
            continue
        keyed.setdefault((r.quality, r.preset), {}).setdefault(key, []).append(r)
    for (quality, preset), runs in sorted(keyed.items()):
        if not any(k[0] in ("coworld", "multi") for k in runs):
            continue
        rows_tasks = mw + [None]  # None: the multi-source row
        ratio = np.full((len(rows_tasks), len(mw)), np.nan)
        unmatched: set[tuple[int, int]] = set()  # CoWorld runs, nothing to divide by
        csv_rows = []
        for j, target in enumerate(mw):
            dv2 = runs.get(("dv2", None, target.id), [])
            for i, source in enumerate(rows_tasks):
                if source is not None and source.id == target.id:
                    continue
                key = ("multi", None, target.id) if source is None else \
                    ("coworld", source.id, target.id)
                ours = runs.get(key, [])
                if not ours:
                    continue
                ours_mean, ours_n = _scores(ours)
                dv2_mean, dv2_n = _scores(dv2) if dv2 else (np.nan, 0)
                value = ours_mean / dv2_mean if dv2 and dv2_mean > 0 else np.nan
                ratio[i, j] = value
                if not np.isfinite(value):
                    unmatched.add((i, j))
                csv_rows.append(["multi-source" if source is None else source.code, target.code,
                                 ours_mean, ours_n, dv2_mean, dv2_n, value])
        if np.isnan(ratio).all():
            continue
        best = {}
        for j in range(len(mw)):
            column = ratio[: len(mw), j]
            if np.isfinite(column).any():
                best[j] = int(np.nanargmax(column))
        for row in csv_rows:
            j = [t.code for t in mw].index(row[1])
            row.append(row[0] != "multi-source" and best.get(j) is not None
                       and mw[best[j]].code == row[0])
        finite = ratio[np.isfinite(ratio)]
        # The range always holds 1 (parity with Offline DV2), so a colour reads alike
        # across reports.
        vmin, vmax = min(float(finite.min()), 1.0), max(float(finite.max()), 1.0)
        if vmax - vmin < 1e-9:
            vmin, vmax = vmin - 0.5, vmax + 0.5
        fig, ax = plt.subplots(figsize=(8.2, 6.6))
        cmap = plt.get_cmap("cividis").copy()
        cmap.set_bad("white")
        image = ax.imshow(np.ma.masked_invalid(ratio), cmap=cmap, vmin=vmin, vmax=vmax,
                          aspect="auto")
        ax.grid(False)
        for i, source in enumerate(rows_tasks):
            for j, target in enumerate(mw):
                if source is not None and source.id == target.id:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.88",
                                           hatch="///", edgecolor="0.6", lw=0))
                    ax.text(j, i, "—", ha="center", va="center", fontsize=10, color="0.3")
                elif np.isfinite(ratio[i, j]):
                    ax.text(j, i, ratio_text(ratio[i, j]), ha="center", va="center", fontsize=10,
                            color=text_color(ratio[i, j], vmin, vmax),
                            fontweight="bold" if best.get(j) == i else "normal")
                elif (i, j) in unmatched:
                    ax.text(j, i, "no Offline\nDV2 run", ha="center", va="center", fontsize=7,
                            color="0.35")
                else:
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="0.45")
        for j, i in best.items():
            ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False,
                                   edgecolor="black", lw=2.6))
            ax.add_patch(Rectangle((j - 0.38, i - 0.38), 0.76, 0.76, fill=False,
                                   edgecolor="white", lw=1.0, linestyle="--"))
        ax.axhline(len(mw) - 0.5, color="black", lw=1.5)
        ax.set_xticks(range(len(mw)), [task_label(t) for t in mw], rotation=30, ha="right")
        ax.set_yticks(range(len(rows_tasks)),
                      [task_label(t) for t in mw] + ["Multi-source CoWorld"])
        ax.set_xlabel("Target domain (offline dataset)")
        ax.set_ylabel("Source domain (online simulator)")
        ax.set_title("Transfer matrix: CoWorld return / Offline DV2 return\n"
                     f"({_group_label('metaworld', quality, preset)}; outlined: best source "
                     "per target; n/a: not run)", fontsize=10)
        bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
        bar.set_label("Return ratio (> 1: positive transfer)")
        stem = out / "figures" / f"transfer_matrix_{quality}_{preset}"
        paths += save(fig, stem)
        paths.append(write_csv(with_ext(stem, 'csv'),
                               ["source", "target", "coworld_mean", "coworld_seeds",
                                "offline_dv2_mean", "offline_dv2_seeds", "ratio",
                                "best_source"], csv_rows))
    return paths


# Value overestimation (fig. 5b) ------------------------------------------------------

def value_estimation(table: Table, records: list[RunRecord], out: Path
                     ) -> tuple[list[Path], list[str]]:
    """Predicted value vs the true discounted return along the final evaluation
    episodes, for every algorithm with a critic; returns the paths and summary lines."""
    plt = style()
    runs_by_algo: dict[str, list[tuple[RunRecord, dict]]] = {}
    for r in records:
        if (r.benchmark, r.quality, r.preset, r.variant) != \
                (table.benchmark, table.quality, table.preset, table.variant):
            continue
        trace = r.value_trace()
        if trace is None or not np.isfinite(trace["value"]).all():
            continue
        runs_by_algo.setdefault(r.algo, []).append((r, trace))
    if not runs_by_algo:
        return [], []
    algos = sorted(runs_by_algo, key=lambda a: (table.algos.index(a) if a in table.algos
                                                 else 100, a))
    rows, lines = [], []
    fig, axes = panel_grid(plt, len(algos), 3, size=(3.8, 3.0))
    for ax, algo in zip(axes, algos):
        items = runs_by_algo[algo]
        per_run = [float((t["value"] - t["discounted_return"]).mean()) for _, t in items]
        error = float(np.mean(per_run))
        length = min(t["value"].shape[1] for _, t in items)
        value = np.concatenate([t["value"][:, :length] for _, t in items])
        true = np.concatenate([t["discounted_return"][:, :length] for _, t in items])
        steps = np.arange(1, length + 1)
        ax.plot(steps, np.cumsum(value.mean(0)), color="0.1", lw=1.8, label="Predicted value")
        ax.plot(steps, np.cumsum(true.mean(0)), color="0.5", lw=1.8, linestyle="--",
                label="True value")
        word = "overestimates" if error > 0 else "underestimates"
        ax.set_title(f"{display_name(algo)}\nmean V − G = {error:+.1f} ({word})", fontsize=10)
        ax.set_xlabel("Environment step")
        ax.set_ylabel("Cumulative value")
        ax.legend(loc="best")
        for (r, t), e in zip(items, per_run):
            rows.append([algo, r.column, r.seed, float(t["value"].mean()),
                         float(t["discounted_return"].mean()), e, str(r.path)])
        lines.append(f"{table.name}: {display_name(algo)} mean value − true return = {error:+.3f} "
                     f"({word}; {len(items)} runs)")
    fig.suptitle(f"Value estimation along evaluation episodes\n({table.title})", fontsize=11)
    fig.tight_layout()
    stem = out / "figures" / f"value_estimation_{table.name}"
    paths = save(fig, stem)
    paths.append(write_csv(with_ext(stem, 'csv'),
                           ["algo", "column", "seed", "mean_value", "mean_true_return",
                            "mean_error", "run"], rows))
    return paths, lines


# Ablations (fig. 5a) -----------------------------------------------------------------

def ablations(table: Table, out: Path) -> list[Path]:
    """CoWorld beside its ablations, per pair (``table`` built with the ablations)."""
    plt = style()
    present = [a for a in ("coworld", *ABLATIONS) if a in table.algos]
    if "coworld" not in present or len(present) < 2:
        return []
    columns = [c for c in table.columns if table.cell("coworld", c).n
               and any(table.cell(a, c).n for a in present[1:])]
    if not columns:
        return []
    fig, ax = plt.subplots(figsize=(max(5.0, 1.9 * len(columns) + 2.5), 3.8))
    width = 0.8 / len(present)
    rows = []
    for k, algo in enumerate(present):
        means = [table.cell(algo, c).mean if table.cell(algo, c).n else 0 for c in columns]
        stds = [table.cell(algo, c).std if table.cell(algo, c).n else 0 for c in columns]
        x = np.arange(len(columns)) + (k - (len(present) - 1) / 2) * width
        ax.bar(x, means, width, yerr=stds, capsize=3, color=GRAYS[k % len(GRAYS)],
               hatch=HATCHES[k % len(HATCHES)], edgecolor="black", lw=0.6,
               label=display_name(algo))
        for c, mean, std in zip(columns, means, stds):
            rows.append([algo, c, table.cell(algo, c).n, mean, std])
    ax.set_xticks(range(len(columns)), [c.replace("->", "→") for c in columns])
    ax.set_ylabel("Episode return")
    ax.set_xlabel("Source → target")
    ax.set_title(f"Ablation study\n({table.title})", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    stem = out / "figures" / f"ablations_{table.name}"
    paths = save(fig, stem)
    paths.append(write_csv(with_ext(stem, 'csv'), ["algo", "column", "n_seeds", "mean", "std"],
                           rows))
    return paths


# Sensitivity (fig. 6) ----------------------------------------------------------------

SENSITIVITY = (("beta2", "β₂ (domain KL scale)"), ("k", "k (target-informed reward factor)"),
               ("alpha", "α (value constraint)"))


def sensitivity(records: list[RunRecord], out: Path) -> list[Path]:
    """Return against beta2, k and alpha from CoWorld runs that differ from the
    default in that one setting only (``--set beta2=...`` in its own ``--out``)."""
    plt = style()
    groups: dict[tuple, dict] = {}
    for r in records:
        if r.algo != "coworld":
            continue
        keys = set(r.variant.split(",")) - {""}
        changed = {k.split("=")[0] for k in keys}
        for name, _ in SENSITIVITY:
            if changed <= {name} and name in r.config:
                groups.setdefault((r.benchmark, r.quality, r.preset), {}) \
                    .setdefault((name, r.column, float(r.config[name])), []).append(r.score)
    paths = []
    for (benchmark, quality, preset), points in sorted(groups.items()):
        counts = {name: len({x for (n, _, x) in points if n == name}) for name, _ in SENSITIVITY}
        if max(counts.values()) < 2:
            continue
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
        rows = []
        for ax, (name, label) in zip(axes, SENSITIVITY):
            columns = sorted({c for (n, c, _) in points if n == name})
            for i, column in enumerate(columns):
                xs = sorted({x for (n, c, x) in points if n == name and c == column})
                means = [np.mean(points[(name, column, x)]) for x in xs]
                stds = [np.std(points[(name, column, x)]) for x in xs]
                ax.errorbar(xs, means, yerr=stds, capsize=3, label=column.replace("->", "→"),
                            **line_style(i))
                for x, m, s in zip(xs, means, stds):
                    rows.append([name, column, x, len(points[(name, column, x)]), m, s])
            if counts[name] < 2:
                ax.text(0.5, 0.06, f"one value only (add runs with --set {name}=...)",
                        ha="center", va="bottom", transform=ax.transAxes, fontsize=8,
                        bbox=dict(facecolor="white", edgecolor="0.7", boxstyle="round"))
            ax.set_xlabel(label)
            ax.set_ylabel("Episode return")
            if columns:
                ax.legend(fontsize=8)
        fig.suptitle(f"Hyperparameter sensitivity of CoWorld ({_group_label(benchmark, quality, preset)})",
                     fontsize=11)
        fig.tight_layout()
        stem = out / "figures" / f"sensitivity_{benchmark}_{quality}_{preset}"
        paths += save(fig, stem)
        paths.append(write_csv(with_ext(stem, 'csv'),
                               ["setting", "column", "value", "n_seeds", "mean", "std"], rows))
    return paths


# Training curves (fig. 10) -----------------------------------------------------------

def training_curves(table: Table, out: Path, suffix: str = "") -> list[Path]:
    """Evaluation return against updates, mean over seeds with a ±std band."""
    plt = style()
    columns = table.columns[:12]
    fig, axes = panel_grid(plt, len(columns), 3, size=(3.9, 3.0))
    rows = []
    for ax, column in zip(axes, columns):
        for i, algo in enumerate(table.algos):
            cell = table.cell(algo, column)
            if not cell.n:
                continue
            curves = [{int(e["step"]): float(np.mean(e["returns"])) for e in r.evals}
                      for r in cell.runs]
            steps = sorted(set.intersection(*[set(c) for c in curves]))
            if not steps:
                continue
            values = np.array([[c[s] for s in steps] for c in curves])
            mean, std = values.mean(0), values.std(0)
            seeds = f"{cell.n} seed{'s' if cell.n > 1 else ''}"
            ax.plot(steps, mean, label=f"{display_name(algo)} ({seeds})", lw=1.6,
                    markersize=4, **line_style(i))
            ax.fill_between(steps, mean - std, mean + std, color=GRAYS[i % len(GRAYS)],
                            alpha=0.15, lw=0)
            rows += [[algo, column, s, cell.n, m, d] for s, m, d in zip(steps, mean, std)]
        ax.set_title(column.replace("->", "→"))
        ax.set_xlabel("Training updates")
        ax.set_ylabel("Episode return")
        ax.legend(fontsize=7)
    fig.suptitle(f"Training curves{suffix and ' (ablations)'}: mean ± std over seeds\n"
                 f"({table.title})", fontsize=11)
    fig.tight_layout()
    stem = out / "figures" / f"curves{suffix}_{table.name}"
    paths = save(fig, stem)
    paths.append(write_csv(with_ext(stem, 'csv'),
                           ["algo", "column", "step", "n_seeds", "mean", "std"], rows))
    return paths


# Latent embeddings (fig. 11) ---------------------------------------------------------

def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def embedding_kl(source: np.ndarray, target: np.ndarray) -> float:
    """Mean over frames of KL(softmax(source) || softmax(target)): (A)'s quantity."""
    p, q = _softmax(source.astype(np.float64)), _softmax(target.astype(np.float64))
    return float((p * (np.log(p + 1e-12) - np.log(q + 1e-12))).sum(-1).mean())


def project(points: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(points)
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                max_iter=500).fit_transform(points)


def latents(records: list[RunRecord], out: Path, method: str = "tsne") -> list[Path]:
    """Source vs target encoder embeddings of the same target frames, before and after
    alignment (and, when present, at the end of a run without state alignment)."""
    plt = style()
    chosen: dict[tuple, dict[str, RunRecord]] = {}
    for r in sorted(records, key=lambda r: (r.seed, str(r.path))):
        if r.variant or r.algo not in ("coworld", "coworld-no-state-align"):
            continue
        if not (r.path / WORK_DIR / "latents.npz").exists():
            continue
        key = (r.benchmark, r.quality, r.preset, r.column)
        chosen.setdefault(key, {}).setdefault(r.algo, r)
    paths = []
    for (benchmark, quality, preset, column), runs in sorted(chosen.items()):
        if "coworld" not in runs:
            continue
        panels = []
        with np.load(runs["coworld"].path / WORK_DIR / "latents.npz", allow_pickle=False) as z:
            for tag, title in (("before", "Before alignment\n(start of co-training)"),
                               ("after", "After alignment\n(end of training)")):
                if f"{tag}_source" in z.files:
                    panels.append((title, z[f"{tag}_source"], z[f"{tag}_target"]))
        if "coworld-no-state-align" in runs:
            with np.load(runs["coworld-no-state-align"].path / WORK_DIR / "latents.npz",
                         allow_pickle=False) as z:
                if "after_source" in z.files:
                    panels.append(("Without state alignment\n(end of training)",
                                   z["after_source"], z["after_target"]))
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.9), squeeze=False)
        rows = []
        for ax, (title, source, target) in zip(axes[0], panels):
            xy = project(np.concatenate([source, target]).astype(np.float64), method)
            n = len(source)
            ax.scatter(xy[:n, 0], xy[:n, 1], s=14, facecolors="none", edgecolors="0.05",
                       linewidths=0.7, marker="o", label="Source encoder")
            ax.scatter(xy[n:, 0], xy[n:, 1], s=14, color="0.55", marker="^",
                       label="Target encoder")
            kl = embedding_kl(source, target)
            ax.set_title(f"{title}\nKL(source ‖ target) = {kl:.3f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=7, loc="best")
            rows.append([title.split("\n")[0], n, kl])
        name = "t-SNE" if method == "tsne" else "PCA"
        fig.suptitle(f"{name} of encoder embeddings of the same target frames, "
                     f"{column.replace('->', '→')}\n({_group_label(benchmark, quality, preset)})",
                     fontsize=10)
        fig.tight_layout()
        slug = column.replace("->", "-").replace("*", "S")
        stem = out / "figures" / f"latents_{benchmark}_{quality}_{preset}_{slug}"
        paths += save(fig, stem)
        paths.append(write_csv(with_ext(stem, 'csv'), ["panel", "frames", "embedding_kl"],
                               rows))
    return paths


# Training time (table 12) ------------------------------------------------------------

def training_time(tables: list[Table], out: Path) -> list[Path]:
    # Updates count every training update (online pretraining's included); the
    # pretraining column counts the source's environment steps (SPEC section 7).
    header = ["table", "algo", "model", "runs", "updates", "source_pretrain_env_steps",
              "training_min_mean", "training_min_std", "inference_s_per_episode", "device"]
    rows = []
    for table in tables:
        for algo in table.algos:
            runs = {id(r): r for c in table.columns for r in table.cell(algo, c).runs}
            runs = list(runs.values())
            minutes = [r.wall_time_s / 60 for r in runs if r.wall_time_s is not None]
            inference = [r.eval_seconds_per_episode for r in runs
                         if r.eval_seconds_per_episode is not None]
            devices = sorted({r.device for r in runs})
            pretrain = [r.config.get("pretrain_env_steps") for r in runs]
            pretrain = int(np.mean(pretrain)) if pretrain and None not in pretrain else ""
            rows.append([table.name, algo, display_name(algo), len(runs),
                         int(np.mean([r.steps for r in runs])), pretrain,
                         float(np.mean(minutes)) if minutes else "",
                         float(np.std(minutes)) if minutes else "",
                         float(np.mean(inference)) if inference else "", " ".join(devices)])
    paths = [write_csv(out / "tables" / "training_time.csv", header, rows)]
    md = ["**Training and inference time** (wall clock of the runs; training includes the "
          "periodic evaluations).", "",
          "Updates count every training update, source pretraining's included; source "
          "pretraining is counted in environment steps.", "",
          "| Table | Model | Runs | Updates | Source pretraining (env steps) | Training (min) "
          "| Inference (s/episode) | Device |",
          "|---|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        pretrain = f"{row[5]:,}" if row[5] != "" else "–"
        train = f"{row[6]:.2f} ± {row[7]:.2f}" if row[6] != "" else "–"
        infer = f"{row[8]:.2f}" if row[8] != "" else "–"
        md.append(f"| {row[0]} | {row[2]} | {row[3]} | {row[4]:,} | {pretrain} | {train} | "
                  f"{infer} | {row[9]} |")
    paths.append(write_text(out / "tables" / "training_time.md", "\n".join(md) + "\n"))
    return paths


# Aggregates --------------------------------------------------------------------------

def aggregate_plots(agg: Aggregates, out: Path) -> list[Path]:
    plt = style()
    if not agg.matrices:
        return []
    table = agg.table
    algos = list(agg.matrices)
    fig, axes = plt.subplots(1, 3 if agg.improvement else 2,
                             figsize=(13 if agg.improvement else 9, 0.45 * len(algos) + 2.4))
    ax = axes[0]
    for i, algo in enumerate(algos):
        point = agg.point[algo]["IQM"]
        low, high = agg.interval[algo]["IQM"]
        ax.errorbar([point], [i], xerr=[[point - low], [high - point]], fmt=MARKERS[i % len(MARKERS)],
                    color="0.1", capsize=4, markersize=7)
    ax.set_yticks(range(len(algos)), [display_name(a) for a in algos])
    ax.set_ylim(-0.6, len(algos) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(min(-0.02, ax.get_xlim()[0]), max(1.02, ax.get_xlim()[1]))
    ax.set_xlabel("IQM normalised score (95% CI)")
    ax.set_title("Interquartile mean")
    ax = axes[1]
    for i, algo in enumerate(algos):
        ax.plot(agg.taus, agg.profiles[algo], label=display_name(algo), lw=1.6,
                markevery=10, markersize=4, **line_style(i))
        low, high = agg.profile_cis[algo]
        ax.fill_between(agg.taus, low, high, color=GRAYS[i % len(GRAYS)], alpha=0.15, lw=0)
    ax.set_xlabel("Normalised score τ")
    ax.set_ylabel("Fraction of runs with score > τ")
    ax.set_title("Performance profiles")
    ax.legend(fontsize=7)
    if agg.improvement:
        ax = axes[2]
        names = list(agg.improvement)
        for i, b in enumerate(names):
            p, low, high = agg.improvement[b]
            ax.errorbar([p], [i], xerr=[[p - low], [high - p]], fmt="o", color="0.1", capsize=4)
        ax.axvline(0.5, color="0.5", linestyle="--", lw=1)
        ax.set_ylim(-0.6, len(names) - 0.4)
        ax.invert_yaxis()
        ax.set_xlim(-0.02, 1.02)
        ax.set_yticks(range(len(names)), [display_name(b) for b in names])
        ax.set_xlabel(f"P({display_name(agg.reference)} > baseline)")
        ax.set_title("Probability of improvement")
    fig.suptitle(f"Robust aggregates over {len(table.columns)} tasks ({table.title})", fontsize=10)
    fig.tight_layout()
    return save(fig, out / "aggregates" / f"aggregates_{table.name}")

