"""DreamerV2, online: the agent that pretrains sources and makes the paper's datasets.

It interacts with one task (``--target``): ``prefill`` random env steps, then per
update ``train_every`` env steps with the exploring actor (sampled actions) followed
by one world-model and one actor-critic update on replay sequences. Finished episodes
go to the run's replay directory in the dataset format, so a restarted run reloads
its replay (the episode in progress at a kill is started afresh).
"""

from __future__ import annotations



from baselines.core.online import DreamerV2Config, OnlineLearner
from baselines.core.agent import DreamerAgent
from baselines.core.config import QUICK_MODEL, SMOKE_MODEL
from coworld_bench.algorithm import Algorithm, RunContext
from coworld_bench.registry import register



class DreamerV2Behaviour:
    """The paper's dataset behaviour (``coworld_bench.data.behaviours``): the
    ``dreamerv2`` algorithm at a preset, learning online; its finished training
    episodes land in ``replay_dir``."""

    def __init__(self, env, replay_dir, seed: int, preset: str, overrides: dict):
        import torch

        config = DreamerV2.make_config(preset, overrides)
        torch.manual_seed(seed)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        agent = DreamerAgent(config, env.action_space.shape[0], device, seed,
                             state_dim=env.observation_space["state"].shape[0])
        self.learner = OnlineLearner(agent, lambda: env, replay_dir, seed, config,
                                     worker=False)

    @property
    def returns(self) -> list[float]:
        return self.learner.replay.returns

    def step(self) -> None:
        self.learner.step()


@register("dreamerv2")
class DreamerV2(Algorithm):
    Config = DreamerV2Config
    description = "DreamerV2 trained online on one task (source pretraining, dataset behaviour)."
    needs_dataset = False
    needs_target_env = True
    has_value = True
    paper_name = "DreamerV2 (online)"
    family = "model-based"
    presets = {
        "smoke": dict(SMOKE_MODEL, prefill=60, train_every=5, train_steps=20),
        "quick": dict(QUICK_MODEL, prefill=2_500, train_every=5, train_steps=4_000,
                      eval_every=1_000),
    }

    def sequence_shape(self):
        return self.config.batch_size, self.config.seq_len

    def __init__(self, config: DreamerV2Config, ctx: RunContext):
        super().__init__(config, ctx)
        self.agent = DreamerAgent(config, ctx.action_dim, ctx.device, ctx.seed,
                                  state_dim=ctx.state_dim, compile_backend=ctx.compile_backend)
        self.learner = OnlineLearner(self.agent, ctx.make_target_env,
                                     ctx.artifacts.path("replay"), ctx.seed, config)

    def train_step(self, step):
        return self.learner.step()

    def policy(self, obs, state, deterministic=True):
        return self.agent.act(obs, state, deterministic)

    def value(self, obs, state):
        return self.agent.value_of(state)

    def predicted_reward(self, obs, state):
        return self.agent.reward_of_state(state)

    def state_dict(self):
        return {"agent": self.agent.full_state(), "learner": self.learner.state()}

    def load_state_dict(self, state):
        self.agent.load_full_state(state["agent"])
        self.learner.load(state["learner"])

    def close(self):
        self.learner.close()
