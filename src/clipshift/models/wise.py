"""Weight-space ensembling (WiSE-FT, Wortsman et al. 2022): θ(α) = (1 − α)·θ_zero-shot + α·θ_fine-tuned.

Both state dicts must come from the same architecture: the same keys, and per key the same shape
and dtype; anything else is a ValueError that names the mismatching keys. Floating-point tensors
(weights, the head, BatchNorm running statistics) are interpolated with ``torch.lerp``, which is
exact at both ends (α = 0 gives θ_zero-shot and α = 1 gives θ_fine-tuned bit for bit). Integer
tensors are counters, not weights (BatchNorm's ``num_batches_tracked``): they are taken from the
nearer endpoint (θ_zero-shot for α < 0.5, θ_fine-tuned otherwise), so the endpoints stay exact;
they do not change an evaluation-mode forward pass.
"""

from __future__ import annotations

from typing import Mapping

import torch

MAX_NAMED = 5  # mismatching keys named in an error message


def _named(keys: list[str]) -> str:
    return ", ".join(keys[:MAX_NAMED]) + (f" and {len(keys) - MAX_NAMED} more" if len(keys) > MAX_NAMED else "")


def check_compatible(zero_shot: Mapping[str, torch.Tensor], fine_tuned: Mapping[str, torch.Tensor]) -> None:
    """ValueError unless the two state dicts have the same keys, shapes and dtypes (the message
    names what differs), i.e. unless they are two sets of weights of one architecture."""
    only_zs = sorted(set(zero_shot) - set(fine_tuned))
    only_ft = sorted(set(fine_tuned) - set(zero_shot))
    if only_zs or only_ft:
        parts = [f"only in the zero-shot model: {_named(only_zs)}" if only_zs else "",
                 f"only in the fine-tuned model: {_named(only_ft)}" if only_ft else ""]
        raise ValueError("cannot interpolate checkpoints with different keys (not the same architecture); "
                         + "; ".join(p for p in parts if p))
    shapes = [f"{k} {tuple(zero_shot[k].shape)} vs {tuple(fine_tuned[k].shape)}" for k in sorted(zero_shot)
              if zero_shot[k].shape != fine_tuned[k].shape]
    if shapes:
        raise ValueError(f"cannot interpolate checkpoints whose tensors differ in shape: {_named(shapes)}")
    dtypes = [f"{k} {zero_shot[k].dtype} vs {fine_tuned[k].dtype}" for k in sorted(zero_shot)
              if zero_shot[k].dtype != fine_tuned[k].dtype]
    if dtypes:
        raise ValueError(f"cannot interpolate checkpoints whose tensors differ in dtype: {_named(dtypes)}")


def interpolate_weights(zero_shot: Mapping[str, torch.Tensor], fine_tuned: Mapping[str, torch.Tensor],
                        alpha: float) -> dict[str, torch.Tensor]:
    """θ(α) = (1 − α)·`zero_shot` + α·`fine_tuned` for every tensor (see the module doc for integer
    tensors and exactness); `alpha` must lie in [0, 1]."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    check_compatible(zero_shot, fine_tuned)
    out = {}
    for key, start in zero_shot.items():
        end = fine_tuned[key]
        if start.is_floating_point():
            out[key] = torch.lerp(start, end.to(start.device), float(alpha))
        else:
            out[key] = (start if alpha < 0.5 else end).clone()
    return out
