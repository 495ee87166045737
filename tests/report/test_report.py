"""`coworld-bench report` on a folder of real smoke runs (tests/conftest.py:shared_runs):
every artefact is made, and the numbers equal those recomputed from the run files."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from coworld_bench import protocol

TABLE = "metaworld_medium-replay_smoke"


def final_score(run_dir):
    """Recomputed independently: the mean return of eval.jsonl's final record."""
    lines = (run_dir / "eval.jsonl").read_text().splitlines()
    final = json.loads(lines[-1])
    assert final["final"]
    return float(np.mean(final["returns"]))


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


@pytest.fixture(scope="module")
def report(shared_runs, tmp_path_factory):
    """The shared runs plus two broken copies (missing / corrupt eval.jsonl)."""
    root = tmp_path_factory.mktemp("report-runs")
    runs = root / "runs"
    shutil.copytree(shared_runs, runs, ignore=shutil.ignore_patterns("*_replay", "checkpoint",
                                                                      "tb"))
    good = runs / "WC-DC" / "coworld" / "seed1"
    missing = runs / "broken" / "WC-DC" / "coworld" / "seed2"
    corrupt = runs / "broken" / "HP-DC" / "coworld" / "seed2"
    for d in (missing, corrupt):
        shutil.copytree(good, d)
    (missing / "eval.jsonl").unlink()
    bad_line = len((corrupt / "eval.jsonl").read_text().splitlines()) + 1
    with open(corrupt / "eval.jsonl", "a") as f:
        f.write('{"step": 20, "final": tru\n')
    out = root / "report"
    result = subprocess.run([sys.executable, "-m", "coworld_bench.cli", "report", str(runs),
                             "--out", str(out), "--bootstrap-reps", "300"],
                            capture_output=True, text=True, env=dict(os.environ), timeout=900)
    return {"runs": runs, "out": out, "result": result, "missing": missing, "corrupt": corrupt,
            "bad_line": bad_line}


def test_report_succeeds_and_names_the_broken_runs(report):
    result, out = report["result"], report["out"]
    assert result.returncode == 0, result.stderr[-3000:]
    for d, why in ((report["missing"], "eval.jsonl is missing"),
                   (report["corrupt"], f"line {report['bad_line']} is not valid JSON")):
        assert str(d) in result.stderr and why in result.stderr
        readme = (out / "README.md").read_text()
        assert str(d) in readme.split("## Runs left out")[1]


EXPECTED = [
    "README.md", "reproduction.md",
    *[f"tables/{TABLE}.{ext}" for ext in ("csv", "md", "tex")], f"tables/{TABLE}_long.csv",
    f"tables/{TABLE}_normalised.csv",
    "tables/training_time.csv", "tables/training_time.md",
    f"aggregates/aggregates_{TABLE}.csv", f"aggregates/improvement_{TABLE}.csv",
    *[f"aggregates/aggregates_{TABLE}.{ext}" for ext in ("png", "pdf")],
    *[f"figures/{stem}.{ext}" for ext in ("png", "pdf", "csv") for stem in (
        "transfer_matrix_medium-replay_smoke", f"value_estimation_{TABLE}",
        f"ablations_{TABLE}", "sensitivity_metaworld_medium-replay_smoke", f"curves_{TABLE}",
        f"curves_ablations_{TABLE}", "latents_metaworld_medium-replay_smoke_WC-DC",
        "latents_metaworld_medium-replay_smoke_HP-DC")],
    # The beta2=0.5 run is a different experiment: a table of its own.
    f"tables/{TABLE}__beta2=0.5.csv",
]


@pytest.mark.parametrize("name", EXPECTED)
def test_every_artefact_is_made(report, name):
    path = report["out"] / name
    assert path.exists() and path.stat().st_size > 0, name
    if name.endswith(".png"):
        with Image.open(path) as image:
            assert min(image.size) >= 300  # a real figure, not an empty canvas
            assert len(set(image.convert("L").getdata())) > 20
    if name.endswith(".pdf"):
        assert path.read_bytes().startswith(b"%PDF")


