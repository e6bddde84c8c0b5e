"""``clipshift study CONFIG.yaml --out DIR``: the six-hypothesis study (Fang et al. 2022's five causes,
and Mayilvahanan et al.'s exposure to the shift's own domain).

Which cause gives CLIP its effective robustness? Every configuration (a hypothesis of
:mod:`.hypotheses` asks for the ones it compares) is trained with several seeds as a
``clipshift train`` run (:mod:`.plan`), on the embedded world, on a folder laid out like it, or on
real sources (ImageNet-Captions, YFCC-style CSV or webdataset shards) with ImageNet-family
evaluation suites (:mod:`.data`); evaluated through the one evaluation loop; and placed against one
baseline of supervised models trained on ``narrow`` data (Taori et al.). Per configuration the
effective robustness (ER, average over shifts) is the mean over seeds with a 95% t-interval over
seeds; a hypothesis' verdict compares those intervals and is computed, never typed, and is set beside
the published finding it tests (agrees / differs) with what was held equal (training images,
optimizer steps, images seen: every model's budget is in ``summary.csv``).

Re-running the same command into the same folder resumes: the world and every finished run are
reused. ``--plan`` writes the commands instead of running them (:mod:`.schedule`).
"""

from .analysis import compare, summarize
from .config import QUICK, StudyConfig, load_study_config
from .hypotheses import HYPOTHESES, QUESTIONS, REGISTRY, TITLES, Hypothesis
from .plan import study_plan, train_run
from .run import run_study

__all__ = ["compare", "summarize", "QUICK", "StudyConfig", "load_study_config", "HYPOTHESES", "QUESTIONS",
           "REGISTRY", "TITLES", "Hypothesis", "study_plan", "train_run", "run_study"]
