"""Offline-to-online fine-tuning: a TorchRL collector steps the env, one update per step.

``sorl-train online_steps=M`` runs, after the offline updates (or from another run's
checkpoint with ``init_from=...``), the released code's online loop (``--online_steps``,
docs/finetuning.md), for every algorithm:

1. a :class:`~torchrl.collectors.Collector` steps one env with the collecting policy
   (:func:`exploring_policy`: ``online.inference_steps`` and ``online.num_candidates``, the
   policy's own sampling noise; IQL's and ReBRAC's actors at ``online.temperature``), one
   step per iteration; the env's episodes are seeded ``online.env_seed + i``
   (:class:`~sorl_torchrl.envs.episode_seeds.EpisodeSeeds`);
2. the step goes into the online buffer in the TED layout
   (:class:`~sorl_torchrl.data.online.OnlineTransitions`);
3. one update on a batch of :class:`~sorl_torchrl.data.online.MixedBatches`
   (``online.balanced_sampling``).

The evaluation grid (``eval.*``, its own ``(k, N)``) runs before the online phase
(``online.eval_before``), every ``online.eval_interval`` steps and at the end. Logs go to the
``online`` group (``logs/online.csv``) at the run's update count (offline updates + online
steps). A checkpoint is written at the end of the first episode after each multiple of
``checkpoint_interval`` online steps, holding the online transitions and the episode count:
there the env is between episodes, so a run resumed from it collects the same transitions
and computes the same losses as one that never stopped. The final checkpoint, at
``online_steps``, may fall inside an episode: a run extended from it (a larger
``online_steps``) starts a new episode there.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import Collector
from torchrl.envs import Compose, ExplorationType, StepCounter, TransformedEnv
from tqdm import tqdm

from sorl_torchrl._validation import FLAG, SEED, Number, Settings
from sorl_torchrl.data.online import MixedBatches, OnlineTransitions
from sorl_torchrl.envs import EpisodeSeeds
from sorl_torchrl.envs.evaluate import cuda_devices
from sorl_torchrl.recipes.algorithms import AlgorithmModules
from sorl_torchrl.recipes.loggers import log_group
from sorl_torchrl.recipes.training_data import TrainingData

__all__ = ["ONLINE_SETTINGS", "OnlinePhase", "TemperedPolicy", "exploring_policy", "run_online"]

log = logging.getLogger("sorl.train")

#: ``online.*``: how the online phase collects, samples and evaluates.
ONLINE_SETTINGS = Settings(
    "online",
    {
        "balanced_sampling": FLAG,
        "inference_steps": Number(
            "[1, inf)", integer=True, optional=True, meaning="None: the largest eval k"
        ),
        "num_candidates": Number("[1, inf)", integer=True),
        "temperature": Number("[0, inf)", meaning="0: no exploration noise"),
        "eval_interval": Number("[0, inf)", integer=True, meaning="0: before and after only"),
        "eval_before": FLAG,
        "env_seed": Number("[0, 4294967295]", integer=True, optional=True),
        "max_episode_steps": Number(
            "[1, inf)", integer=True, optional=True, meaning="None: the env's time limit"
        ),
    },
)

#: The run seed's online episodes start at ``ENV_SEED_STRIDE * (seed + 1)`` (``env_seed: null``),
#: far from the evaluation's seeds (``eval.seed + i``).
ENV_SEED_STRIDE = 100_000


class TemperedPolicy(TensorDictModuleBase):
    """A policy with a ``temperature`` (IQL's, ReBRAC's actor) acting at a fixed temperature.

    Args:
        actor: the actor (its weights are shared, not copied).
        temperature: the sampling temperature (the released code explores at 1).

    Examples:
        >>> from tensordict import TensorDict
        >>> from sorl_torchrl.modules.baseline_actors import TanhActor
        >>> actor = TanhActor(3, 2, num_cells=(8,))
        >>> td = TensorDict(observation=torch.zeros(4, 3), batch_size=[4])
        >>> explore = TemperedPolicy(actor, 1.0)
        >>> bool((explore(td.clone())["action"] != actor(td.clone())["action"]).any())
        True
    """

    def __init__(self, actor: TensorDictModuleBase, temperature: float) -> None:
        super().__init__()
        self.actor = actor
        self.temperature = temperature
        self.in_keys, self.out_keys = list(actor.in_keys), list(actor.out_keys)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the action sampled at :attr:`temperature`."""
        return self.actor(tensordict, temperature=self.temperature)