def test_table_numbers_equal_the_eval_files(report):
    runs = report["runs"]
    scores = {
        ("coworld", "WC->DC"): [final_score(runs / "WC-DC" / "coworld" / f"seed{s}") for s in (0, 1)],
        ("coworld", "HP->DC"): [final_score(runs / "HP-DC" / "coworld" / f"seed{s}") for s in (0, 1)],
        # An offline algorithm's run on the target serves every pair with that target.
        ("offline-dv2", "WC->DC"): [final_score(runs / "DC" / "offline-dv2" / f"seed{s}")
                                    for s in (0, 1)],
        ("offline-dv2", "HP->DC"): [final_score(runs / "DC" / "offline-dv2" / f"seed{s}")
                                    for s in (0, 1)],
        ("coworld-multisource", "WC->DC"): [final_score(runs / "DC" / "coworld-multisource" / "seed0")],
        ("coworld-multisource", "HP->DC"): [final_score(runs / "DC" / "coworld-multisource" / "seed0")],
    }
    long = {(r["algo"], r["column"]): r for r in read_csv(report["out"] / "tables" / f"{TABLE}_long.csv")
            if r["algo"] != "random"}
    # Ablations have their own figure; the default table holds the three algorithms only.
    assert set(long) == set(scores)
    for key, values in scores.items():
        row = long[key]
        assert int(row["n_seeds"]) == len(values)
        assert float(row["mean"]) == pytest.approx(np.mean(values), abs=1e-9)
        assert float(row["std"]) == pytest.approx(np.std(values), abs=1e-9)
    paper = {r["model"]: r for r in read_csv(report["out"] / "tables" / f"{TABLE}.csv")}
    assert list(paper) == ["Offline DV2", "CoWorld", "CoWorld (multi-source)", "Random actions"]
    decimals = 0 if max(abs(np.mean(v)) for v in scores.values()) >= 100 else 1
    names = {"coworld": "CoWorld", "offline-dv2": "Offline DV2",
             "coworld-multisource": "CoWorld (multi-source)"}
    markdown = (report["out"] / "tables" / f"{TABLE}.md").read_text()
    latex = (report["out"] / "tables" / f"{TABLE}.tex").read_text()
    for (algo, column), values in scores.items():
        text = f"{np.mean(values):.{decimals}f}±{np.std(values):.{decimals}f}"
        if len(values) < 2:
            text += f" ({len(values)}/2 seeds)"  # the missing seed is marked, not hidden
        assert paper[names[algo]][column] == text
        assert text.replace("±", " ± ") in markdown
        assert text.replace("±", r" $\pm$ ") in latex
    for algo in ("coworld", "offline-dv2"):
        avg = np.mean([np.mean(scores[(algo, c)]) for c in ("WC->DC", "HP->DC")])
        assert paper[names[algo]]["avg"] == f"{avg:.{decimals}f}"


def random_score(run_dir):
    """Recomputed independently: the mean random-action return kept in result.json."""
    return float(np.mean(json.loads((run_dir / "result.json").read_text())
                         ["random_action"]["returns"]))


def test_random_action_row(report):
    """The Offline DV2 runs recorded random actions on their final evaluation's seeds:
    one score per seed, in every column with their target; the last row of the table."""
    runs = report["runs"]
    expected = [random_score(runs / "DC" / "offline-dv2" / f"seed{s}") for s in (0, 1)]
    rows = [r for r in read_csv(report["out"] / "tables" / f"{TABLE}_long.csv")
            if r["algo"] == "random"]
    assert [r["column"] for r in rows] == ["WC->DC", "HP->DC"]
    for r in rows:
        assert r["model"] == "Random actions" and r["seeds"] == "0 1"
        assert [float(x) for x in r["scores"].split()] == pytest.approx(expected, abs=1e-12)
        assert float(r["mean"]) == pytest.approx(np.mean(expected), abs=1e-12)
    paper = read_csv(report["out"] / "tables" / f"{TABLE}.csv")
    assert paper[-1]["model"] == "Random actions"


def test_claims_follow_the_numbers(report):
    """claims.md states each claim per pair as the recomputed numbers give it."""
    runs = report["runs"]
    text = (report["out"] / "claims.md").read_text()
    for title in ("1. CoWorld scores above Offline DV2", "2. Offline DV2 overestimates",
                  "3. CoWorld w/o Max underestimates", "4. CoWorld's value error is the "
                  "smallest", "5. Every algorithm above uniformly random actions"):
        assert f"### {title}" in text, title
    from scipy import stats

    dv2 = [final_score(runs / "DC" / "offline-dv2" / f"seed{s}") for s in (0, 1)]
    section = text.split("### 1. ")[1].split("###")[0]
    for pair in ("WC", "HP"):
        ours = [final_score(runs / f"{pair}-DC" / "coworld" / f"seed{s}") for s in (0, 1)]
        [line] = [x for x in section.splitlines() if x.startswith(f"- {pair}→DC")]
        # Holds only where the 95% Welch interval of the difference excludes zero.
        low = stats.ttest_ind(ours, dv2, equal_var=False).confidence_interval(0.95).low
        assert line.split(": ")[-1].startswith("holds" if low > 0 else "does not hold")
        assert "Welch interval" in line
        assert "preset smoke, 20/23 updates" in line  # Offline DV2's 20, CoWorld's 23
    errors = []
    for s in (0, 1):
        with np.load(runs / "DC" / "offline-dv2" / f"seed{s}" / "value_trace.npz") as trace:
            errors.append(float((trace["value"] - trace["discounted_return"]).mean()))
    section = text.split("### 2. ")[1].split("###")[0]
    [line] = [x for x in section.splitlines() if x.startswith("- WC→DC")]
    assert f"mean V − G = {np.mean(errors):+.2f} (n=2)" in line
    low = stats.ttest_1samp(errors, 0.0).confidence_interval(0.95).low
    assert ": holds (" in line if low > 0 else ": does not hold (" in line
    # No w/o Max run here: said, not guessed.
    assert "not measured" in text.split("### 3. ")[1].split("###")[0]


