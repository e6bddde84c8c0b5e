"""Default settings of the probes, importable without torch (the CLI's help text uses them)."""

OUTLIER_RATIO = 10.0  # outlier dimension: mean |activation| above this multiple of the median dimension's
AUC_THRESHOLD = 0.8  # a concept is encoded at held-out AUC >= this
DEFAULT_L2 = 1e-2  # L2 strength of the concept probes (on standardised features)
MIN_EXAMPLES = 10  # positives and negatives needed in each half to evaluate a concept
DEFAULT_KS = (1, 2, 4, 8, 16, 32)  # numbers of dimensions pruned
REAL_DATASETS = "imagenet,imagenet-v2,imagenet-sketch,imagenet-r,imagenet-a,objectnet"  # probed suites, ID first
