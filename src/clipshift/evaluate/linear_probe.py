"""Linear probe: multinomial logistic regression on frozen image features.

The "adapt to the task" classifier of Radford et al. (2021): the image tower is frozen and only a
linear layer is fitted, by full-batch L-BFGS on the L2-regularised cross-entropy (the objective of
scikit-learn's ``LogisticRegression``, without the extra dependency). Small feature sets (the
embedded world, cached ImageNet features of a few hundred thousand rows) fit in memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                     weight_decay: float = 1e-4, max_iter: int = 300, normalize: bool = True,
                     init: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``logits = f @ W.T + b`` to (features (N, D), labels (N,)); return (W (C, D), b (C,)).

    `weight_decay` is the L2 penalty on W (per example, as in the mean cross-entropy).
    `normalize`: L2-normalise the features first (CLIP's features live on the sphere); the
    caller must then normalise features the same way at prediction time (:func:`probe_logits`).
    `init`: warm start (W, b), e.g. a zero-shot head times the logit scale.
    """
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise ValueError(f"expected features (N, D) and labels (N,), got {tuple(features.shape)} and {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("cannot fit a linear probe on zero examples")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    x = features.detach().float()
    x = F.normalize(x, dim=-1) if normalize else x
    y = labels.long()
    if init is None:
        weight = torch.zeros(num_classes, x.shape[1])
        bias = torch.zeros(num_classes)
    else:
        weight, bias = (t.detach().float().clone() for t in init)
        if weight.shape != (num_classes, x.shape[1]) or bias.shape != (num_classes,):
            raise ValueError(f"init must be W {(num_classes, x.shape[1])} and b {(num_classes,)}, "
                             f"got {tuple(weight.shape)} and {tuple(bias.shape)}")
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def probe_logits(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Logits (N, C) of a fitted probe on features (N, D), normalised as at fitting time."""
    x = features.float()
    x = F.normalize(x, dim=-1) if normalize else x
    return x @ weight.T + bias
