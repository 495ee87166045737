"""The conformance kit (``coworld_bench.testing.check_algorithm``) on every registered
algorithm, and on small broken plugins, one per check, each failing with a message that
names the check and the fix.

Every registered algorithm passes the cheap checks: metadata, a smoke train on real
DMC data (Walker Walk; Walker Walk -> Walker Downhill for those with a source), the
memory ceiling, the checkpoint round trip and deterministic evaluation, about 10 s
each on a 2-core CPU. The kill-and-resume check (three `coworld-bench run`
subprocesses, about 40 s per algorithm there) runs on ``KILL_RESUME``: the whole
model-free and LOMPO zoo (V-D4RL's backbone: drq-bc, cql; curl; d3rlpy's four, IQL with
the cosine schedule a resume must continue; lompo, lompo-finetune), CoWorld and an
ablation (coworld-no-value-constraint). The other DreamerV2-family algorithms get the
round trip (the next update identical after a weights-only checkpoint load, what a
resume rests on) and share CoWorld's checkpointing core; a full kill-and-resume of
each would add about 40 s apiece to the suite. Plugins:
tests/runner/test_third_party.py runs the kit in full on an installed one;
tests/runner/test_run_lifecycle.py kills and resumes bc.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from coworld_bench import registry
from coworld_bench.algorithm import Algorithm, TrainConfig
from coworld_bench.data import TransitionSampler
from coworld_bench.seeding import RandomStates
from coworld_bench.testing import CHECKS, ConformanceError, ConformanceWarning, check_algorithm

KILL_RESUME = ("drq-bc", "cql", "curl", "d3rlpy-bc", "d3rlpy-td3bc", "d3rlpy-cql", "d3rlpy-iql",
               "lompo", "lompo-finetune", "coworld", "coworld-no-value-constraint")
CHEAP = [c for c in CHECKS if c != "kill-resume"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs_out(tmp_path_factory):
    """Where the kill-resume checks leave their runs (the report test reads the
    uninterrupted ones)."""
    return tmp_path_factory.mktemp("conformance-runs")


@pytest.mark.parametrize("algo", registry.names())
def test_every_registered_algorithm_conforms(algo, data_root, runs_out):
    full = algo in KILL_RESUME
    report = check_algorithm(registry.get(algo), data_root=data_root,
                             checks=None if full else CHEAP, out=runs_out if full else None)
    assert report.passed == [c for c in CHECKS if full or c != "kill-resume"]
    assert report.metrics and not report.skipped


def test_report_names_the_resumed_algorithms_under_their_paper_names(runs_out, data_root, cli,
                                                                   tmp_path):
    """The report's tables and value-estimation figure cover the uninterrupted runs of
    the kill-resume checks (made here when this test runs alone)."""
    reference = runs_out / "reference"
    for algo in KILL_RESUME:
        if not list(reference.glob(f"*/{algo}/seed0/result.json")):
            check_algorithm(registry.get(algo), data_root=data_root, checks=["kill-resume"],
                            out=runs_out)
    result = cli("report", reference, "--out", tmp_path / "report", "--bootstrap-reps", "50")
    assert result.returncode == 0, result.stderr[-3000:]
    figures = tmp_path / "report" / "figures"
    table = (tmp_path / "report" / "tables" / "dmc_random_smoke.md").read_text()
    rows = {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")}
    ablations = {a for a in KILL_RESUME if registry.get(a).family == "ablation"}
    assert {registry.get(a).paper_name for a in set(KILL_RESUME) - ablations} <= rows
    # Ablations have their own figure beside CoWorld, and their names in the summary.
    ablated = (figures / "ablations_dmc_random_smoke.csv").read_text().splitlines()[1:]
    assert ablations | {"coworld"} <= {line.split(",")[0] for line in ablated}
    summary = (tmp_path / "report" / "README.md").read_text()
    assert all(registry.get(a).paper_name in summary for a in ablations)
    values = (figures / "value_estimation_dmc_random_smoke.csv").read_text().splitlines()[1:]
    traced = {line.split(",")[0] for line in values}
    assert {a for a in KILL_RESUME if registry.get(a).has_value} <= traced


# A small working plugin, and one broken copy of it per check ----------------------------

@dataclasses.dataclass
class MeanActionConfig(TrainConfig):
    """Attributes:
      lr: Adam's learning rate.
      batch: transitions per update.
    """

    lr: float = 0.1
    batch: int = 16


class MeanAction(Algorithm):
    """Acts the dataset's mean action, learned by Adam (not registered: the kit names
    it by its class)."""

    Config = MeanActionConfig
    presets = {"smoke": {}}
    paper_name = "Mean Action (test)"
    description = "test plugin: the dataset's mean action"

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.mean = torch.zeros(ctx.action_dim, requires_grad=True)
        self.optim = torch.optim.Adam([self.mean], lr=config.lr)
        self.sampler = TransitionSampler(ctx.dataset, config.batch, seed=ctx.seed)
        self.random = RandomStates(sampler=self.sampler.rng)

    def train_step(self, step):
        actions = torch.as_tensor(self.sampler.sample()["action"])
        loss = ((self.mean - actions) ** 2).mean()
        self.optim.zero_grad()
        loss.backward()
        self.optim.step()
        return {"loss": loss.detach()}

    def policy(self, obs, state, deterministic=True):
        return self.mean.detach().numpy().copy(), state

    def state_dict(self):
        return {"mean": self.mean.detach().clone(), "optim": self.optim.state_dict(),
                "random": self.random.state_dict()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.mean.copy_(state["mean"])
        self.optim.load_state_dict(state["optim"])
        self.random.load_state_dict(state["random"])


@dataclasses.dataclass
class UndocumentedConfig(MeanActionConfig):
    momentum: float = 0.9


class Undescribed(MeanAction):
    """No names for the tables, an undocumented setting, an unknown family."""

    Config = UndocumentedConfig
    paper_name = ""
    description = ""
    family = "offline"


class NonFinite(MeanAction):
    """Its second update's loss is NaN."""

    def train_step(self, step):
        metrics = super().train_step(step)
        return {"loss": float("nan") if step == 1 else float(metrics["loss"])}