def test_report_checks_itself_and_a_copy(report, tmp_path):
    """The report recomputes its numbers from the run directories; --copy-runs keeps the
    files it reads (not the checkpoints) so that --check works on the copy, and a run
    file changed afterwards is found and named."""
    assert "numbers of the tables and value-estimation files recomputed from the run " \
           "directories: all equal" in (report["out"] / "README.md").read_text()
    runs = tmp_path / "runs"
    for part in ("DC/offline-dv2", "WC-DC/coworld"):
        shutil.copytree(report["runs"] / part, runs / part)
    out = tmp_path / "report"
    made = subprocess.run([sys.executable, "-m", "coworld_bench.cli", "report", str(runs),
                           "--out", str(out), "--bootstrap-reps", "50", "--embedding", "pca",
                           "--copy-runs"], capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stderr[-3000:]
    copied = out / "runs" / "WC-DC" / "coworld" / "seed0"
    assert sorted(p.name for p in copied.iterdir()) == [
        "config.json", "eval.jsonl", "metrics.jsonl", "result.json", "value_trace.npz"]
    assert not list((out / "runs").rglob("*.pt"))
    long = (out / "tables" / f"{TABLE}_long.csv").read_text()
    assert str(copied) in long and str(runs) + "/" not in long  # the report reads the copy
    check = [sys.executable, "-m", "coworld_bench.cli", "report", "--check", str(out)]
    ok = subprocess.run(check, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and " 0 differ." in ok.stdout, ok.stderr
    lines = (copied / "eval.jsonl").read_text().splitlines()
    final = json.loads(lines[-1])
    final["returns"] = [r + 1.0 for r in final["returns"]]
    (copied / "eval.jsonl").write_text("\n".join([*lines[:-1], json.dumps(final)]) + "\n")
    bad = subprocess.run(check, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert "CoWorld / WC->DC" in bad.stderr and "recomputed" in bad.stderr


def test_rliable_aggregates(report):
    rows = read_csv(report["out"] / "aggregates" / f"aggregates_{TABLE}.csv")
    iqm = {r["algo"]: r for r in rows if r["metric"] == "IQM"}
    assert set(iqm) == {"coworld", "offline-dv2", "coworld-multisource"}
    runs = report["runs"]
    # CoWorld: 2 seeds x 2 tasks of the protocol's normalised scores / 100, by hand:
    # (R - R_random) / (R_ref - R_random) with Drawer Close's references.
    refs = protocol.references("DC")
    matrix = np.array([[(final_score(runs / p / "coworld" / f"seed{s}") - refs["random"])
                        / (refs["reference"] - refs["random"])
                        for p in ("WC-DC", "HP-DC")] for s in (0, 1)])
    assert float(iqm["coworld"]["estimate"]) == pytest.approx(
        stats.trim_mean(matrix.ravel(), 0.25), abs=1e-9)
    for r in iqm.values():
        assert float(r["ci_low"]) <= float(r["estimate"]) + 1e-12 <= float(r["ci_high"]) + 2e-12
    improvement = read_csv(report["out"] / "aggregates" / f"improvement_{TABLE}.csv")
    assert {r["algo_y"] for r in improvement} == {"offline-dv2", "coworld-multisource"}
    assert all(r["algo_x"] == "coworld" for r in improvement)
    assert all(0.0 <= float(r["probability_x_better"]) <= 1.0 for r in improvement)


def test_transfer_matrix_values(report):
    runs = report["runs"]
    rows = {(r["source"], r["target"]): r for r in
            read_csv(report["out"] / "figures" / "transfer_matrix_medium-replay_smoke.csv")}
    dv2 = np.mean([final_score(runs / "DC" / "offline-dv2" / f"seed{s}") for s in (0, 1)])
    ratios = {}
    for source in ("WC", "HP"):
        ours = np.mean([final_score(runs / f"{source}-DC" / "coworld" / f"seed{s}") for s in (0, 1)])
        ratios[source] = ours / dv2
        assert float(rows[(source, "DC")]["ratio"]) == pytest.approx(ratios[source])
    multi = final_score(runs / "DC" / "coworld-multisource" / "seed0") / dv2
    assert float(rows[("multi-source", "DC")]["ratio"]) == pytest.approx(multi)
    best = max(ratios, key=ratios.get)
    assert [k[0] for k, r in rows.items() if r["best_source"] == "True"] == [best]


def test_value_estimation_matches_the_traces(report):
    rows = read_csv(report["out"] / "figures" / f"value_estimation_{TABLE}.csv")
    assert {r["algo"] for r in rows} >= {"coworld", "offline-dv2", "coworld-no-state-align"}
    for r in rows:
        with np.load(f"{r['run']}/value_trace.npz", allow_pickle=False) as trace:
            error = (trace["value"] - trace["discounted_return"]).mean()
        assert float(r["mean_error"]) == pytest.approx(error)
    # The mean over-/under-estimation is printed.
    assert "mean value − true return" in report["result"].stdout


def test_sensitivity_and_ablations(report):
    rows = read_csv(report["out"] / "figures" / "sensitivity_metaworld_medium-replay_smoke.csv")
    beta2 = sorted(float(r["value"]) for r in rows if r["setting"] == "beta2"
                   and r["column"] == "WC->DC")
    assert beta2 == [0.5, 1.0]  # the paper's value and the --set beta2=0.5 run
    runs = report["runs"]
    point = [r for r in rows if r["setting"] == "beta2" and float(r["value"]) == 0.5][0]
    assert float(point["mean"]) == pytest.approx(
        final_score(runs / "beta2-0.5" / "WC-DC" / "coworld" / "seed0"))
    bars = {(r["algo"], r["column"]) for r in
            read_csv(report["out"] / "figures" / f"ablations_{TABLE}.csv")}
    assert ("coworld-no-state-align", "WC->DC") in bars and ("coworld", "WC->DC") in bars


def test_training_curves_have_seed_bands(report):
    rows = read_csv(report["out"] / "figures" / f"curves_{TABLE}.csv")
    dv2 = [r for r in rows if r["algo"] == "offline-dv2" and r["column"] == "WC->DC"]
    assert [int(r["step"]) for r in dv2] == [10, 20]  # the half-way and final evaluations
    runs = report["runs"]
    for r in dv2:
        returns = []
        for s in (0, 1):
            for line in (runs / "DC" / "offline-dv2" / f"seed{s}" / "eval.jsonl").read_text().splitlines():
                e = json.loads(line)
                if e["step"] == int(r["step"]):
                    returns.append(np.mean(e["returns"]))
        assert float(r["mean"]) == pytest.approx(np.mean(returns))
        assert float(r["std"]) == pytest.approx(np.std(returns))


def test_latents_before_and_after(report):
    rows = read_csv(report["out"] / "figures" / "latents_metaworld_medium-replay_smoke_WC-DC.csv")
    assert [r["panel"] for r in rows] == ["Before alignment", "After alignment",
                                         "Without state alignment"]
    assert all(int(r["frames"]) == 256 and float(r["embedding_kl"]) >= 0 for r in rows)


def test_reproduction_report(report):
    text = (report["out"] / "reproduction.md").read_text()
    table2 = text.split("## Table 2")[1].split("## ")[0]
    runs = report["runs"]
    # WC->DC is a cell of the paper's Table 2: CoWorld (best-source) 4845±14.
    scores = [final_score(runs / "WC-DC" / "coworld" / f"seed{s}") for s in (0, 1)]
    mean, std = np.mean(scores), np.std(scores)
    line = [row for row in table2.splitlines() if row.startswith("| CoWorld (best-source) | WC→DC")]
    assert len(line) == 1
    cells = [c.strip() for c in line[0].split("|")[1:-1]]
    assert cells[2] == "4845 ± 14"
    assert cells[3] == f"{mean:.1f} ± {std:.1f}"
    assert cells[4] == f"{(mean - 4845) / 14:+.1f}σ"
    assert cells[5] == "2" and "preset smoke, 23 updates" in cells[6]
    assert "| Offline DV2 | WC→DC | 3899 ± 679 |" in table2
    assert "| CoWorld (multi-source) | WC→DC | 4678 ± 137 |" in table2
    # HP->DC is not a paper pair; paper cells without runs are listed as not run.
    assert "HP→DC" not in table2
    assert "- DV2 Finetune: BP→DC*, DC→BP, BT→WC, BP→HP, WC→DC, HP→BT (not run)" in table2
    cql = [row for row in table2.splitlines() if row.startswith("- CQL: BP→DC*")]
    assert len(cql) == 1 and cql[0].endswith("(not run)")
    assert "Source selected by multi-source CoWorld" in text


def test_aggregates_are_seeded(report):
    from coworld_bench.report.aggregates import aggregate
    from coworld_bench.report.runs import load_runs
    from coworld_bench.report.tables import build_tables

    records, problems = load_runs(report["runs"])
    assert len(problems) == 2
    table = [t for t in build_tables(records) if t.name == TABLE][0]
    assert aggregate(table, reps=100).to_csv() == aggregate(table, reps=100).to_csv()


def test_no_runs_is_a_clear_error(cli, tmp_path, report):
    result = cli("report", tmp_path, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "No finished run under" in result.stderr
    # Runs that are all rejected: each one named with its reason.
    for broken in ("missing", "corrupt"):
        shutil.copytree(report[broken], tmp_path / "rejected" / broken / "DC" / "bc" / "seed0")
    result = cli("report", tmp_path / "rejected", "--out", tmp_path / "out")
    assert result.returncode == 2 and "every run found was left out" in result.stderr
    assert "missing/DC/bc/seed0/eval.jsonl is missing" in result.stderr
    assert "corrupt/DC/bc/seed0/eval.jsonl line" in result.stderr
    assert not (tmp_path / "out").exists()


def test_report_of_a_folder_with_a_space_and_a_failed_report_leaves_nothing(report, tmp_path):
    """Run paths are stored whole (a JSON list), so a folder named "a b" reports and checks;
    a report that then fails (a value trace made unreadable: its check differs) leaves the
    previous report exactly as it was, and no half-written folder beside it."""
    runs = tmp_path / "a b"
    for part in ("DC/offline-dv2", "WC-DC/coworld"):
        shutil.copytree(report["runs"] / part, runs / part)
    out = tmp_path / "the report"
    command = [sys.executable, "-m", "coworld_bench.cli", "report", str(runs), "--out", str(out),
               "--bootstrap-reps", "50", "--embedding", "pca"]
    made = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert made.returncode == 0 and "Traceback" not in made.stderr, made.stderr[-3000:]
    check = subprocess.run([sys.executable, "-m", "coworld_bench.cli", "report", "--check",
                            str(out)], capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and " 0 differ." in check.stdout, check.stderr
    long = read_csv(out / "tables" / f"{TABLE}_long.csv")
    assert all(json.loads(r["runs"])[0].startswith(str(runs) + "/") for r in long)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (runs / "WC-DC" / "coworld" / "seed0" / "value_trace.npz").write_bytes(b"not a zip")
    failed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    assert "value_trace" in failed.stderr or "value trace" in failed.stderr
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a b", "the report"]
    fresh = tmp_path / "fresh"  # no previous report: none is left behind
    failed = subprocess.run([*command[:-6], "--out", str(fresh), *command[-4:]],
                            capture_output=True, text=True, timeout=900)
    assert failed.returncode == 2 and not fresh.exists()


def test_normalised_table_by_hand(report):
    """The normalised table: each per-seed score through the protocol's formula with
    Drawer Close's references, mean ± std over seeds, then the references' rows."""
    rows = {r["model"]: r for r in read_csv(report["out"] / "tables" / f"{TABLE}_normalised.csv")}
    refs = protocol.references("DC")
    runs = report["runs"]
    scores = [100 * (final_score(runs / "WC-DC" / "coworld" / f"seed{s}") - refs["random"])
              / (refs["reference"] - refs["random"]) for s in (0, 1)]
    assert rows["CoWorld"]["WC->DC"] == f"{np.mean(scores):.1f}±{np.std(scores):.1f}"
    assert rows["R_random (protocol)"]["WC->DC"] == f"{refs['random']:.1f}"
    assert rows["R_ref (protocol)"]["HP->DC"] == f"{refs['reference']:.1f}"
    markdown = (report["out"] / "tables" / f"{TABLE}.md").read_text()
    assert "**Normalised scores**" in markdown
    header = (report["out"] / "aggregates" / f"aggregates_{TABLE}.csv").read_text().splitlines()[0]
    assert header == "# scores: protocol-normalised score / 100"
