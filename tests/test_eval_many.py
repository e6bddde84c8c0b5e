"""`clipshift eval --models FILE`: many checkpoints, one decode of each dataset, a results file per
(model, dataset) pair, resume after a kill, --plan."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch

from clipshift.cli import build_parser, main
from clipshift.data import imagenet
from clipshift.evaluate import many
from clipshift.evaluate.predictions import read_predictions
from clipshift.models.factory import ModelSpec, build_model, register_model_configs, save_checkpoint
from clipshift.models.load import load_model, model_id
from eval_helpers import WNIDS, write_jpegs

KEY = ["model", "dataset", "metric"]
SCORED = re.compile(r"^(\S+) on (\S+): top-1 ")


def _eval(args: list[str]) -> int:
    return main(["eval", "--workers", "0", "--batch-size", "4", "--quiet", *args])


def _sorted(table: pd.DataFrame, keys=KEY) -> pd.DataFrame:
    return table.sort_values(keys, ignore_index=True)


@pytest.fixture(scope="module")
def own_clip(tmp_path_factory) -> Path:
    """A clipshift CLIP checkpoint folder: its preprocessing (uint8, normalised inside) differs from
    open_clip's (openai mean/std) and timm's (resize 36, crop 32, 0.5 mean/std)."""
    folder = tmp_path_factory.mktemp("own") / "own_clip"
    spec = ModelSpec("clip", "clipshift-tiny", ["a", "b"])
    save_checkpoint(build_model(spec, seed=3), spec, folder)
    return folder


def _list(path: Path, lines: list[str]) -> Path:
    path.write_text("# models to score\n\n" + "\n".join(lines) + "\n")
    return path


def _decodes(monkeypatch) -> list[str]:
    """Every image file decoded from now on (workers=0: in this process)."""
    seen: list[str] = []
    decode = imagenet.open_rgb

    def counting(path):
        seen.append(str(path))
        return decode(path)

    monkeypatch.setattr(imagenet, "open_rgb", counting)
    return seen


def test_models_decodes_each_image_once_and_gives_each_model_its_lone_numbers(data_root, weights, own_clip,
                                                                             tmp_path, monkeypatch, capsys):
    lone_models = [("clipshift-tiny", str(weights["clip"])), ("timm/clipshift_convnet_tiny", str(weights["timm"])),
                   (str(own_clip), None)]
    models = _list(tmp_path / "models.txt", [f"{m} {p or ''}  # a comment" for m, p in lone_models])
    common = ["--datasets", "imagenet,imagenet-r", "--data-root", str(data_root), "--templates",
              str(weights["templates"]), "--save-predictions", "--per-class"]
    decoded = _decodes(monkeypatch)
    assert _eval([*common, "--models", str(models), "--models-at-once", "3", "--out", str(tmp_path / "many")]) == 0
    images = 16 + 6  # imagenet's 15 and its broken JPEG, imagenet-r's 6
    assert len(decoded) == len(set(decoded)) == images  # three models, three transforms, one decode
    for m, p in lone_models:
        assert _eval([*common, "--model", m, *(["--pretrained", p] if p else []), "--out", str(tmp_path / "lone")]) == 0
    assert len(decoded) == 4 * images  # each lone run decodes everything again

    got, lone = (pd.read_csv(tmp_path / name / "results.csv") for name in ("many", "lone"))
    assert len(got) == 3 * 2 * 3 and set(got["model"]) == {model_id(m, p) for m, p in lone_models}
    pd.testing.assert_frame_equal(_sorted(got), _sorted(lone[got.columns]), check_exact=True)
    assert got[got["metric"] == "top1"]["value"].gt(0).any()  # not all-zero numbers that agree trivially
    assert got["protocol"].str.extract(r"preprocess=([^;]*)")[0].nunique() == 3  # three preprocessings
    cells = ["model", "dataset", "class_id"]
    pd.testing.assert_frame_equal(_sorted(pd.read_csv(tmp_path / "many" / "per_class.csv"), cells),
                                  _sorted(pd.read_csv(tmp_path / "lone" / "per_class.csv"), cells), check_exact=True)
    a, b = (read_predictions(tmp_path / name) for name in ("many", "lone"))
    pd.testing.assert_frame_equal(_sorted(a, ["model", "dataset", "index"]), _sorted(b, ["model", "dataset", "index"]),
                                  check_exact=True)
    for m, p in lone_models:  # a pair file per model and dataset, holding that pair's rows
        for dataset in ("imagenet", "imagenet-r"):
            pair = pd.read_csv(many.pair_file(tmp_path / "many", model_id(m, p), dataset))
            assert set(pair["dataset"]) == {dataset} and list(pair["metric"]) == ["top1", "top5", "mean_per_class_recall"]

    # the same list into another folder with the same cache: nothing decoded, the same table
    capsys.readouterr()
    assert _eval([*common, "--models", str(models), "--cache-dir", str(tmp_path / "many" / "cache"),
                  "--out", str(tmp_path / "again")]) == 0
    assert len(decoded) == 4 * images
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "again" / "results.csv"), got)
    assert len([line for line in capsys.readouterr().out.splitlines() if SCORED.match(line)]) == 6
    # and into the first folder: every pair is there already
    assert _eval([*common, "--models", str(models), "--out", str(tmp_path / "many")]) == 0
    printed = capsys.readouterr().out
    assert not [line for line in printed.splitlines() if SCORED.match(line)]
    assert printed.count("already scored, skipped: ") == 3 and "on imagenet, imagenet-r" in printed


def test_a_bad_list_is_a_one_line_error_naming_file_and_line_before_any_work(data_root, weights, tmp_path, capsys):
    good = f"clipshift-tiny {weights['clip']}"
    common = ["--datasets", "imagenet-r", "--data-root", str(data_root), "--out", str(tmp_path / "out")]
    cases = {
        "missing.txt": (None, "--models {path}: no such file"),
        "missing_weights.txt": ([good, "", f"clipshift-tiny {tmp_path / 'gone.pt'}"],
                                f"{{path}} line 5: '{tmp_path / 'gone.pt'}': no such checkpoint file"),
        "unknown.txt": ([good, "foo"], "{path} line 4: 'foo' names no open_clip/timm/clipshift model or checkpoint file"),
        "no_folder.txt": (["runs/nowhere/model"], "{path} line 3: 'runs/nowhere/model' names no open_clip/timm/"
                                                  "clipshift model or checkpoint file (no such checkpoint folder)"),
        "no_timm.txt": (["timm/resnet_nope a1_in1k"], "{path} line 3: 'timm/resnet_nope' names no timm model"),
        "no_tag.txt": (["clipshift-tiny openai"], "{path} line 3: 'clipshift-tiny' has no pretrained weights tagged "
                                                  "'openai' (open_clip knows none: give a checkpoint file)"),
        "no_weights.txt": ([f"timm/clipshift_convnet_tiny {weights['timm']}", "clipshift-tiny"],
                           "{path} line 4: 'clipshift-tiny' needs pretrained weights"),
        "duplicate.txt": ([good, f"timm/clipshift_convnet_tiny {weights['timm']}", good],
                          f"{{path}} lines 3 and 5 name the same model (clipshift-tiny {weights['clip']})"),
        "same_id.txt": ([good, f"clipshift-tiny {weights['timm']} name=clipshift-tiny/tiny_clip.pt"],
                        "{path} lines 3 and 4 both give the model id 'clipshift-tiny/tiny_clip.pt'"),
        "too_many.txt": ([f"{good} extra"], f"{{path}} line 3: '{good} extra' is not `model [pretrained] [name=ID]`"),
        "name_only.txt": ([good, "name=foo"], "{path} line 4: 'name=foo' is not `model [pretrained] [name=ID]`"),
        "same_folder.txt": ([f"{good} name=my/model", f"timm/clipshift_convnet_tiny {weights['timm']} name=my__model"],
                            "{path} lines 3 and 4 give the model ids 'my/model' and 'my__model', both kept in the "
                            "results folder 'my__model'"),
        "same_folder_case.txt": ([f"{good} name=Tiny", f"timm/clipshift_convnet_tiny {weights['timm']} name=tiny"],
                                 "{path} lines 3 and 4 give the model ids 'Tiny' and 'tiny', both kept in the "
                                 "results folder 'tiny'"),
        "empty.txt": ([], "{path}: no models"),
    }
    for name, (lines, message) in cases.items():
        path = tmp_path / name if lines is None else _list(tmp_path / name, lines)
        assert _eval([*common, "--models", str(path)]) == 2, name
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message.format(path=path) in err, (name, err)
    assert not (tmp_path / "out").exists()  # nothing was loaded, decoded or written
    assert _eval([*common, "--models", str(_list(tmp_path / "ok.txt", [good])), "--pretrained", "x"]) == 2
    assert "not --pretrained / --name" in capsys.readouterr().err
    assert _eval([*common, "--model", "clipshift-tiny", "--pretrained", str(weights["clip"]), "--plan"]) == 2
    assert "--plan goes with --models FILE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--model", "a", "--models", "b", "--out", "o"])


def test_plan_writes_one_line_per_model_and_its_lines_give_the_table(data_root, weights, tmp_path, monkeypatch,
                                                                      capsys):
    models = _list(tmp_path / "models.txt", [f"clipshift-tiny {weights['clip']}",
                                             f"timm/clipshift_convnet_tiny {weights['timm']} name=convnet"])
    common = ["--datasets", "imagenet,imagenet-r", "--data-root", str(data_root), "--templates",
              str(weights["templates"]), "--group", "baseline", "--dataset-root", f"imagenet-r={data_root / 'imagenet-r'}"]
    with monkeypatch.context() as patch:
        patch.setattr(many, "load_model", lambda *a: pytest.fail("--plan loaded a model"))
        patch.setattr(imagenet, "open_rgb", lambda *a: pytest.fail("--plan decoded an image"))
        assert _eval([*common, "--models", str(models), "--plan", "--out", str(tmp_path / "planned")]) == 0
    assert "plan: " in capsys.readouterr().out
    plan = (tmp_path / "planned" / "plan.sh").read_text().splitlines()
    commands = [shlex.split(line) for line in plan if line.startswith("clipshift ")]
    assert len(commands) == 3 and [c[c.index("--only") + 1] for c in commands[:2]] == ["clipshift-tiny/tiny_clip.pt",
                                                                                       "convnet"]
    for argv in commands:
        assert argv[:2] == ["clipshift", "eval"] and argv[-2:] == ["--out", str(tmp_path / "planned")]
        assert {"--group", "--dataset-root", "--templates", "--workers", "--batch-size", "--quiet"} <= set(argv)
    for argv in commands[:2]:  # a model's line: its pair files, no table
        assert main(argv[1:]) == 0
        assert not (tmp_path / "planned" / "results.csv").exists()
    assert main(commands[2][1:]) == 0  # the last line scores nothing and builds the table
    assert capsys.readouterr().out.count("already scored, skipped: ") == 2
    assert _eval([*common, "--models", str(models), "--out", str(tmp_path / "direct")]) == 0
    planned, direct = (pd.read_csv(tmp_path / n / "results.csv") for n in ("planned", "direct"))
    pd.testing.assert_frame_equal(_sorted(planned), _sorted(direct), check_exact=True)
    assert set(planned["group"]) == {"baseline"} and set(planned["model"]) == {"clipshift-tiny/tiny_clip.pt", "convnet"}
    assert _eval([*common, "--models", str(models), "--only", "nobody", "--out", str(tmp_path / "direct")]) == 2
    assert "--only 'nobody': no model of the list has this id" in capsys.readouterr().err
    assert _eval([*common[:-4], "--models", str(models), "--out", str(tmp_path / "direct")]) == 2
    assert "holds pairs scored with other settings (--group)" in capsys.readouterr().err


def _save_clip(path: Path, seed: int) -> Path:
    """A tiny open_clip model's weights of `seed`, saved to `path` (overwriting it)."""
    register_model_configs()
    torch.manual_seed(seed)
    torch.save(open_clip.create_model("clipshift-tiny").state_dict(), path)
    return path