class ForgetsOptimiser(MeanAction):
    """Its checkpoint holds the weights but not Adam's moments."""

    def state_dict(self):
        return {k: v for k, v in super().state_dict().items() if k != "optim"}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.mean.copy_(state["mean"])
        self.random.load_state_dict(state["random"])


class GlobalRandomPolicy(MeanAction):
    """Explores with numpy's global generator even when asked to act deterministically."""

    def policy(self, obs, state, deterministic=True):
        action, state = super().policy(obs, state, deterministic)
        return np.clip(action + np.random.normal(0, 0.3, action.shape), -1, 1), state


class MemoryHog(MeanAction):
    """Keeps 128 MB more with every update."""

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.kept = []

    def train_step(self, step):
        self.kept.append(np.ones(16 * 2**20))
        return super().train_step(step)


class ProcessLocalPolicy(MeanAction):
    """Acts further from the mean the more updates this process has made, a count no
    checkpoint holds: each instance is self-consistent, a resumed run is not."""

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.updates_here = 0

    def train_step(self, step):
        self.updates_here += 1
        return super().train_step(step)

    def policy(self, obs, state, deterministic=True):
        action, state = super().policy(obs, state, deterministic)
        return np.clip(action + 0.02 * self.updates_here, -1, 1), state


class FailsToBuild(MeanAction):
    """Nameless, and its constructor raises."""

    paper_name = ""

    def __init__(self, config, ctx):
        raise RuntimeError("no GPU here")


@pytest.fixture(scope="module")
def warm(data_root):
    """One smoke train of the working plugin first: the module's later memory
    measurements then see no first-time imports (simulators, EGL)."""
    return check_algorithm(MeanAction, data_root=data_root, checks=["smoke-train"])


def test_a_working_in_process_plugin_passes_and_says_why_kill_resume_is_skipped(warm,
                                                                                 data_root):
    names = registry.names()
    with pytest.warns(ConformanceWarning, match="kill and resume skipped"):
        report = check_algorithm(MeanAction, data_root=data_root)
    assert report.algo == "mean-action" and report.passed == CHEAP
    assert "not an entry point" in report.skipped["kill-resume"]
    assert "plugin_path" in report.skipped["kill-resume"]
    assert report.peak_memory_mb < 200 and set(report.seconds) == set(CHEAP)
    # The kit borrowed a name for its checks only.
    assert registry.names() == names and "name" not in MeanAction.__dict__


