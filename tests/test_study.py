"""The five-hypothesis study: `clipshift study --quick` end to end, resume, and the verdict logic."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from pathlib import Path
from scipy import stats

from clipshift.cli import main
from clipshift.data.sources import subset_indices
from clipshift.recipes.study import (HYPOTHESES, REGISTRY, TITLES, compare, load_study_config, study_plan, summarize,
                                     train_run)
from clipshift.recipes.study.verdicts import Context

from resume_helpers import where_resumed


def verdict(name, rows):
    v = REGISTRY[name].verdict(rows, Context(pd.DataFrame(rows)))
    return v.line, v.details


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    assert main(["study", "--quick", "--out", str(out), "--quiet"]) == 0
    return out


def test_quick_study_writes_every_hypothesis(quick_run):
    report = (quick_run / "report.md").read_text()
    verdicts = json.loads((quick_run / "verdicts.json").read_text())
    assert [v["hypothesis"] for v in verdicts] == list(HYPOTHESES)
    for v in verdicts:
        assert f"## {TITLES[v['hypothesis']]}" in report
        assert f"**Verdict:** {v['verdict']}" in report  # the report carries the computed verdict
        assert (quick_run / "figures" / f"study_{v['hypothesis']}.png").stat().st_size > 20_000
    summary = pd.read_csv(quick_run / "summary.csv")
    assert (summary["seeds"] == 3).all()  # every configuration, three seeds
    assert {"clip_f000_n600", "clip_f050_n600", "clip_f100_n600", "clip_f100_n300", "sup_narrow_true_n600",
            "sup_diverse_tm_n600", "simclr_tm_n600", "clip_f100_n600_bare",
            "clip_f100_n600_probe"} <= set(summary["config"])
    # the summary is the mean over the seeds' per-model ER in er.csv
    er = pd.read_csv(quick_run / "er.csv")
    part = er[(er["dataset"] == "average") & (er["config"] == "clip_f100_n600")]
    assert len(part) == 3
    row = summary.set_index("config").loc["clip_f100_n600"]
    assert row["effective_robustness"] == pytest.approx(part["effective_robustness"].mean())
    half = stats.t.ppf(0.975, 2) * part["effective_robustness"].std(ddof=1) / np.sqrt(3)
    assert row["ci_high"] - row["effective_robustness"] == pytest.approx(half)
    html = (quick_run / "report.html").read_text()
    assert 'src="figures/' not in html and html.count("data:image/png;base64,") >= len(HYPOTHESES)
    assert (quick_run / "probe.csv").is_file()


def test_study_results_feed_clipshift_er(quick_run, tmp_path):
    assert main(["er", "--results", str(quick_run / "results.csv"), "--id-dataset", "test",
                 "--out", str(tmp_path), "--bootstrap", "50"]) == 0
    er = pd.read_csv(tmp_path / "er.csv")
    assert {"clip_f100_n600_s0", "simclr_tm_n600_s2"} <= set(er["model"])


def test_rerun_resumes_and_reproduces(quick_run):
    before = pd.read_csv(quick_run / "results.csv")
    # one run as if killed after its last checkpoint, before its model was written: it resumes from that step
    interrupted = quick_run / "runs" / "clip_f100_n300_s0"
    shutil.rmtree(interrupted / "model")
    last = int((interrupted / "checkpoints" / "latest").read_text().split("-")[1])
    assert main(["study", "--quick", "--out", str(quick_run), "--quiet"]) == 0
    assert where_resumed(interrupted / "metrics.jsonl", "contrastive") == (last, [], [])  # nothing trained again
    facts = json.loads((quick_run / "facts.json").read_text())
    assert facts["models_trained_this_run"] == 1 and facts["models"] == len(before["model"].str.replace(
        r"_(bare|probe)$", "", regex=True).unique()) + 3  # + the three SimCLR pre-trainings (not evaluated)
    assert len(facts["train_seconds"]) == facts["models"]  # the first run's training times survive the resume
    assert f"reused {facts['models'] - 1} from an earlier run" in (quick_run / "report.md").read_text()
    pd.testing.assert_frame_equal(pd.read_csv(quick_run / "results.csv"), before)


def test_another_configuration_in_the_same_folder_is_refused(quick_run, capsys):
    assert main(["study", "--quick", "--out", str(quick_run), "--quiet", "seeds=[0,1]"]) == 2
    assert "another configuration" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("sizes=[300,5000]", "train_size"), ("hypotheses=[size,luck]", "unknown"), ("mixture=[0,1.5]", "[0, 1]"),
    ("seeds=[1,1]", "distinct"), ("shifts=[test]", "shift"),
])
def test_bad_configuration_is_a_clear_error(override, message, tmp_path, capsys):
    assert main(["study", "--quick", "--out", str(tmp_path), override]) == 2
    assert message in capsys.readouterr().err


def test_plan_deduplicates_and_nests_subsets():
    config = load_study_config(quick=True)
    plan = study_plan(config)
    names = [e["name"] for e in plan]
    assert len(names) == len(set(names))
    per_seed = {e["config"] for e in plan if e.get("seed") == 0 and e["config"] != "baseline"}
    # sizes 300, 600 (diverse) + fractions 0, .5 (1.0 at n=600 is shared) + 2 supervised + SimCLR pre + fine-tune
    # + CLIP diverse without each of three shifts' domains
    assert per_seed == {"clip_f100_n300", "clip_f100_n600", "clip_f000_n600", "clip_f050_n600",
                        "sup_narrow_true_n600", "sup_diverse_tm_n600", "simclr_pre_n600", "simclr_tm_n600",
                        "clip_f100_n600_no_sketch", "clip_f100_n600_no_rendition", "clip_f100_n600_no_objectnet"}
    order = {n: i for i, n in enumerate(names)}
    assert all(order[f"simclr_pre_n600_s{s}"] < order[f"simclr_tm_n600_s{s}"] for s in config.seeds)
    # every model is a `clipshift train` run; the diverse subsets of the two sizes share their seed: nested
    domains = {s: {"exclude_files": f"world/exclude_{s}.txt"} for s in config.domains()}
    runs = {e["name"]: train_run(config, e, Path("runs"), DISTRIBUTIONS, domains) for e in plan}
    small, large = (runs[f"clip_f100_n{n}_s0"]["sources"][0] for n in (300, 600))
    assert (small["size"], large["size"]) == (300, 600) and small["subset_seed"] == large["subset_seed"]
    a, b = (subset_indices(1000, s["size"], s["subset_seed"], "t") for s in (small, large))
    assert set(a) <= set(b) and len(set(b)) == 600
    assert runs["simclr_tm_n600_s1"]["init_from"] == str(Path("runs") / "simclr_pre_n600_s1" / "model")
    assert runs["simclr_tm_n600_s1"]["objective"] == "finetune"
    assert runs["sup_narrow_true_n600_s0"]["labels"] == "source" and runs["sup_diverse_tm_n600_s0"]["labels"] == \
        "text_match"


def test_mixture_draws_the_requested_fraction(quick_run):
    run = yaml.safe_load((quick_run / "runs" / "clip_f050_n600_s1" / "config.yaml").read_text())
    assert [s["size"] for s in run["sources"]] == [300, 300]  # half narrow, half diverse
    assert run["data"]["images_per_source"] == [300, 300] and run["data"]["images"] == 600
    sup = yaml.safe_load((quick_run / "runs" / "sup_diverse_tm_n600_s0" / "config.yaml").read_text())
    assert 0 < sup["data"]["text_match_rate"] < 1  # unmatched captions are dropped
    assert sup["data"]["images_kept"] < 600


DISTRIBUTIONS = {d: [{"type": "csv", "path": f"world/train_{d}.csv"}] for d in ("narrow", "diverse")}


def _row(config, er, lo, hi, **extra):
    return dict(config=config, label=config, effective_robustness=er, ci_low=lo, ci_high=hi, id_accuracy=0.5,
                shift_accuracy=0.3, train_size=100, diverse_fraction=0.0, head="ensemble", **extra)


def test_verdicts_follow_the_intervals():
    effect, sentence = compare(_row("a", 0.10, 0.08, 0.12), _row("b", 0.0, -0.02, 0.02))
    assert effect and "do not overlap" in sentence and "+10.0 pp" in sentence
    effect, sentence = compare(_row("a", 0.02, -0.01, 0.05), _row("b", 0.0, -0.02, 0.02))
    assert not effect and "no effect detected" in sentence
    rows = [_row("s1", 0.05, 0.03, 0.07, ), _row("s2", 0.06, 0.04, 0.08)]
    rows[0]["train_size"], rows[1]["train_size"] = 100, 400
    rows[1]["id_accuracy"] = 0.8
    line, _ = verdict("size", rows)
    assert "+30.0 pp" in line and "no effect on effective robustness detected" in line
    rows[1].update(effective_robustness=0.2, ci_low=0.18, ci_high=0.22)
    assert "changes effective robustness" in verdict("size", rows)[0]
    mix = [_row("f0", 0.0, -0.01, 0.01), _row("f5", 0.05, 0.04, 0.06), _row("f1", 0.1, 0.09, 0.11)]
    for row, f in zip(mix, (0.0, 0.5, 1.0)):
        row["diverse_fraction"] = f
    line, _ = verdict("distribution", mix)
    assert "changes effective robustness" in line and "ρ = +1.00" in line


def test_summarize_uses_the_bootstrap_interval_for_one_seed():
    er = pd.DataFrame([dict(model="m_s0", config="m", dataset="average", is_baseline=False, group="M",
                            objective="contrastive", head="ensemble", diverse_fraction=1.0, labels="captions",
                            train_size=10, id_accuracy=0.5, shift_accuracy=0.4, effective_robustness=0.03,
                            ci_low=0.01, ci_high=0.06)])
    row = summarize(er).iloc[0]
    assert (row["ci_low"], row["ci_high"], row["seeds"]) == (0.01, 0.06, 1) and "bootstrap" in row["interval"]


def test_study_report_in_a_real_browser(quick_run, chromium, open_report):
    with open_report(chromium, quick_run / "report.html") as (page, problems):
        images = page.evaluate("Array.from(document.images, i => [i.complete, i.naturalWidth])")
        headings = page.evaluate("Array.from(document.querySelectorAll('h2'), h => h.textContent)")
        page.screenshot(path=str(quick_run / "report.png"), full_page=True)
    figures = len(list((quick_run / "figures").glob("*.png")))
    assert len(images) == figures and all(done and width > 0 for done, width in images)
    assert problems == []
    assert all(TITLES[h] in headings for h in HYPOTHESES) and "Configuration" in headings
    assert (quick_run / "report.png").stat().st_size > 50_000


def _tables(markdown: str) -> list[list[dict]]:
    """Every markdown table of `markdown` as a list of {header: cell} rows."""
    tables, lines = [], markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1].replace("|", "")) <= set("-: "):
            if i and lines[i - 1].startswith("|"):
                continue
            header = [c.strip() for c in line.strip("|").split("|")]
            body = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                body.append(dict(zip(header, (c.strip() for c in row.strip("|").split("|")))))
            tables.append(body)
    return tables


def _number(cell: str) -> float:
    return float(cell.replace(",", "").replace("%", "").replace("pp", "").replace("+", "").strip())


def test_every_number_in_the_reports_tables_is_the_summarys(quick_run):
    """Parse report.md's tables and check each cell against summary.csv / summary_shifts.csv (to the
    printed precision) and verdicts.json: no number in the report is typed or stale."""
    summary = pd.read_csv(quick_run / "summary.csv")
    per_shift = pd.read_csv(quick_run / "summary_shifts.csv")
    verdicts = {TITLES[v["hypothesis"]]: v for v in json.loads((quick_run / "verdicts.json").read_text())}
    tables = _tables((quick_run / "report.md").read_text())
    checked = 0
    for table in tables:
        for cells in table:
            if "published finding" in cells:
                v = verdicts[cells["hypothesis"]]
                assert (cells["computed"], cells["agreement"].split()[0]) == (v["finding"], v["agreement"])
                continue
            if "configuration" not in cells:
                continue
            source = per_shift[per_shift["dataset"] == cells["shift"]] if "shift" in cells else summary
            match = source[source["label"] == cells["configuration"]]
            assert len(match) == 1, cells
            r = match.iloc[0]
            shift_column = "shift accuracy" if "shift" in cells else "avg shift accuracy"
            for column, value in (("ID accuracy", r["id_accuracy"]), (shift_column, r["shift_accuracy"]),
                                  ("ER", r["effective_robustness"])):
                assert _number(cells[column]) == pytest.approx(100 * value, abs=0.051), (cells, column)
            low, high = (_number(c) for c in cells["95% interval"].strip("[]").split(","))
            assert low == pytest.approx(100 * r["ci_low"], abs=0.051)
            assert high == pytest.approx(100 * r["ci_high"], abs=0.051)
            assert int(cells["seeds"]) == r["seeds"]
            assert _number(cells["seed sd"]) == pytest.approx(100 * r["er_sd"], abs=0.051)
            for column, key in (("steps", "steps"), ("images seen", "images_seen")):
                assert _number(cells[column]) == pytest.approx(r[key], abs=0.5), (cells, column)
            checked += 1
    assert checked >= 20  # every hypothesis' table was read