def test_a_pair_whose_weights_changed_is_rescored_not_kept(data_root, weights, tmp_path, monkeypatch, capsys):
    """A checkpoint overwritten at the same path (same id), or a line given other weights under the same
    name=, is scored again on the rerun (saying so), with the new weights' numbers; --no-amp is a setting."""
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(weights["clip"].read_bytes())
    kept = f"timm/clipshift_convnet_tiny {weights['timm']}"
    models = _list(tmp_path / "models.txt", [f"clipshift-tiny {ckpt}", kept])
    common = ["--datasets", "imagenet,imagenet-r", "--data-root", str(data_root), "--templates",
              str(weights["templates"])]
    out = tmp_path / "many"
    assert _eval([*common, "--models", str(models), "--out", str(out)]) == 0  # with the feature cache: OUT/cache
    first = pd.read_csv(out / "results.csv")

    def rerun(listed: Path, model: str) -> str:
        capsys.readouterr()
        assert _eval([*common, "--models", str(listed), "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert f"weights changed since scored, rescoring: {model} on imagenet, imagenet-r" in printed
        assert "already scored, skipped: clipshift_convnet_tiny/tiny_timm on imagenet, imagenet-r" in printed
        assert {SCORED.match(line).groups() for line in printed.splitlines() if SCORED.match(line)} == {
            (model, "imagenet"), (model, "imagenet-r")}
        return printed

    def lone(pretrained: Path, *name: str) -> pd.DataFrame:
        where = tmp_path / f"lone_{pretrained.stem}"
        assert _eval([*common, "--model", "clipshift-tiny", "--pretrained", str(pretrained), *name, "--out",
                      str(where)]) == 0
        return pd.read_csv(where / "results.csv")

    _save_clip(ckpt, seed=11)  # the same path, so the same id: other weights
    rerun(models, "clipshift-tiny/ckpt.pt")
    got = pd.read_csv(out / "results.csv")
    assert list(got.columns) == list(first.columns) and len(got) == len(first)
    mine = _sorted(got[got["model"] == "clipshift-tiny/ckpt.pt"])
    pd.testing.assert_frame_equal(mine, _sorted(lone(ckpt))[mine.columns], check_exact=True)
    old = _sorted(first[first["model"] == "clipshift-tiny/ckpt.pt"])
    assert not np.array_equal(mine["value"].to_numpy(), old["value"].to_numpy())  # the rows did change
    capsys.readouterr()
    with monkeypatch.context() as patch:  # and now they are kept: files as recorded are not read again
        patch.setattr(many, "file_digest", lambda path: pytest.fail(f"{path} was hashed again"))
        assert _eval([*common, "--models", str(models), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("already scored, skipped: ") == 2
    many.pair_file(out, "clipshift-tiny/ckpt.pt", "imagenet-r").with_suffix(".weights.json").unlink()
    assert _eval([*common, "--models", str(models), "--out", str(out)]) == 0  # a pair scored with no record
    assert ("no record of the weights it was scored with, rescoring: clipshift-tiny/ckpt.pt on imagenet-r"
            in capsys.readouterr().out)

    # the same name= given other weights
    named = _list(tmp_path / "named.txt", [f"clipshift-tiny {ckpt} name=mine", kept])
    assert _eval([*common, "--models", str(named), "--out", str(out)]) == 0
    other = _save_clip(tmp_path / "other.pt", seed=12)
    rerun(_list(tmp_path / "named.txt", [f"clipshift-tiny {other} name=mine", kept]), "mine")
    got = pd.read_csv(out / "results.csv")
    mine = _sorted(got[got["model"] == "mine"])
    pd.testing.assert_frame_equal(mine, _sorted(lone(other, "--name", "mine"))[mine.columns], check_exact=True)

    assert '"--no-amp": false' in (out / "results" / "settings.json").read_text()
    assert _eval([*common, "--models", str(models), "--no-amp", "--out", str(out)]) == 2
    assert "holds pairs scored with other settings (--no-amp)" in capsys.readouterr().err


def _kill_data(root: Path) -> Path:
    """imagenet (5 wnids x 6), imagenet-r (3 x 5) and imagenet-sketch (5 x 4), 96x128 JPEGs."""
    rng = np.random.default_rng(7)
    for wnid in WNIDS:
        write_jpegs(root / "imagenet" / "val" / wnid, 6, rng, size=(96, 128))
        write_jpegs(root / "sketch" / wnid, 4, rng, ".jpg", size=(96, 128))
    for wnid in WNIDS[1:4]:
        write_jpegs(root / "imagenet-r" / wnid, 5, rng, ".jpg", size=(96, 128))
    return root


def test_a_killed_run_resumes_without_recomputing_finished_pairs(weights, own_clip, tmp_path, capsys):
    data = _kill_data(tmp_path / "data")
    register_model_configs()
    torch.manual_seed(5)
    torch.save(open_clip.create_model("clipshift-tiny").state_dict(), tmp_path / "second.pt")
    models = _list(tmp_path / "models.txt", [f"clipshift-tiny {weights['clip']}", f"clipshift-tiny {tmp_path / 'second.pt'}",
                                             f"timm/clipshift_convnet_tiny {weights['timm']}", str(own_clip)])
    ids = ["clipshift-tiny/tiny_clip.pt", "clipshift-tiny/second.pt", "clipshift_convnet_tiny/tiny_timm", "own_clip"]
    datasets = ["imagenet", "imagenet-r", "imagenet-sketch"]
    args = ["eval", "--models", str(models), "--datasets", ",".join(datasets), "--data-root", str(data),
            "--templates", str(weights["templates"]), "--workers", "0", "--batch-size", "4", "--quiet",
            "--models-at-once", "2", "--no-cache"]
    out = tmp_path / "killed"
    pairs = {(m, d): many.pair_file(out, m, d) for m in ids for d in datasets}
    process = subprocess.Popen([sys.executable, "-m", "clipshift.cli", *args, "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not any(p.exists() for p in pairs.values()) and time.time() < deadline and process.poll() is None:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read()[-2000:]
    done = {pair for pair, path in pairs.items() if path.exists()}
    assert 1 <= len(done) < len(pairs) and not (out / "results.csv").exists()
    stamps = {pair: pairs[pair].stat().st_mtime_ns for pair in done}

    capsys.readouterr()
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    recomputed = {SCORED.match(line).groups() for line in printed if SCORED.match(line)}
    assert recomputed == set(pairs) - done  # exactly the pairs the killed run had not finished
    assert {pair: pairs[pair].stat().st_mtime_ns for pair in done} == stamps  # their files untouched
    skipped = {(m, d) for line in printed if line.startswith("already scored, skipped: ")
               for m, ds in [line[len("already scored, skipped: "):].split(" on ")] for d in ds.split(", ")}
    assert skipped == done
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    resumed, whole = (pd.read_csv(tmp_path / n / "results.csv") for n in ("killed", "whole"))
    assert len(whole) == len(pairs) * 3
    pd.testing.assert_frame_equal(_sorted(resumed), _sorted(whole), check_exact=True)


def test_model_id_is_the_name_load_model_gives(weights, own_clip):
    for model, pretrained in (("clipshift-tiny", str(weights["clip"])), ("timm/clipshift_convnet_tiny",
                                                                         str(weights["timm"])), (str(own_clip), None)):
        assert model_id(model, pretrained) == load_model(model, pretrained).name
    assert model_id("ViT-B-32", "openai") == "ViT-B-32/openai"
    assert model_id("timm/resnet50", "a1_in1k") == "resnet50.a1_in1k"
    assert model_id("hf-hub:timm/ViT-B-16-SigLIP") == "timm/ViT-B-16-SigLIP"
