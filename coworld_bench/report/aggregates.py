"""Robust aggregates over the tasks of a table, with rliable (Agarwal et al., 2021).

Scores are the evaluation protocol's normalised scores divided by 100 (1 = the
reference policy, 0 = uniformly random actions; ``coworld_bench/protocol.md``), so the
tasks of one table weigh alike. A table with a column that has no reference (RoboDesk)
is aggregated on raw returns divided by the most an episode can give (``MAX_RETURN``),
and says so (``Aggregates.scale``). An algorithm enters the
aggregates of a table when it has a seed in every column; with unequal seed counts
per column its first ``n`` seeds of each column are used, ``n`` the smallest count.
Intervals are stratified-bootstrap 95% CIs (percentile), seeded, so a report is
reproducible. (rliable's stratified bootstrap draws from the global ``np.random``
whatever ``random_state`` it is given, so the global state is seeded for the call and
restored after it.)
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from coworld_bench.report.tables import MAX_RETURN, Table, normalised_cell

__all__ = ["Aggregates", "aggregate", "score_matrix"]


def score_scale(table: Table) -> str:
    """What the aggregates' scores are: the protocol's normalised score / 100 when every
    column has a reference, else raw returns / the suite's most return."""
    has_reference = all(normalised_cell(table.cell(table.algos[0], c)) is not None
                        for c in table.columns) if table.algos else True
    return ("protocol-normalised score / 100" if has_reference
            else "raw return / the most an episode can give (no protocol reference)")


def score_matrix(table: Table, algo: str) -> np.ndarray | None:
    """(runs, tasks) scores on the table's scale (``score_scale``), or None without a
    seed in every column."""
    cells = [table.cell(algo, c) for c in table.columns]
    n = min(cell.n for cell in cells)
    if n == 0:
        return None
    normalised = score_scale(table).startswith("protocol")
    columns = []
    for cell in cells:
        order = np.argsort(cell.seeds, kind="stable")[:n]
        if normalised:
            scores = np.asarray(normalised_cell(cell).scores, np.float64) / 100.0
        else:
            scores = np.asarray(cell.scores, np.float64) / MAX_RETURN[cell.runs[0].target.suite]
        columns.append(scores[order])
    return np.stack(columns, axis=1)


@dataclasses.dataclass
class Aggregates:
    table: Table
    matrices: dict[str, np.ndarray]   # algo -> (runs, tasks)
    left_out: dict[str, str]          # algo -> why it is not aggregated
    point: dict[str, dict[str, float]]   # algo -> {IQM, Mean, Median}
    interval: dict[str, dict[str, tuple[float, float]]]
    improvement: dict[str, tuple[float, float, float]]  # baseline -> (P, low, high)
    reference: str | None               # the algorithm compared with every baseline
    taus: np.ndarray
    profiles: dict[str, np.ndarray]
    profile_cis: dict[str, np.ndarray]
    scale: str = "protocol-normalised score / 100"

    def to_csv(self) -> str:
        lines = [f"# scores: {self.scale}", "algo,runs,tasks,metric,estimate,ci_low,ci_high"]
        for algo, matrix in self.matrices.items():
            for metric, value in self.point[algo].items():
                low, high = self.interval[algo][metric]
                lines.append(f"{algo},{matrix.shape[0]},{matrix.shape[1]},{metric},{value!r},"
                             f"{low!r},{high!r}")
        return "\n".join(lines) + "\n"

    def improvement_csv(self) -> str:
        lines = ["algo_x,algo_y,probability_x_better,ci_low,ci_high"]
        for baseline, (p, low, high) in self.improvement.items():
            lines.append(f"{self.reference},{baseline},{p!r},{low!r},{high!r}")
        return "\n".join(lines) + "\n"


def _metrics():
    from rliable import metrics

    return {"IQM": metrics.aggregate_iqm, "Mean": metrics.aggregate_mean,
            "Median": metrics.aggregate_median}


def aggregate(table: Table, reps: int = 2000, seed: int = 0) -> Aggregates:
    from rliable import library as rly
    from rliable import metrics

    matrices, left_out = {}, {}
    for algo in table.algos:
        matrix = score_matrix(table, algo)
        if matrix is None:
            missing = [c for c in table.columns if table.cell(algo, c).n == 0]
            left_out[algo] = f"no seed on {', '.join(missing)}"
        else:
            matrices[algo] = matrix
    point, interval, improvement = {}, {}, {}
    reference = next((a for a in ("coworld", "coworld-multisource") if a in matrices), None)
    values = np.concatenate([m.ravel() for m in matrices.values()]) if matrices else np.zeros(1)
    taus = np.linspace(min(0.0, float(values.min())), max(1.0, float(values.max())), 101)
    profiles, profile_cis = {}, {}
    if matrices:
        funcs = _metrics()

        def all_metrics(x):
            return np.array([f(x) for f in funcs.values()])

        state = np.random.get_state()
        np.random.seed(seed)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # arch's RandomState deprecation notice
                estimates, cis = rly.get_interval_estimates(
                    matrices, all_metrics, reps=reps, random_state=np.random.RandomState(seed))
                for algo in matrices:
                    point[algo] = {m: float(v) for m, v in zip(funcs, estimates[algo])}
                    interval[algo] = {m: (float(cis[algo][0][i]), float(cis[algo][1][i]))
                                      for i, m in enumerate(funcs)}
                if reference is not None:
                    pairs = {b: (matrices[reference], matrices[b]) for b in matrices if b != reference}
                    if pairs:
                        p, p_cis = rly.get_interval_estimates(
                            pairs, metrics.probability_of_improvement, reps=reps,
                            random_state=np.random.RandomState(seed))
                        improvement = {b: (float(np.squeeze(p[b])), float(np.squeeze(p_cis[b][0])),
                                           float(np.squeeze(p_cis[b][1]))) for b in pairs}
                profiles, profile_cis = rly.create_performance_profile(matrices, taus,
                                                                       reps=min(reps, 2000))
        finally:
            np.random.set_state(state)
    return Aggregates(table, matrices, left_out, point, interval, improvement, reference, taus,
                      profiles, profile_cis, score_scale(table))
