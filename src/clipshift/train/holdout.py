"""Early stopping on a held-out share of the training rows (objectives with labels).

With ``TrainConfig.holdout = f`` the loop takes ``round(f · N)`` of the N training rows out of
training (a permutation seeded by the run's seed, so the split is the same on resume), measures
top-1 accuracy on them after every epoch (``holdout_accuracy`` in ``metrics.jsonl``), keeps the
weights of the best epoch so far (the first best on ties) and, with ``patience = p > 0``, stops
once ``p`` epochs in a row have not improved on it. The final model is the best epoch's. The
learning-rate schedule stays the one planned for ``epochs`` (the maximum), so a run that stops
early stops mid-schedule.
"""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from ..data.lazy import take_images
from ..models.factory import normalize_images, save_safetensors_atomic

BEST = "best"  # folder in the checkpoint folder holding the best epoch's weights


def split_holdout(data, fraction: float, seed: int):
    """(training rows, held-out rows) of `data` (a TrainData with labels; data that split themselves,
    like a mixture with streams, :meth:`~clipshift.data.mixture.MixedData.split_holdout`, do so)."""
    if hasattr(data, "split_holdout"):
        return data.split_holdout(fraction, seed * 7919 + 1)
    if data.labels is None:
        raise ValueError("holdout: early stopping measures accuracy on held-out labelled rows; the objective "
                         "trains without labels (use holdout with supervised or finetune)")
    n = len(data)
    k = int(round(fraction * n))
    if not 1 <= k < n:
        raise ValueError(f"holdout {fraction} of {n} training rows leaves no held-out or no training rows")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + 1))
    held, kept = order[:k].sort().values, order[k:].sort().values
    return _take(data, kept), _take(data, held)


def _take(data, index: torch.Tensor):
    return type(data)(take_images(data.images, index), labels=data.labels[index],
                      tokens=None if data.tokens is None else data.tokens[index])


@torch.no_grad()
def accuracy(model, held, batch_size: int = 256) -> float:
    """Top-1 accuracy of the classifier `model` on the held-out rows; leaves the model's mode as it was."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(held), batch_size):
        batch = held.batch(torch.arange(start, min(start + batch_size, len(held))))
        logits = model(normalize_images(batch["images"].to(device)))
        correct += int((logits.argmax(1).cpu() == batch["labels"]).sum())
    model.train(was_training)
    return correct / len(held)


class EarlyStopping:
    """The best epoch so far, its weights, and whether `patience` epochs have passed without improving."""

    def __init__(self, held, patience: int, folder=None):
        self.held, self.patience, self.folder = held, patience, folder
        self.best_accuracy, self.best_epoch, self.weights = -1.0, 0, None

    def resume(self, history: list[dict]) -> None:
        """Pick up from the epochs a resumed run already logged (and the best weights saved then)."""
        for record in history:
            if "holdout_accuracy" in record and record["holdout_accuracy"] > self.best_accuracy:
                self.best_accuracy, self.best_epoch = record["holdout_accuracy"], record["epoch"]
        path = self.folder / BEST / "model.safetensors" if self.folder is not None else None
        if path is not None and path.is_file():
            self.weights = load_file(str(path))

    def after_epoch(self, model, epoch: int) -> dict:
        """Measure epoch `epoch` (1-based); keep its weights if best; its record's fields."""
        value = accuracy(model, self.held)
        if value > self.best_accuracy:
            self.best_accuracy, self.best_epoch = value, epoch
            self.weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if self.folder is not None:
                save_safetensors_atomic(self.weights, self.folder / BEST / "model.safetensors")
        return {"holdout_accuracy": value, "best_epoch": self.best_epoch}

    def stop(self, epoch: int) -> bool:
        return bool(self.patience) and self.best_epoch > 0 and epoch - self.best_epoch >= self.patience

    def restore(self, model) -> None:
        if self.weights is not None:
            model.load_state_dict(self.weights)
