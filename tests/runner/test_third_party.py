"""A third-party algorithm registered through the entry-point group is listed, passes
the conformance kit (``coworld_bench.testing``) and appears in the report.

The plugin is installed the way pip installs a package: a module plus a
``*.dist-info`` folder with ``entry_points.txt`` on the Python path.
"""

import importlib
import json
import sys
import textwrap

import pytest

PLUGIN = textwrap.dedent('''
    """A third-party algorithm: acts the dataset's mean action, learned by SGD."""
    import dataclasses

    import numpy as np
    import torch

    from coworld_bench.algorithm import Algorithm, TrainConfig
    from coworld_bench.data import TransitionSampler
    from coworld_bench.registry import register


    @dataclasses.dataclass
    class MeanActionConfig(TrainConfig):
        """Attributes:
          lr: SGD's learning rate.
        """

        lr: float = 0.5


    @register("mean-action")
    class MeanAction(Algorithm):
        Config = MeanActionConfig
        presets = {"smoke": {}}  # the defaults are tiny already
        description = "plugin: the dataset's mean action"
        paper_name = "Mean Action (plugin)"

        def __init__(self, config, ctx):
            super().__init__(config, ctx)
            self.mean = torch.zeros(ctx.action_dim, requires_grad=True)
            self.optim = torch.optim.SGD([self.mean], lr=config.lr)
            self.sampler = TransitionSampler(ctx.dataset, 16, seed=ctx.seed)

        def train_step(self, step):
            actions = torch.as_tensor(self.sampler.sample()["action"])
            loss = ((self.mean - actions) ** 2).mean()
            self.optim.zero_grad()
            loss.backward()
            self.optim.step()
            return {"loss": loss.item()}

        def policy(self, obs, state, deterministic=True):
            return self.mean.detach().numpy().copy(), state

        def state_dict(self):
            return {"mean": self.mean.detach().clone(), "optim": self.optim.state_dict(),
                    "rng": self.sampler.rng.bit_generator.state}

        def load_state_dict(self, state):
            with torch.no_grad():
                self.mean.copy_(state["mean"])
            self.optim.load_state_dict(state["optim"])
            self.sampler.rng.bit_generator.state = state["rng"]
''')


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "mean_action_plugin.py").write_text(PLUGIN)
    info = site / "mean_action_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mean-action-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[coworld_bench.algorithms]\nmean-action = mean_action_plugin:MeanAction\n")
    return site


def test_plugin_is_listed(cli, plugin_path):
    result = cli("list", "algos", env_extra={"PYTHONPATH": str(plugin_path)})
    assert result.returncode == 0, result.stderr
    assert "mean-action" in result.stdout and "plugin: the dataset's mean action" in result.stdout
    assert "bc" in result.stdout
    assert "mean-action" not in cli("list", "algos").stdout  # only where it is installed


@pytest.fixture(scope="module")
def kit_report(plugin_path, data_root, tmp_path_factory):
    """Every check of the conformance kit on the plugin: imported here from its folder,
    and found by the kill-resume check's `coworld-bench run` subprocesses through
    ``plugin_path``. The runs stay in the module's folder for the report test."""
    from coworld_bench import registry
    from coworld_bench.testing import check_algorithm

    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(plugin_path))
        mp.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # registered here only
        try:
            plugin = importlib.import_module("mean_action_plugin").MeanAction
            return check_algorithm(plugin, data_root=data_root, plugin_path=plugin_path,
                                   out=tmp_path_factory.mktemp("kit"))
        finally:
            sys.modules.pop("mean_action_plugin", None)


def test_plugin_passes_the_conformance_kit(kit_report):
    from coworld_bench.testing import CHECKS

    assert kit_report.algo == "mean-action" and kit_report.passed == list(CHECKS)
    d = kit_report.run_dirs["reference"]  # its uninterrupted `coworld-bench run`
    result_json = json.loads((d / "result.json").read_text())
    assert result_json["algo"] == "mean-action" and result_json["steps"] == 20
    metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["loss"] < metrics[0]["loss"]  # it learned something


def test_plugin_appears_in_report_tables_under_its_own_name(cli, plugin_path, kit_report,
                                                            tmp_path):
    runs = kit_report.run_dirs["reference"].parents[2]
    report = cli("report", runs, "--out", tmp_path / "report", "--bootstrap-reps", "50",
                 "--embedding", "pca", env_extra={"PYTHONPATH": str(plugin_path)})
    assert report.returncode == 0, report.stderr
    tables = list((tmp_path / "report" / "tables").glob("dmc_*.md"))
    assert tables and any("Mean Action (plugin)" in t.read_text() for t in tables)
