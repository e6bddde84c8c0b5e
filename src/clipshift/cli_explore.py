"""``clipshift explore``: the effective-robustness explorer, one self-contained page.

    clipshift explore --results TABLE [--results TABLE ...] [--baseline TABLE|published] [er's options] --out DIR

Takes ``clipshift er``'s options (:func:`clipshift.cli_er.add_er_options`), computes the same tables
(:func:`clipshift.cli_er.compute_er`) and writes ``DIR/explore.html``: every model's ID against shift
accuracy on logit (or probit) axes with the baseline fit, filters, hover, pinning and a CSV of the
table; it opens offline. The models of ``--results`` that are not baseline models are the user's:
highlighted and labelled.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_er import add_er_options, compute_er

DESCRIPTION = ("Write DIR/explore.html: an interactive, self-contained page (plotly, embedded; no request leaves "
               "it) of every model's in-distribution against shift accuracy with the baseline fit and its 95% band, "
               "one selector for the shift, hover for a model's numbers, filters by source table, name and "
               "baseline, the --results models highlighted, a click to pin a model's per-shift effective "
               "robustness and the table as CSV. Options as for clipshift er.")


def cmd_explore(args) -> int:
    from .robustness.explore import default_user_models, write_explorer

    er, fits = compute_er(args)
    mine = default_user_models(er)  # role user: the models of --results
    path = write_explorer(er, fits, Path(args.out), transform=args.transform, title=args.title, user_models=mine)
    size = path.stat().st_size / 1e6
    print(f"{er['model'].nunique()} models ({int(fits['num_models'].max())} in the baseline, {len(mine)} from "
          f"{', '.join(p.name for p in args.results)} highlighted) on {len(fits) - 1} shifts")
    print(f"wrote {path} ({size:.1f} MB; opens offline in a browser)")
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``explore`` sub-command on `sub` (the sub-parsers of ``clipshift``)."""
    explore = sub.add_parser("explore", help="an interactive page of every model's ID and shift accuracy "
                                             "(explore.html, offline)", description=DESCRIPTION)
    add_er_options(explore, out_help="folder for explore.html")
    explore.add_argument("--title", default="Effective robustness explorer", help="the page's title")
    explore.set_defaults(func=cmd_explore)
    return explore
