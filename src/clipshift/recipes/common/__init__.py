"""What every recipe shares, and nothing recipe-specific: the one settings loader
(:mod:`.settings`), the run log, versions and cost (:mod:`.runlog`), the embedded world's settings,
generation and reading (:mod:`.world`), and one ``clipshift train`` run (:mod:`.training`: its
settings, its data from the registered source types, its checks and the run) that the study and
fine-tuning build on. A recipe imports this package and the stages below, never another recipe."""
