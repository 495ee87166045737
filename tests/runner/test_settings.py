"""Settings: parsed by their declared type, checked against declared ranges before
anything is written, listed with their meaning; the CLI's error policy; layering."""

import ast
import math
from pathlib import Path

import pytest

from coworld_bench import registry
from coworld_bench.algorithm import coerce_setting, field_docs
from coworld_bench.errors import ConfigError
from coworld_bench.runner import RunRequest, parse_overrides, prepare

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind,text,expected", [
    (float, "3e-4", 3e-4), (float, "1e3", 1000.0), (float, "2", 2.0), (int, "1e3", 1000),
    (int, "-5", -5), (bool, "true", True), (bool, "False", False), (bool, "0", False),
    (str, "1e3", "1e3"), (int | None, "none", None), (float | None, "0.5", 0.5),
])
def test_set_values_are_parsed_by_the_declared_type(kind, text, expected):
    assert coerce_setting("algo", "x", kind, text) == expected


def test_nan_and_inf_parse_as_floats():
    assert math.isnan(coerce_setting("algo", "x", float, "nan"))
    assert coerce_setting("algo", "x", float, "inf") == math.inf


@pytest.mark.parametrize("kind,text", [(int, "1.5"), (int, "big"), (bool, "maybe"),
                                       (float, "fast"), (int, "none")])
def test_values_of_the_wrong_type_are_refused(kind, text):
    with pytest.raises(ConfigError, match="should be"):
        coerce_setting("algo", "x", kind, text)


def test_readme_example_lr_3e_4_is_accepted(tmp_path):
    """The README's own `--set lr=3e-4` (and other YAML-1.1 traps) through prepare."""
    overrides = parse_overrides(["lr=3e-4", "train_steps=1e3", "fast_render=true"])
    run = prepare(RunRequest(algo="bc", target="DC", preset="smoke", overrides=overrides,
                             out=str(tmp_path)))
    assert run.config.lr == 3e-4 and run.config.train_steps == 1000
    assert run.overrides == {"lr": 3e-4, "train_steps": 1000, "fast_render": True}
    assert not (tmp_path / "DC").exists()  # prepare writes nothing


def test_paper_values_are_typed_none_until_the_suite_is_known():
    cls = registry.get("coworld")
    config = cls.make_config("paper")
    assert config.beta2 is None and config.train_steps is None
    for target, beta2 in (("DC", 1.0), ("WD", 1.5)):
        from coworld_bench.tasks import resolve_task

        resolved = cls.for_tasks(cls.make_config("paper"), None, resolve_task(target))
        assert resolved.beta2 == beta2 and resolved.train_steps > 0


def test_every_setting_of_every_algorithm_is_documented():
    for name in registry.names():
        cls = registry.get(name)
        docs = field_docs(cls.Config)
        missing = [f for f in cls.Config.field_names() if not docs.get(f)]
        assert not missing, (name, missing)


def test_list_settings(cli):
    result = cli("list", "settings", "coworld", "--preset", "quick", "--pair", "WW-WD")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[2:] if line.strip()}
    # Resolved for DMC, the default typed none, the range, the paper's values per suite.
    assert "1.5" in lines["beta2"] and "paper" in lines["beta2"] and ">= 0" in lines["beta2"]
    assert "metaworld 1, robodesk 1, dmc 1.5" in lines["beta2"]
    assert "[0, 1]" in lines["k"] and "target-informed reward factor" in lines["k"]
    assert "discrete | continuous" in lines["latent"]
    unresolved = cli("list", "settings", "offline-dv2")
    assert unresolved.returncode == 0 and "V-D4RL" in unresolved.stdout
    bad = cli("list", "settings", "nope")
    assert bad.returncode == 2 and "Unknown algorithm" in bad.stderr


def test_list_algos_names_what_each_learns_from(cli):
    result = cli("list", "algos")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert "one task, online" in rows["dreamerv2"]
    assert "several online sources" in rows["coworld-multisource"]
    assert "offline target" in rows["bc"] and "Offline DV2" in rows["offline-dv2"]


def test_a_bug_keeps_its_traceback(cli, tmp_path):
    """Only the project's own user errors become one-line messages: a ValueError raised
    by a (plugin's) bug shows its traceback."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "buggy_plugin.py").write_text(
        "from coworld_bench.algorithm import Algorithm\n"
        "from coworld_bench.registry import register\n\n\n"
        "@register('buggy')\nclass Buggy(Algorithm):\n"
        "    def __init__(self, config, ctx):\n"
        "        raise ValueError('a bug, not bad input')\n")
    info = site / "buggy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: buggy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[coworld_bench.algorithms]\nbuggy = buggy_plugin:Buggy\n")
    result = cli("run", "--algo", "buggy", "--target", "DC", "--preset", "smoke", "--quiet",
                 "--out", tmp_path / "runs", env_extra={"PYTHONPATH": str(site)})
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "a bug, not bad input" in result.stderr


def test_the_benchmark_never_imports_an_algorithm_module():
    """Layers import downward: coworld_bench/ finds algorithms and behaviours through
    entry points only."""
    offenders = []
    for path in (ROOT / "coworld_bench").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                          if n == "baselines" or n.startswith("baselines.")]
    assert not offenders, offenders
