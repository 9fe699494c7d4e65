r"""The whole control step of a trained policy as a ``torch.export`` program (``.pt2``).

The program holds one :meth:`VerifierSampler.select <sorl_torchrl.VerifierSampler.select>`
call at a fixed ``(k, N)`` and batch size: the ``N`` candidates, their ``k`` Euler steps, the
critic's scores and the argmax. It is a plain ``torch.export`` file:
``torch.export.load(path).module()`` runs it in a process that imports nothing of this
package, and ``torch._inductor.aoti_compile_and_package`` turns it into an AOTInductor
package for a C++ or Python runtime (``sorl-export --aoti``).

Inputs and output (``B`` the batch, ``N`` the candidates)::

    noise="input":   program(observation [B, obs], noise [B, N, act]) -> action [B, act]
    noise="sample":  program(observation [B, obs]) -> action [B, act]

With ``noise="input"`` the caller passes the candidates' standard-normal starting points,
exactly what the eager sampler takes, so the same noise gives the same actions; with
``noise="sample"`` the program draws them with ``torch.randn`` from its runtime's default
generator (seed it with ``torch.manual_seed``). The file also carries a JSON description
(:data:`METADATA_NAME`: sizes, ``k``, ``N``, the noise mode, the checkpoint it came from),
read back by :func:`load_program`.

    sorl-export runs/.../checkpoint.pt --inference-steps 8 --num-candidates 16 \
        --batch 1 --out policy.pt2 [--aoti policy_aoti.pt2] [--latency]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sorl_torchrl._cli import (
    EXIT_FAILURE,
    EXIT_STATUS_HELP,
    UserError,
    add_debug_option,
    console_command,
)
from sorl_torchrl._io import atomic_write
from sorl_torchrl._validation import check_power_of_two
from sorl_torchrl.deploy.latency import measure_latency, set_threads
from sorl_torchrl.deploy.load import TrainedNetworks, load_networks
from sorl_torchrl.modules import VerifierSampler
from sorl_torchrl.scaling import markdown_table

__all__ = [
    "METADATA_NAME",
    "NOISE_MODES",
    "PROGRAM_FORMAT",
    "ExportError",
    "ExportedPolicy",
    "PolicyStep",
    "export_policy",
    "build_parser",
    "load_program",
    "main",
]

#: The ``format`` of an exported program's metadata.
PROGRAM_FORMAT = "sorl-torchrl-policy/1"
#: The name of the metadata JSON among the program file's extra files.
METADATA_NAME = "sorl_torchrl.json"
#: Where the candidates' starting noise comes from: an input, or drawn inside the program.
NOISE_MODES = ("input", "sample")


class ExportError(RuntimeError):
    """``torch.export`` (or AOTInductor) could not turn the policy step into a program.

    ``sorl-export`` prints its message without a traceback and exits with status 1.
    """


class _ExportFailed(UserError):
    """An :class:`ExportError` as the command reports it: the message, exit status 1."""

    exit_code = EXIT_FAILURE


class PolicyStep(nn.Module):
    """One control step of a :class:`VerifierSampler` as a module of tensors (what is exported).

    Args:
        sampler: the sampler, with the ``k`` and ``N`` to export.
        noise: ``"input"`` (``forward(observation, noise)``) or ``"sample"``
            (``forward(observation)``, noise drawn inside).

    Examples:
        >>> from sorl_torchrl import QEnsemble, ShortcutActor
        >>> sampler = VerifierSampler(ShortcutActor(3, 2, num_cells=(8,)),
        ...                           QEnsemble(3, 2, num_cells=(8,)), 4, 2)
        >>> step = PolicyStep(sampler)
        >>> observation, noise = step.example_inputs(batch=5)
        >>> noise.shape, step(observation, noise).shape
        (torch.Size([5, 4, 2]), torch.Size([5, 2]))
    """

    def __init__(self, sampler: VerifierSampler, *, noise: str = "input") -> None:
        super().__init__()
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}, got {noise!r}.")
        self.sampler = sampler
        self.noise = noise

    def forward(self, observation: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The selected action ``[B, act]`` (see :meth:`sorl_torchrl.VerifierSampler.select`)."""
        sampler = self.sampler
        action, _, _ = sampler.select(
            observation, sampler.num_candidates, sampler.inference_steps, noise
        )
        return action

    def example_inputs(self, batch: int) -> tuple[torch.Tensor, ...]:
        """Zero inputs of the program's shapes for ``batch`` observations (on its device)."""
        actor = self.sampler.actor
        device = next(actor.parameters()).device
        observation = torch.zeros(batch, actor.observation_dim, device=device)
        if self.noise == "sample":
            return (observation,)
        noise = torch.zeros(batch, self.sampler.num_candidates, actor.action_dim, device=device)
        return observation, noise


