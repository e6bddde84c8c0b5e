"""clipshift: why CLIP-style models are robust to distribution shift, and how to measure it.

Importing the package has no side effects; stages live in sub-packages:
``world`` (embedded captioned world), ``data`` (sources, eval suites, text matching),
``models`` (towers and heads), ``train``, ``evaluate``, ``robustness``, ``report``.
"""

__version__ = "0.1.0"
