"""Protocol stamps (issue 24, part 2): every results row says how it was obtained; the published tables
carry what their sources document; `clipshift er` refuses to fit or compare rows of one dataset measured
under different protocols unless --allow-mixed-protocols; reports print the protocol once per dataset."""

import json
import re
from pathlib import Path

import open_clip
import pandas as pd
import pytest
import torch

from clipshift import __version__
from clipshift.cli import main
from clipshift.data.imagenet import open_suite
from clipshift.evaluate.heads import resolve_templates
from clipshift.formatting import format_protocol, parse_protocol
from clipshift.models.factory import register_model_configs
from clipshift.robustness import effective_robustness, read_results
from clipshift.robustness.protocols import MixedProtocolsError, protocol_section
from clipshift.robustness.tables import imagenet1k_only
from miniature_real import write_imagenet_r, write_imagenet_v2, write_imagenet_val, write_objectnet
from test_tables import BASE_X, SHIFT_B, _acc, write_openclip_table, write_timm_folder


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    """results.csv of a tiny random CLIP on miniature imagenet (+1 undecodable), -v2, -r and objectnet."""
    root = tmp_path_factory.mktemp("protocols")
    data = root / "data"
    val = write_imagenet_val(data, per_class=2)
    next(val.iterdir()).joinpath("broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    write_imagenet_v2(data, per_class=1)
    write_imagenet_r(data, per_class=2)
    write_objectnet(data, per_class=1)
    register_model_configs()
    torch.manual_seed(0)
    torch.save(open_clip.create_model("clipshift-tiny").state_dict(), root / "clip.pt")
    assert main(["eval", "--workers", "0", "--quiet", "--model", "clipshift-tiny", "--pretrained",
                 str(root / "clip.pt"), "--datasets", "imagenet,imagenet-v2,imagenet-r,objectnet",
                 "--data-root", str(data), "--templates", "simple", "--no-cache", "--out", str(root / "out")]) == 0
    return root / "out" / "results.csv"


def test_eval_rows_say_how_they_were_obtained(evaluated):
    results = pd.read_csv(evaluated)
    assert results.groupby("dataset")["protocol"].nunique().eq(1).all()  # top1, top5, recall: one stamp
    stamp = {d: parse_protocol(p) for d, p in results.drop_duplicates("dataset")[["dataset", "protocol"]].values}
    simple = len(resolve_templates("simple"))
    for fields in stamp.values():
        assert fields["prompts"].startswith(f"simple {simple} #") and fields["clipshift"] == __version__
        assert re.fullmatch(r"resize 32 bicubic, center-crop 32, openai mean/std #[0-9a-f]{8}", fields["preprocess"])
    assert stamp["imagenet"]["classes"] == "1000" and stamp["imagenet"]["images"] == "9"  # 8 scored + 1 broken
    assert "crop" not in stamp["imagenet"] and "variant" not in stamp["imagenet"]
    assert stamp["imagenet-v2"]["variant"] == "matched-frequency" and stamp["imagenet-v2"]["images"] == "4"
    assert stamp["imagenet-r"]["classes"] == "4 of 1000"  # the mask of the wnid folders present
    mapped = len(open_suite("objectnet", data_root=evaluated.parents[1] / "data").class_indices)  # shipped: 125
    assert stamp["objectnet"]["classes"] == f"4 folders mapped to {mapped} of 1000"
    assert stamp["objectnet"]["crop"] == "2px border" and stamp["objectnet"]["images"] == "4"
    assert list(stamp["objectnet"]) == ["classes", "images", "crop", "prompts", "preprocess", "clipshift"]


def test_published_tables_carry_their_sources_stamps(tmp_path):
    timm = read_results(write_timm_folder(tmp_path / "timm")).set_index(["model", "dataset"])
    assert timm.loc[("resnet50.a1_in1k@288", "imagenet-r"), "protocol"] == (
        "classes=200 of 1000; images=30000; prompts=none (own head); preprocess=288px, crop_pct 0.95, bicubic; "
        "source=timm")
    v2 = parse_protocol(timm.loc[("convnext_tiny.fb_in1k", "imagenet-v2"), "protocol"])
    assert v2["variant"] == "matched-frequency" and v2["images"] == "10000"
    openclip = read_results(write_openclip_table(tmp_path / "openclip_results.csv")).set_index(["model", "dataset"])
    objectnet = parse_protocol(openclip.loc[("ViT-B-32/openai", "objectnet"), "protocol"])
    assert objectnet["classes"] == "113 objectnet names" and objectnet["source"] == "open_clip"
    records = [{"dataset": d, "model": "ViT-B-32", "pretrained": "openai", "task": "zeroshot_classification",
                "metrics": {"acc1": 0.5}} for d in ("imagenet1k", "objectnet", "wds/imagenet-a")]
    (tmp_path / "cb").mkdir()
    for i, record in enumerate(records):
        (tmp_path / "cb" / f"{i}.json").write_text(json.dumps(record))
    cb = read_results(tmp_path / "cb").set_index("dataset")["protocol"].map(parse_protocol)
    assert cb["objectnet"]["crop"] == "none" and cb["objectnet"]["source"] == "CLIP_benchmark"
    assert cb["imagenet-a"]["classes"] == "200 of 1000" and cb["imagenet"]["images"] == "50000"
    soups = tmp_path / "individual_model_results.jsonl"
    soups.write_text('{"model_name": "soup", "ImageNet": 0.8, "ObjectNet": 0.5, "ImageNetR": 0.7}\n')
    testbed = read_results(soups).set_index("dataset")["protocol"].map(parse_protocol)
    assert testbed["objectnet"]["classes"] == "113 folders mapped to 125 of 1000"
    assert testbed["objectnet"]["crop"] == "2px border" and testbed["imagenet-r"]["source"] == "testbed"


def _ours(path: Path, classes_r: str) -> Path:
    """A results.csv of two models of ours, on imagenet and imagenet-r, stamped with `classes_r` on imagenet-r."""
    rows = []
    for model, x in (("ours_a", 0.6), ("ours_b", 0.7)):
        for dataset in ("imagenet", "imagenet-r"):
            shift = dataset != "imagenet"
            stamp = format_protocol({"classes": classes_r if shift else "1000", "images": 30000 if shift else 50000,
                                     "prompts": "openai 80 #x", "clipshift": "0.1.0"})
            rows.append(dict(model=model, dataset=dataset, metric="top1", value=_acc(x, dataset) + 0.1 * shift,
                             num_examples=30000, protocol=stamp))
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_er_refuses_rows_of_one_dataset_measured_differently(tmp_path, capsys):
    timm = write_timm_folder(tmp_path / "timm")
    base = ["er", "--baseline", str(timm), "--baseline-filter", "in1k-only", "--shifts", "imagenet-r",
            "--bootstrap", "50", "--out", str(tmp_path / "er")]
    full = _ours(tmp_path / "full.csv", "1000")  # ImageNet-R scored over all 1000 classes, against timm's 200
    assert main([*base, "--results", str(full)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.startswith("clipshift er: error: imagenet-r: rows measured under different "
                                                  "protocols (classes differ): ")
    assert "'classes=1000; images=30000' (full.csv: 2 model(s), e.g. ours_a)" in error
    assert "'classes=200 of 1000; images=30000' (timm: 5 model(s), e.g. resnet50.a1_in1k@224)" in error
    assert error.endswith("or pass --allow-mixed-protocols (allow_mixed_protocols=True)")
    assert main([*base, "--results", str(full), "--allow-mixed-protocols"]) == 0
    assert "imagenet-r         MIXED: classes=2 values (1000 | 200 of 1000)" in capsys.readouterr().out
    masked = _ours(tmp_path / "masked.csv", "200 of 1000")
    assert main([*base, "--results", str(masked)]) == 0
    out = capsys.readouterr().out
    assert "  imagenet-r         classes=200 of 1000; images=30000; source=timm\n" in out
    er = effective_robustness(masked, timm, baseline_filter=imagenet1k_only, shifts=["imagenet-r"], n_bootstrap=50)
    assert er[er["model"] == "ours_b"]["effective_robustness"].iloc[0] == pytest.approx(0.1, abs=1e-3)
    assert "protocol" not in er.columns and er.attrs["protocols"]["imagenet"].startswith("classes=1000; images=50000")


def test_objectnet_of_ours_and_open_clips_are_not_compared(tmp_path):
    openclip = write_openclip_table(tmp_path / "openclip_results.csv")
    stamp = "classes=113 folders mapped to 125 of 1000; images=18574; crop=2px border; prompts=openai 80 #x"
    rows = [dict(model=f"b{i}", dataset=d, metric="top1", value=v, num_examples=18574, group="baseline",
                 protocol=(stamp if d == "objectnet" else "classes=1000; images=50000"))
            for i, x in enumerate(BASE_X) for d, v in (("imagenet", x), ("objectnet", x / 2))]
    table = pd.DataFrame(rows)
    with pytest.raises(MixedProtocolsError, match=r"^objectnet: rows measured under different protocols \(classes "
                       r"differ\): 'classes=113 folders mapped to 125 of 1000; images=18574; crop=2px border' "
                       r"\(results: 4 model\(s\), e\.g\. b0\) vs 'classes=113 objectnet names; images=18574' "
                       r"\(openclip_results\.csv: 2 model\(s\)"):
        effective_robustness(pd.concat([table, read_results(openclip)]), shifts=["objectnet"], n_bootstrap=20)
    unstamped = table.assign(protocol=None)  # rows without a stamp are not held against anyone
    er = effective_robustness(pd.concat([unstamped, read_results(openclip)]), shifts=["objectnet"], n_bootstrap=20)
    assert set(er["model"]) >= {"ViT-B-32/openai", "b0"}


def test_reports_print_each_datasets_protocol_once(evaluated):
    results = pd.read_csv(evaluated)
    other = results.assign(model="other", protocol=results["protocol"].str.replace("simple", "openai"))
    section = protocol_section(pd.concat([results, other]))
    lines = [line for line in section.splitlines() if line.startswith("- `")]
    assert [line.split("`")[1] for line in lines] == ["imagenet", "imagenet-v2", "imagenet-r", "objectnet"]
    assert lines[2].startswith("- `imagenet-r`: classes=4 of 1000; images=8; prompts=2 values (simple ")
    assert section.startswith("## Evaluation protocol") and protocol_section(results.drop(columns="protocol")) == ""
