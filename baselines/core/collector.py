"""An online learner's simulator in a worker process, stepping in lockstep with the updates.

``CollectorWorker`` holds the learner's env, its ``Driver`` and a CPU copy of the
acting part of its agent (encoder, RSSM, actor) in a spawned process. For each update
the learner copies its current policy weights into shared memory, asks the worker
for ``train_every`` env steps, runs its own update while the simulator steps, then
adds the episodes that finished to its replay. The number of env steps per update
stays ``train_every``, and checkpoints are taken between updates, when nothing is in
flight. The worker's driver counters and random generators travel with the learner's
checkpoint, so a resumed run collects what an uninterrupted one does.

What asynchronous collection changes, against collecting in the learner's process
(``collect_worker=off``; the documented effect, deterministic under a seed either
way):

- Online DreamerV2 and source pretraining (``OnlineLearner.step``) collect with the
  same policy as before, but update k no longer sees the steps collected for it: they
  enter the replay after update k (one update late).
- CoWorld's source stage collected after its source update, with the updated policy;
  now the steps run during the update, with the policy of the update before.
- Exploration noise and the prefill's random actions come from the worker's own
  generators (seeded from the run seed), not from the learner process's.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

POLICY_PARTS = ("wm.encoder.", "wm.rssm.", "ac.actor.")
COLLECT_STREAM = 1_000_037  # the worker's torch generator (exploration noise)


def policy_weights(agent) -> dict[str, torch.Tensor]:
    """The tensors acting needs: encoder, RSSM and actor (parameters and buffers)."""
    return {k: v for k, v in agent.state_dict().items() if k.startswith(POLICY_PARTS)}


def load(agent, shared: dict[str, torch.Tensor]) -> None:
    """The shared policy weights into the worker's agent (every policy tensor)."""
    missing, unexpected = agent.load_state_dict(shared, strict=False)
    if unexpected or any(k.startswith(POLICY_PARTS) for k in missing):
        raise RuntimeError(f"policy weights do not match the worker's agent (missing "
                           f"{sorted(missing)}, unexpected {sorted(unexpected)})")


def _worker(pipe, make_env: Callable, cfg, action_dim: int, state_dim, seed: int,
            shared: dict[str, torch.Tensor]) -> None:
    from baselines.core.agent import DreamerAgent
    from coworld_bench.data.replay import Driver
    from coworld_bench.seeding import RandomStates, derive_seed

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    torch.manual_seed(derive_seed(seed, COLLECT_STREAM))
    agent = DreamerAgent(cfg, action_dim, torch.device("cpu"), seed, state_dim=state_dim)
    agent.eval()
    explore = np.random.default_rng([seed, 77])
    finished: list[dict] = []
    env = make_env()
    driver = Driver(env, seed, finished.append)
    rngs = RandomStates(explore=explore, torch=torch.default_generator)

    def random_policy(obs, state):
        return explore.uniform(-1, 1, action_dim).astype(np.float32), state

    def agent_policy(obs, state):
        return agent.act(obs, state, deterministic=False)

    try:
        while True:
            command, arg = pipe.recv()
            try:
                if command == "close":
                    break
                if command == "collect":
                    steps, random = arg
                    if not random:
                        load(agent, shared)
                    driver.step(random_policy if random else agent_policy, steps)
                    pipe.send((True, list(finished)))
                    finished.clear()
                elif command == "act":  # the learner's check that the weights arrived
                    load(agent, shared)
                    obs, draw_seed = arg
                    with torch.random.fork_rng():  # the collection's draws stay untouched
                        torch.manual_seed(draw_seed)
                        action = agent.act(obs, None, deterministic=True)[0]
                    pipe.send((True, action))
                elif command == "state":
                    pipe.send((True, {"driver_episodes": driver.episodes,
                                      "rngs": rngs.state_dict()}))
                elif command == "load":
                    driver.episodes = int(arg["driver_episodes"])
                    driver.obs = None  # the episode in progress is started afresh
                    if "rngs" in arg:
                        rngs.load_state_dict(arg["rngs"])
                    pipe.send((True, None))
                else:
                    pipe.send((False, f"unknown command {command!r}"))
            except Exception as e:  # noqa: BLE001 - reported to the learner
                pipe.send((False, f"{type(e).__name__}: {e}"))
    finally:
        env.close()


class CollectorWorker:
    """``make_env`` (picklable) and a copy of ``agent``'s policy in a worker process;
    ``start(steps, random)`` then ``finish()`` around each update."""

    def __init__(self, make_env: Callable, agent, seed: int):
        ctx = torch.multiprocessing.get_context("spawn")
        live = policy_weights(agent)
        self._live = live
        self._shared = {k: v.detach().to("cpu", copy=True).share_memory_() for k, v in live.items()}
        self._pipe, child = ctx.Pipe()
        self._process = ctx.Process(
            target=_worker, args=(child, make_env, agent.cfg, agent.action_dim, agent.state_dim,
                                  seed, self._shared), daemon=True)
        self._process.start()
        child.close()
        self._pending = False

    def _receive(self):
        from coworld_bench.evaluation import receive_reply

        return receive_reply(self._pipe, self._process, "The collection worker")

    def start(self, steps: int, random: bool) -> None:
        """The next ``steps`` env steps, with the agent's current policy (or random
        actions), run while the caller goes on."""
        if self._pending:
            raise RuntimeError("start() twice without finish().")
        if not random:
            self._share()
        self._pipe.send(("collect", (int(steps), bool(random))))
        self._pending = True

    def finish(self) -> list[dict[str, np.ndarray]]:
        """Waits for the steps of ``start``; the episodes that finished in them."""
        if not self._pending:
            return []
        self._pending = False
        return self._receive()

    def act(self, obs: dict, seed: int) -> np.ndarray:
        """The worker's deterministic action for ``obs`` from a fresh state, with the
        agent's current weights (what ``start`` hands over) and torch seeded with
        ``seed`` for the posterior's latent draw."""
        if self._pending:
            raise RuntimeError("act() while steps are in flight; finish() first.")
        self._share()
        self._pipe.send(("act", (obs, int(seed))))
        return self._receive()

    def _share(self) -> None:
        with torch.no_grad():
            for name, tensor in self._shared.items():
                tensor.copy_(self._live[name])

    def state(self) -> dict:
        if self._pending:  # checkpoints are taken between updates
            raise RuntimeError("state() while steps are in flight; finish() first.")
        self._pipe.send(("state", None))
        return self._receive()

    def load(self, state: dict) -> None:
        self._pipe.send(("load", state))
        self._receive()

    def close(self) -> None:
        if self._process is None:
            return
        try:
            self._pipe.send(("close", None))
        except (BrokenPipeError, OSError):
            pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
        self._process = None
