"""The core every algorithm of the zoo is built from; algorithm files import from here
(and from ``coworld_bench``), never from one another (a variant may subclass its base).

- ``optim``: ``optimize``, the one update rule of every torch algorithm (named loss
  terms with scales, a precision, each part's optimiser and clip rule).
- DreamerV2 family: ``config`` (``DreamerConfig``, the smoke/quick model sizes),
  ``world_model`` (RSSM and heads), ``conv`` (image encoder/decoder and their CPU
  kernels), ``actor_critic`` (the ``trunc_normal`` actor, critic, imagination),
  ``losses`` (lambda-returns, KL, EWC's Fisher), ``agent`` (``DreamerAgent``),
  ``compile`` (torch.compile with an eager fallback).
- Online learning: ``online`` (``OnlineLearner`` and its config), ``collector`` (the
  simulator in a worker process), ``schedules`` (the paper's lengths, env steps to
  updates, linear decay).
- Model-free heads: ``drq`` (DrQ-v2's actor, twin critic, initialisation, TD, TD3+BC
  and CQL losses) and ``nets`` (the DrQ encoder, frame stacks, random shifts, MLPs,
  soft updates, Adam).
"""