@dataclass(frozen=True)
class ExportedPolicy:
    """What :func:`export_policy` wrote.

    Attributes:
        path: the ``torch.export`` program.
        size_bytes: its size.
        metadata: the JSON it carries (see :func:`load_program`).
        aoti_path: the AOTInductor package, if one was asked for.
    """

    path: Path
    size_bytes: int
    metadata: dict[str, Any]
    aoti_path: Path | None = None


def _check_step_settings(inference_steps: int, num_candidates: int, batch: int) -> None:
    check_power_of_two(inference_steps)
    for name, value in (("num_candidates", num_candidates), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def export_policy(
    source: str | os.PathLike | TrainedNetworks,
    out: str | os.PathLike,
    *,
    inference_steps: int,
    num_candidates: int,
    batch: int = 1,
    noise: str = "input",
    device: str | torch.device = "cpu",
    aoti: str | os.PathLike | None = None,
) -> ExportedPolicy:
    """Export the policy step of a checkpoint at ``(k, N)`` and ``batch`` as a ``.pt2`` file.

    Args:
        source: a checkpoint path, or networks already loaded (:func:`load_networks`).
        out: the program file to write (atomically).
        inference_steps: ``k`` (a power of two).
        num_candidates: ``N`` (at least 1; ``N = 1`` has no critic call).
        batch: observations per call (the program's fixed batch size).
        noise: ``"input"`` or ``"sample"`` (see the module docs).
        device: where the program runs (a checkpoint is loaded there).
        aoti: also write an AOTInductor package there (compiles C++: a minute or more).

    Raises:
        ValueError: a bad ``k`` (not a power of two), ``N``, ``batch``, noise mode or device;
            checked before anything is loaded or traced.
        CheckpointError: the checkpoint cannot be loaded as a policy.
        ExportError: ``torch.export`` or AOTInductor failed (the message says which).

    Examples:
        >>> import tempfile, pathlib
        >>> from sorl_torchrl.checkpoint import save_checkpoint
        >>> from sorl_torchrl.deploy import build_sorl_modules
        >>> config = {"sizes": {"observation_dim": 3, "action_dim": 2},
        ...           "network": {"actor_cells": [16], "critic_cells": [16], "num_critics": 2,
        ...                       "critic_layer_norm": True, "condition_on_steps": True,
        ...                       "step_feature": "steps"}}
        >>> _, _, loss = build_sorl_modules(config)
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> _ = save_checkpoint(tmp / "ckpt.pt", {"config": config, "loss": loss.state_dict()})
        >>> exported = export_policy(tmp / "ckpt.pt", tmp / "policy.pt2", inference_steps=4,
        ...                          num_candidates=8, batch=2)
        >>> program = torch.export.load(exported.path).module()
        >>> program(torch.zeros(2, 3), torch.randn(2, 8, 2)).shape
        torch.Size([2, 2])
        >>> try:
        ...     export_policy(tmp / "ckpt.pt", tmp / "bad.pt2", inference_steps=3,
        ...                   num_candidates=8)
        ... except ValueError as err:
        ...     print(err)
        inference_steps must be a positive power of two (1, 2, 4, 8, ...), got 3. ...
    """
    _check_step_settings(inference_steps, num_candidates, batch)
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}, got {noise!r}.")
    networks = (
        source if isinstance(source, TrainedNetworks) else load_networks(source, device=device)
    )
    step = PolicyStep(networks.sampler(inference_steps, num_candidates), noise=noise).eval()
    inputs = step.example_inputs(batch)
    try:
        program = torch.export.export(step, inputs)
    except Exception as err:  # noqa: BLE001 - any tracing failure is reported in one line
        raise ExportError(
            f"torch.export could not trace the policy step ({_first_line(err)}). The networks "
            "must be traceable without data-dependent Python control flow."
        ) from err
    actor = networks.actor
    metadata = {
        "format": PROGRAM_FORMAT,
        "inference_steps": inference_steps,
        "num_candidates": num_candidates,
        "batch": batch,
        "noise": noise,
        "inputs": {"observation": [batch, actor.observation_dim]}
        | ({"noise": [batch, num_candidates, actor.action_dim]} if noise == "input" else {}),
        "output": {"action": [batch, actor.action_dim]},
        "dtype": str(inputs[0].dtype).removeprefix("torch."),
        "device": str(inputs[0].device),
        "q_agg": networks.q_agg,
        "checkpoint": str(networks.path),
        "checkpoint_step": networks.step,
        "torch": torch.__version__,
    }
    out = Path(out)
    with atomic_write(out, "wb") as handle:
        torch.export.save(program, handle, extra_files={METADATA_NAME: json.dumps(metadata)})
    aoti_path = None if aoti is None else _write_aoti(program, Path(aoti))
    return ExportedPolicy(out, out.stat().st_size, metadata, aoti_path)


