"""The bag-of-words text tower, the quickstart's baseline settings, parallel jobs and the loop's hook."""

import math
import os

import pytest
import torch

from clipshift.models.factory import ModelSpec, build_model, get_tokenizer, load_checkpoint, save_checkpoint
from clipshift.models.text import BagOfWordsText
from clipshift.parallel import resolve_jobs, run_jobs, run_largest_first
from clipshift.recipes.common.world import BaselineRun
from clipshift.recipes.quickstart import load_config
from clipshift.train.loop import TrainConfig, TrainData, train
from jobs_helpers import fails, pid_and_square


def test_bag_of_words_is_the_mean_of_the_real_tokens_embeddings():
    torch.manual_seed(0)
    tower = BagOfWordsText(vocab_size=50, width=8, embed_dim=4, context_length=6)
    text = torch.tensor([[3, 7, 9, 0, 0, 0], [9, 3, 7, 0, 0, 0], [3, 7, 9, 9, 0, 0]])
    out = tower(text)
    emb = tower.token_embedding.weight
    expected = tower.text_projection(tower.ln_final(emb[[3, 7, 9]].mean(0)))
    torch.testing.assert_close(out[0], expected)
    torch.testing.assert_close(out[1], out[0])  # word order does not matter
    assert not torch.allclose(out[2], out[0])  # a repeated word counts twice
    assert torch.count_nonzero(emb[0]) == 0  # padding has no embedding and no share of the mean


def test_bag_of_words_clip_trains_saves_and_loads(tmp_path):
    spec = ModelSpec("clip", "clipshift-tiny-bow", ["circle", "square"])
    model = build_model(spec, seed=0)
    assert type(model).__name__ == "CustomTextCLIP" and isinstance(model.text, BagOfWordsText)
    assert math.isclose(model.logit_scale.exp().item(), 100.0, rel_tol=1e-5)  # the config's temperature
    tokens = get_tokenizer("clipshift-tiny-bow")(["a red circle", "my square"])
    out = model(torch.randn(2, 3, 32, 32), tokens)
    out["text_features"].sum().backward()
    assert model.text.token_embedding.weight.grad.abs().sum() > 0
    save_checkpoint(model, spec, tmp_path / "m")
    loaded, _ = load_checkpoint(tmp_path / "m")
    model.eval()
    torch.testing.assert_close(loaded.encode_text(tokens), model.encode_text(tokens))


def test_a_transformer_architecture_is_unchanged():
    model = build_model(ModelSpec("clip", "clipshift-tiny", ["a", "b"]), seed=0)
    assert type(model).__name__ == "CLIP" and hasattr(model, "transformer")


def test_baseline_runs_are_named_by_their_settings_and_validated():
    assert BaselineRun(300, 6).name() == "baseline_n300_e6"  # earlier runs keep their names
    assert BaselineRun(300, 6, augment=False, architecture="clipshift-tiny-bow").name() == \
        "baseline_n300_e6_noaug_clipshift-tiny-bow"
    assert BaselineRun(300, 6, distribution="diverse").name() == "baseline_diverse_n300_e6"
    with pytest.raises(ValueError, match="same settings"):
        load_config("tiny", overrides={"baselines": [dict(train_size=200, epochs=4)] * 3})
    with pytest.raises(ValueError, match="distribution must be"):
        load_config("tiny", overrides={"baselines": [dict(train_size=200, epochs=4), dict(train_size=300, epochs=4),
                                                     dict(train_size=300, epochs=4, distribution="web")]})
    with pytest.raises(ValueError, match="at least 2 runs on narrow"):
        load_config("tiny", overrides={"baselines": [dict(train_size=200, epochs=4),
                                                     dict(train_size=300, epochs=4, distribution="diverse")]})


def test_jobs_run_in_other_processes_and_keep_the_order():
    out = list(run_jobs(pid_and_square, [(i,) for i in range(5)], 2))
    assert [square for _, square in out] == [0, 1, 4, 9, 16]
    assert os.getpid() not in {pid for pid, _ in out}
    assert {pid for pid, _ in run_jobs(pid_and_square, [(1,), (2,)], 1)} == {os.getpid()}


def test_largest_tasks_start_first_and_keep_their_index():
    out = list(run_largest_first(pid_and_square, [(1,), (2,), (3,)], 1, sizes=[5, 1, 9]))
    assert [(i, square) for i, (_, square) in out] == [(2, 9), (0, 1), (1, 4)]


def test_a_failing_job_raises_its_own_error_in_the_caller():
    with pytest.raises(ValueError, match="bad task 1"):
        list(run_jobs(fails, [(1,), (2,)], 2, names=["first", "second"]))
    assert resolve_jobs(3) == 3 and resolve_jobs(0) >= 1
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="jobs must be"):
            resolve_jobs(bad)


def test_the_loop_calls_on_step_after_every_optimizer_step():
    model = build_model(ModelSpec("classifier", "clipshift-tiny-bow", ["a", "b"]), seed=0)
    data = TrainData(torch.randint(0, 255, (40, 3, 32, 32), dtype=torch.uint8), labels=torch.arange(40) % 2)
    seen = []
    train(model, data, TrainConfig(epochs=2, batch_size=16), progress=False,
          on_step=lambda step, m: seen.append((step, m.training)))
    assert seen == [(s, True) for s in range(1, 7)]  # ceil(40 / 16) = 3 steps per epoch


def test_a_bag_of_words_architecture_name_with_a_weights_file_is_a_clear_error(tmp_path):
    from clipshift.models.load import load_model

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not used")
    with pytest.raises(ValueError, match="bag_of_words text tower .* checkpoint folder"):
        load_model("clipshift-tiny-bow", str(weights))
