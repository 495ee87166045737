"""A third-party algorithm registered through the entry-point group is listed and runs.

The plugin is installed the way pip installs a package: a module plus a
``*.dist-info`` folder with ``entry_points.txt`` on the Python path.
"""

import json
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
        lr: float = 0.5


    @register("mean-action")
    class MeanAction(Algorithm):
        Config = MeanActionConfig
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


def test_plugin_runs(cli, plugin_path, tmp_path):
    result = cli("run", "--algo", "mean-action", "--target", "DC", "--preset", "smoke",
                 "--quiet", "--out", tmp_path, env_extra={"PYTHONPATH": str(plugin_path)})
    assert result.returncode == 0, result.stderr
    d = tmp_path / "DC" / "mean-action" / "seed0"
    result_json = json.loads((d / "result.json").read_text())
    assert result_json["algo"] == "mean-action" and result_json["steps"] == 20
    metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["loss"] < metrics[0]["loss"]  # it learned something


def test_plugin_appears_in_report_tables_under_its_own_name(cli, plugin_path, tmp_path):
    env = {"PYTHONPATH": str(plugin_path)}
    runs = tmp_path / "runs"
    result = cli("run", "--algo", "mean-action", "--target", "DC", "--preset", "smoke",
                 "--quiet", "--out", runs, "--set", "eval_every=0", env_extra=env)
    assert result.returncode == 0, result.stderr
    report = cli("report", runs, "--out", tmp_path / "report", "--bootstrap-reps", "50",
                 "--embedding", "pca", env_extra=env)
    assert report.returncode == 0, report.stderr
    tables = list((tmp_path / "report" / "tables").glob("metaworld_*.md"))
    assert tables and any("Mean Action (plugin)" in t.read_text() for t in tables)