def _write_aoti(program: torch.export.ExportedProgram, path: Path) -> Path:
    """Compile ``program`` into an AOTInductor package at ``path`` (atomically)."""
    from torch._inductor import aoti_compile_and_package

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.pt2")
    try:
        aoti_compile_and_package(program, package_path=str(tmp))
        os.replace(tmp, path)
    except Exception as err:  # noqa: BLE001 - the compiler's failure, in one line
        raise ExportError(
            f"AOTInductor could not compile the program ({_first_line(err)}). It needs a C++ "
            "compiler; the .pt2 program itself was written and runs without one."
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_program(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """An exported policy program and its metadata (what :func:`export_policy` wrote).

    Returns:
        ``(program, metadata)``: the ``torch.export.ExportedProgram`` (call
        ``program.module()(*inputs)``) and the JSON description it carries.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a program written by :func:`export_policy`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No exported program at {path}.")
    extra = {METADATA_NAME: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path} is not a torch.export program ({_first_line(err)}).") from err
    try:
        metadata = json.loads(extra[METADATA_NAME])
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict) or metadata.get("format") != PROGRAM_FORMAT:
        raise ValueError(f"{path} is a torch.export program, but not one sorl-export wrote.")
    return program, metadata


# --------------------------------------------------------------------------- command line


def _same_noise_inputs(
    metadata: dict[str, Any], num_actions: int, seed: int
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Random program inputs, and the noise the program sees with them (drawn the same way)."""
    device = torch.device(metadata["device"])
    batch, candidates = metadata["batch"], metadata["num_candidates"]
    generator = torch.Generator().manual_seed(seed)
    observation = torch.randn(metadata["inputs"]["observation"], generator=generator).to(device)
    if metadata["noise"] == "input":
        noise = torch.randn(batch, candidates, num_actions, generator=generator).to(device)
        return (observation, noise), noise
    # The program draws torch.randn(B, N, act) from the default generator, seeded by the caller.
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        noise = torch.randn(batch, candidates, num_actions, device=device)
    return (observation,), noise


def _report(exported: ExportedPolicy, networks: TrainedNetworks, args: argparse.Namespace) -> None:
    """Load the program back, check it against the eager sampler, and time it if asked."""
    start = time.perf_counter()
    program, metadata = load_program(exported.path)
    module = program.module()
    load_s = time.perf_counter() - start
    print(f"Wrote {exported.path} ({exported.size_bytes / 1e6:.2f} MB); loads in {load_s:.2f} s.")
    sampler = networks.sampler(args.inference_steps, args.num_candidates)
    inputs, noise = _same_noise_inputs(metadata, networks.actor.action_dim, seed=0)
    observation = inputs[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # what the program draws with noise="sample"
        exported_action = module(*inputs)
    eager_action = sampler.select(observation, noise=noise)[0]
    diff = (exported_action - eager_action).abs().max().item()
    print(f"Program vs eager sampler, same noise: max |action difference| {diff:.2e}")
    if not args.latency:
        return
    calls = {"exported program": lambda: module(*inputs)}
    if exported.aoti_path is not None:
        from torch._inductor import aoti_load_package

        runner = aoti_load_package(str(exported.aoti_path))
        calls["AOTInductor package"] = lambda: runner(*inputs)
    compiled = networks.sampler(args.inference_steps, args.num_candidates, compile=True)
    calls["eager sampler"] = lambda: sampler.select(observation, noise=noise)
    calls["compiled sampler"] = lambda: compiled.select(observation, noise=noise)
    rows = []
    for name, call in calls.items():
        latency = measure_latency(call, networks.device, repeats=args.repeats)
        timings = (latency.median_ms, latency.p99_ms)
        rows.append([name, *(f"{t:.3f}" for t in timings), f"{latency.first_call_s:.2f}"])
    print(
        f"\nOne step, k={args.inference_steps}, N={args.num_candidates}, batch {args.batch}, "
        f"{networks.device}, {torch.get_num_threads()} threads, {args.repeats} calls:"
    )
    print(markdown_table(["", "median ms", "p99 ms", "first call s"], rows))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sorl-export``."""
    parser = argparse.ArgumentParser(
        prog="sorl-export",
        description="Export a trained policy's whole step as a torch.export program.",
        epilog=EXIT_STATUS_HELP.replace("1 a failed check", "1 a failed export"),
    )
    parser.add_argument("checkpoint", type=Path, help="a checkpoint.pt written by sorl-train")
    parser.add_argument(
        "--inference-steps", "-k", type=int, required=True, help="Euler steps k, a power of two"
    )
    parser.add_argument(
        "--num-candidates", "-n", type=int, required=True, help="verifier candidates N (>= 1)"
    )
    parser.add_argument(
        "--batch", type=int, default=1, help="observations per call, fixed in the program"
    )
    parser.add_argument("--out", type=Path, required=True, help="the .pt2 program to write")
    parser.add_argument(
        "--noise",
        choices=NOISE_MODES,
        default="input",
        help="input: the candidates' noise is an input (default); sample: drawn inside",
    )
    parser.add_argument("--device", default="cpu", help="where the program runs (default: cpu)")
    parser.add_argument(
        "--aoti", type=Path, default=None, help="also write an AOTInductor package there"
    )
    parser.add_argument(
        "--latency",
        action="store_true",
        help="also time the program against the eager and the compiled sampler",
    )
    parser.add_argument(
        "--repeats", type=int, default=200, help="timed calls with --latency (default: 200)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    return add_debug_option(parser)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``sorl-export``."""
    return build_parser().parse_args(argv)


@console_command("sorl-export")
def main(argv: list[str] | None = None) -> int:
    """``sorl-export``: 0 on success, 1 when the export fails, 2 for bad input."""
    args = parse_args(argv)
    if args.threads is not None:
        set_threads(args.threads)
    _check_step_settings(args.inference_steps, args.num_candidates, args.batch)
    networks = load_networks(args.checkpoint, device=args.device)
    try:
        exported = export_policy(
            networks,
            args.out,
            inference_steps=args.inference_steps,
            num_candidates=args.num_candidates,
            batch=args.batch,
            noise=args.noise,
            aoti=args.aoti,
        )
    except ExportError as err:
        raise _ExportFailed(str(err)) from err
    _report(exported, networks, args)
    if exported.aoti_path is not None:
        print(f"Wrote the AOTInductor package {exported.aoti_path}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
