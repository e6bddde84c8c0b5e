"""The recipes: whole experiments built on the stages below them.

- :mod:`.quickstart`: the world, the models, the baseline, effective robustness, the report.
- :mod:`.study`: Fang et al.'s controlled study (and Mayilvahanan et al.'s exposure hypothesis).
- :mod:`.finetune`: fine-tuning a CLIP model (full, linear probe, LP-FT) and WiSE-FT.
- :mod:`.common`: what they share (settings loader, run log, the world, one ``clipshift train`` run).

No recipe imports another (``tests/test_layout.py``); what two recipes need lives in :mod:`.common`.
"""