def exploring_policy(
    modules: AlgorithmModules, inference_steps: int, num_candidates: int, temperature: float
) -> TensorDictModuleBase:
    """The collecting policy: the ``(k, N)`` sampler, with IQL/ReBRAC actors tempered.

    SORL's, flow BC's and FQL's policies explore with their own sampling noise; a policy with
    a ``temperature`` (evaluation: 0) samples at ``temperature``, as its ``N > 1`` candidates
    do (:class:`~sorl_torchrl.modules.best_of_n.BestOfNSampler`'s ``candidate_temperature``).
    """
    sampler = modules.sampler(inference_steps, num_candidates)
    if not hasattr(modules.policy, "temperature"):
        return sampler
    if num_candidates == 1:
        return TemperedPolicy(modules.policy, temperature)
    sampler.candidate_temperature = temperature
    return sampler


@dataclasses.dataclass
class OnlinePhase:
    """What the online loop needs from the training recipe.

    Attributes:
        cfg: the run's config.
        modules: the algorithm's modules (trained in place).
        data: the offline data and the env factory.
        logger: the run's TorchRL logger.
        offline_updates: the update count the online phase starts from.
        start: online steps already done (a resumed run's).
        transitions: the online buffer (a resumed run's, restored).
        evaluate: ``evaluate(step) -> grid rows`` at an update count.
        save: ``save(online_step)`` writes the checkpoint of the run at that online step.
        watch: ``watch(step)`` checks the recorded losses for divergence (raises or notes).
        record: ``record(step, info)`` records an update's losses for :attr:`watch`.
        progress: show a progress bar.
    """

    cfg: DictConfig
    modules: AlgorithmModules
    data: TrainingData
    logger: Any
    offline_updates: int
    start: int
    transitions: OnlineTransitions
    evaluate: Callable[[int], list[dict]]
    save: Callable[[int], None]
    watch: Callable[[], None]
    record: Callable[[int, Any], None]
    progress: bool = True


def collecting_steps(cfg: DictConfig, modules: AlgorithmModules) -> int:
    """``k`` of the collecting policy: ``online.inference_steps``, or the largest eval ``k``."""
    if cfg.online.inference_steps is not None:
        return int(cfg.online.inference_steps)
    return max(cfg.eval.inference_steps) if modules.has_steps else 1


def env_seed(cfg: DictConfig) -> int:
    """The seed of online episode 0: ``online.env_seed``, else from the run's seed."""
    if cfg.online.env_seed is not None:
        return int(cfg.online.env_seed)
    return SEED(ENV_SEED_STRIDE * (int(cfg.seed) + 1) % 2**32, "online.env_seed")


def run_online(phase: OnlinePhase) -> dict[str, Any]:
    """The online loop from ``phase.start`` to ``cfg.online_steps``; returns its summary."""
    cfg, modules = phase.cfg, phase.modules
    if phase.data.env_factory is None:
        raise ValueError(
            f"online_steps={cfg.online_steps}, but {phase.data.name} names no env to collect "
            "in: fine-tune on a dataset with an env (an OGBench one, or a Minari dataset "
            "recorded from a gymnasium env)."
        )
    total = int(cfg.online_steps)
    k, n = collecting_steps(cfg, modules), int(cfg.online.num_candidates)
    transforms = [EpisodeSeeds(env_seed(cfg), first_episode=phase.transitions.episodes)]
    if cfg.online.max_episode_steps is not None:  # a shorter time limit than the env's
        transforms.insert(0, StepCounter(max_steps=int(cfg.online.max_episode_steps)))
    env = TransformedEnv(phase.data.env_factory(num_envs=1), Compose(*transforms))
    policy = exploring_policy(modules, k, n, float(cfg.online.temperature))
    batches = MixedBatches(
        phase.data.train,
        phase.transitions,
        cfg.batch_size,
        balanced=bool(cfg.online.balanced_sampling),
    )
    if phase.start == 0 and cfg.online.eval_before:
        phase.evaluate(phase.offline_updates)
    log.info(
        "Online phase: %d env steps (from %d), collecting with k=%d, N=%d; batches %s.",
        total,
        phase.start,
        k,
        n,
        "half offline, half online" if cfg.online.balanced_sampling else "from all rows",
    )
    # Building a collector may run the policy once (to read its outputs): in a fork of the
    # random stream, so a resumed run draws what an uninterrupted one draws.
    with torch.random.fork_rng(devices=cuda_devices(policy)):
        collector = Collector(
            env,
            policy,
            frames_per_batch=1,
            total_frames=total - phase.start,
            exploration_type=ExplorationType.RANDOM,
            # the env is complete as built (the policies keep no recurrent state): the
            # collector must not append transforms that would change the transitions
            auto_register_policy_transforms=False,
        )
    try:
        summary = _loop(phase, collector, batches)
    finally:
        collector.shutdown()
    return {**summary, "inference_steps": k, "num_candidates": n}