def test_metadata_names_every_missing_piece():
    with pytest.raises(ConformanceError) as caught:
        check_algorithm(Undescribed, checks=["metadata"])
    message = str(caught.value)
    assert caught.value.checks == ["metadata"] and message.startswith("metadata: ")
    for found, fix in [("paper_name is empty", "set paper_name"),
                       ("description is empty", "set description"),
                       ("docstring gives no meaning for momentum", "document each setting"),
                       ("family is 'offline'", "set family to one of model-based, model-free")]:
        assert f"{found}: {fix}" in message, (found, message)


def test_non_finite_metrics_fail_the_smoke_train(data_root):
    with pytest.raises(ConformanceError, match=r"^smoke train: update 1 returned loss=nan; "
                       r"train_step must return a dict of named finite scalars") as caught:
        check_algorithm(NonFinite, data_root=data_root, checks=["smoke-train", "round-trip"])
    assert caught.value.checks == ["smoke-train"]
    assert "round trip not run: the smoke train failed" in str(caught.value)


def test_a_checkpoint_without_the_optimiser_fails_the_round_trip(data_root):
    with pytest.raises(ConformanceError, match=r"^checkpoint round trip: after load_state_dict "
                       r"and one more update, state_dict\(\)\['mean'\] differs") as caught:
        check_algorithm(ForgetsOptimiser, data_root=data_root, checks=["round-trip"])
    assert "optimiser state and random generator" in str(caught.value)
    assert "coworld_bench.seeding.RandomStates" in str(caught.value)


def test_a_policy_drawing_from_numpys_global_generator_fails_evaluation(data_root):
    with pytest.raises(ConformanceError, match=r"^deterministic evaluation: two evaluations on "
                       r"the same seeds returned \[.*\] and \[.*\]; ") as caught:
        check_algorithm(GlobalRandomPolicy, data_root=data_root, checks=["evaluation"])
    assert "never from numpy's or Python's global ones" in str(caught.value)


def test_a_memory_hog_fails_the_ceiling(warm, data_root):
    with pytest.raises(ConformanceError, match=r"^memory ceiling: memory grew by \d+ MB over the "
                       r"build and 3 smoke updates .*above the ceiling of 200 MB; ") as caught:
        check_algorithm(MemoryHog, data_root=data_root, checks=["memory"], max_memory_mb=200)
    assert "raise max_memory_mb" in str(caught.value)


def test_a_plugin_whose_resumed_run_differs_fails_kill_resume(data_root, tmp_path):
    """The plugin is installed as pip would, its entry point naming this module (on the
    subprocess's path through plugin_path)."""
    assert ProcessLocalPolicy.__module__ == "tests.test_conformance"
    info = tmp_path / "process_local_policy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: process-local-policy\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[coworld_bench.algorithms]\n"
        "process-local-policy = tests.test_conformance:ProcessLocalPolicy\n")
    # Each instance alone is consistent: the in-process checks pass.
    check_algorithm(ProcessLocalPolicy, data_root=data_root, checks=["round-trip", "evaluation"])
    with pytest.raises(ConformanceError, match=r"^kill and resume: after a SIGKILL at update 5 "
                       r"and a re-run, the final evaluation returned \[.*\] instead of the "
                       r"uninterrupted run's \[.*\]; everything an update or the policy reads "
                       r"must come back from state_dict\(\)"):
        check_algorithm(ProcessLocalPolicy, data_root=data_root, checks=["kill-resume"],
                        plugin_path=[tmp_path, REPO], out=tmp_path / "runs")


def test_every_failed_check_is_listed_and_the_traceback_kept(data_root):
    with pytest.raises(ConformanceError) as caught:
        check_algorithm(FailsToBuild, data_root=data_root,
                        checks=["metadata", "smoke-train", "round-trip"])
    error = caught.value
    assert error.checks == ["metadata", "smoke-train"]
    lines = str(error).splitlines()
    assert lines[0] == "fails-to-build fails 2 conformance checks:"
    assert lines[1].startswith("- metadata: paper_name is empty: set paper_name")
    assert lines[2].startswith("- smoke train: building and training raised RuntimeError: "
                               "no GPU here; ")
    assert lines[3] == "(checkpoint round trip not run: the smoke train failed)"
    assert isinstance(error.__cause__, RuntimeError)  # pytest shows where it was raised


def test_unknown_checks_and_non_algorithms_are_refused():
    with pytest.raises(ValueError, match="Unknown checks resume; valid: metadata, smoke-train"):
        check_algorithm(MeanAction, checks=["resume"])
    with pytest.raises(TypeError, match="needs an Algorithm subclass"):
        check_algorithm(object)
