"""The optimizer step of ``SORLUpdateStep``, eager against ``torch.compile``, side by side.

One step is what the update step does after each ``backward()``: the global gradient-norm
clip over actor and critic, the Adam step, and the target update (a ``foreach`` lerp). Three
ways, alternated within one process on the same parameters and gradients:

- ``eager``: ``clip_grad_norm_(foreach=True)``, fused Adam, ``_foreach_lerp_`` (what
  ``SORLUpdateStep`` runs);
- ``compiled_adam``: the same with ``torch.compile(optimizer.step)`` over a ``foreach`` Adam
  (inductor's compiled optimizer);
- ``compiled_step``: the clip, the step and the lerp in one ``torch.compile`` function (the
  optimizer's own graph breaks split it into three graphs).

Usage::

    python benchmarks/optimizer_step.py --sizes paper demo --threads 2 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    ACTION_DIM,
    OBSERVATION_DIM,
    SIZES,
    machine_info,
    print_table,
    result_path,
    summary,
    time_calls,
    write_report,
)
from torch import nn  # noqa: E402

from sorl_torchrl import QEnsemble, ShortcutActor  # noqa: E402

KINDS = ("eager", "compiled_adam", "compiled_step")


def make_steps(cells: tuple[int, ...], device: str) -> dict:
    torch.manual_seed(0)
    actor = ShortcutActor(OBSERVATION_DIM, ACTION_DIM, num_cells=cells).to(device)
    critic = QEnsemble(OBSERVATION_DIM, ACTION_DIM, num_cells=cells).to(device)
    params = list(actor.parameters()) + list(critic.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    targets = [p.detach().clone() for p in params]
    sources = [p.detach() for p in params]

    def clip() -> None:
        nn.utils.clip_grad_norm_(params, 1.0, foreach=True)

    def lerp() -> None:
        torch._foreach_lerp_(targets, sources, 0.005)

    fused = torch.optim.Adam(params, lr=1e-4, fused=True)
    foreach = torch.optim.Adam(params, lr=1e-4, foreach=True)
    compiled_adam = torch.compile(foreach.step)
    both = torch.optim.Adam(params, lr=1e-4, foreach=True)

    def eager() -> None:
        clip()
        fused.step()
        lerp()

    def with_compiled_adam() -> None:
        clip()
        compiled_adam()
        lerp()

    @torch.compile
    def compiled_step() -> None:
        with torch.no_grad():
            clip()
            both.step()
            lerp()

    return {"eager": eager, "compiled_adam": with_compiled_adam, "compiled_step": compiled_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="output file (default: results/)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results, rows = [], []
    for size in args.sizes:
        steps = make_steps(SIZES[size], args.device)
        for fn in steps.values():  # compile and warm up every kind first
            fn()
            fn()
        per_kind: dict[str, list[float]] = {kind: [] for kind in KINDS}
        cpu: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for _ in range(args.rounds):  # the kinds alternate within every round
            for kind in KINDS:
                wall, used = time_calls(lambda _i, f=steps[kind]: f(), args.device, 1, args.calls)
                per_kind[kind] += wall
                cpu[kind] += used
        eager_ms = None
        for kind in KINDS:
            stats = summary(per_kind[kind], cpu[kind])
            results.append({"size": size, "mode": kind, **stats})
            eager_ms = eager_ms or stats["ms_median"]
            ratio = stats["ms_median"] / eager_ms
            rows.append([size, kind, f"{stats['ms_median']:.2f}", f"{ratio:.2f}x"])
    table = print_table(["size", "step", "ms per step (median)", "time vs eager"], rows)
    write_report(
        args.json or result_path("optimizer_step", args.device),
        machine_info(args.device),
        results,
        table,
    )


if __name__ == "__main__":
    main()