def _loop(phase: OnlinePhase, collector: Collector, batches: MixedBatches) -> dict[str, Any]:
    cfg, update = phase.cfg, phase.modules.update
    total, interval = int(cfg.online_steps), int(cfg.checkpoint_interval)
    eval_interval = int(cfg.online.eval_interval)
    episode_return, finished = 0.0, []  # (return, success) of the episodes ended since a log
    save_pending = False
    bar = tqdm(
        total=total, initial=phase.start, desc="online", disable=not phase.progress, mininterval=1
    )
    tick, tick_step = time.perf_counter(), phase.start
    env_seconds, update_seconds = 0.0, 0.0
    started = time.perf_counter()
    collected = time.perf_counter()
    step = phase.start
    for transition in collector:
        env_seconds += time.perf_counter() - collected
        phase.transitions.add(transition)
        begin = time.perf_counter()
        info = update(batches.sample())
        update_seconds += time.perf_counter() - begin
        step += 1
        updates = phase.offline_updates + step
        phase.record(updates, info)
        episode_return += float(transition["next", "reward"].sum())
        if bool(transition["next", "done"].any()):
            success = transition.get(("next", "success"), None)
            finished.append((episode_return, None if success is None else bool(success.any())))
            episode_return = 0.0
        if interval and step % interval == 0 and step != total:
            save_pending = True  # at the end of this episode (the env is between episodes)
        if save_pending and bool(transition["next", "done"].any()):
            phase.watch()
            phase.save(step)
            save_pending = False
        log_now = step % cfg.log_interval == 0 or step == total
        eval_now = eval_interval and step % eval_interval == 0 and step != total
        if log_now or eval_now:
            phase.watch()
        if log_now:
            rate = (step - tick_step) / (time.perf_counter() - tick)
            tick, tick_step = time.perf_counter(), step
            metrics = {key: value.item() for key, value in info.items()}
            metrics |= _episode_metrics(finished, phase.transitions)
            metrics["env_steps_per_second"] = rate
            log_group(phase.logger, "online", metrics, updates)
            finished = []
            bar.set_postfix(episodes=phase.transitions.episodes, steps_per_s=f"{rate:.1f}")
        if eval_now:
            phase.evaluate(updates)
        bar.update()
        collected = time.perf_counter()
    bar.close()
    steps = step - phase.start
    seconds = time.perf_counter() - started
    return {
        "steps": step,
        "transitions": len(phase.transitions),
        "episodes": phase.transitions.episodes,
        "wall_time_s": seconds,
        "steps_per_second": steps / seconds if steps else None,
        "env_seconds": env_seconds,
        "update_seconds": update_seconds,
        "updates_per_second": steps / update_seconds if steps else None,
    }


def _episode_metrics(
    finished: list[tuple[float, bool | None]], transitions: OnlineTransitions
) -> dict[str, float]:
    """Episode count, and the mean return and success of the episodes ended since the last log."""
    metrics: dict[str, float] = {"episodes": float(transitions.episodes)}
    if finished:
        metrics["episode_return"] = sum(r for r, _ in finished) / len(finished)
        successes = [s for _, s in finished if s is not None]
        if successes:
            metrics["episode_success"] = sum(successes) / len(successes)
    return metrics
