"""The report refuses an evaluation log that two processes wrote at once."""

import json

from coworld_bench.report.runs import load_runs


def _run(root, name, evals):
    d = root / "DC" / "bc" / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(
        {"algo": "bc", "source": None, "target": "mw-drawer-close", "seed": 0, "preset": "smoke",
         "config": {"train_steps": 20, "dataset_quality": "random"}}))
    (d / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    return d


def test_duplicated_steps_and_finals_leave_the_run_out(tmp_path):
    point = lambda step, **extra: {"step": step, "returns": [1.0], "mean": 1.0, "std": 0.0,  # noqa
                                   "success": [False], **extra}
    good = _run(tmp_path, "seed0", [point(10), point(20, final=True)])
    twice = _run(tmp_path, "seed1", [point(10), point(10), point(20, final=True)])
    finals = _run(tmp_path, "seed2", [point(10), point(20, final=True), point(10),
                                      point(20, final=True)])
    records, problems = load_runs(tmp_path)
    assert [r.path for r in records] == [good]
    reasons = {p.path: p.reason for p in problems}
    assert "steps [10] twice" in reasons[twice]
    assert "2 final evaluations" in reasons[finals] and "--force" in reasons[finals]
