"""Old path of :mod:`clipshift.progress`, kept while evaluate.loop, evaluate.heads, recipes.quickstart
and recipes.finetune (being rewritten) still import it from here; remove it once they do not."""

from .progress import progress_bar

__all__ = ["progress_bar"]
