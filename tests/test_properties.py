"""Property-based tests: random malformed inputs (results tables, caption tables, YAML settings) give a
ValueError or FileNotFoundError that says what is wrong, never another exception, and the CLI's
one-line error with exit code 2."""

import string
from dataclasses import fields

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from clipshift.cli import main
from clipshift.data.csv_source import read_caption_table
from clipshift.recipes.quickstart import QuickstartConfig, load_config
from clipshift.recipes.study import StudyConfig, load_study_config
from clipshift.recipes.common.training import TrainRunConfig, load_train_config
from clipshift.robustness import read_results
from clipshift.train.loop import TrainConfig

BOUNDED = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LONG_HEADER = ["model", "dataset", "metric", "value", "num_examples"]

cell = st.text(alphabet=string.ascii_letters + string.digits + " ._-/%", max_size=12)
number_text = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        st.integers(-1000, 1000).map(str), st.sampled_from(["", "n/a", "75%", "1e400", "0x10"]))
raw_bytes = st.one_of(st.binary(max_size=300),
                      st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")
                                                if "\ud800" > t else t.encode("utf-8", "replace")))


def _write(folder, name: str, data: bytes):
    path = folder / name
    path.write_bytes(data)
    return path


def _csv(rows: list[list[str]]) -> bytes:
    return "\n".join(",".join(r) for r in rows).encode() + b"\n"


def _check_error(error: BaseException, path) -> None:
    assert isinstance(error, (ValueError, FileNotFoundError)), repr(error)
    assert str(path) in str(error), str(error)


# --- results tables (`clipshift er --results FILE`) ------------------------------------------------------------

@st.composite
def broken_long_table(draw):
    """A long results table with one thing wrong: a column missing, a value that is no number or no
    accuracy (negative, above 100 %), or a duplicate row."""
    n = draw(st.integers(1, 6))
    rows = [[f"m{i % 3}", draw(st.sampled_from(["imagenet", "imagenet-r", "test"])) + str(i), "top1",
             str(draw(st.floats(0, 1))), "100"] for i in range(n)]
    fault = draw(st.sampled_from(["drop_column", "not_a_number", "negative", "over_100", "duplicate"]))
    header = list(LONG_HEADER)
    if fault == "drop_column":
        drop = draw(st.sampled_from(range(4)))
        header.pop(drop)
        rows = [r[:drop] + r[drop + 1:] for r in rows]
    else:
        i = draw(st.integers(0, n - 1))
        if fault == "duplicate":
            rows.append(list(rows[i]))
        else:
            rows[i][3] = {"not_a_number": draw(cell.filter(lambda c: not _is_number(c))),
                          "negative": str(-draw(st.floats(1e-3, 1e6))),
                          "over_100": str(draw(st.floats(100.01, 1e9)))}[fault]
    return _csv([header, *rows])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text.strip() == ""  # a blank cell is a missing value, not an error
    return True


@BOUNDED
@given(data=broken_long_table())
def test_a_broken_results_table_is_an_error_naming_the_file(tmp_path, data):
    path = _write(tmp_path, "results.csv", data)
    with pytest.raises((ValueError, FileNotFoundError)) as caught:
        read_results(path)
    _check_error(caught.value, path)


@BOUNDED
@given(data=raw_bytes, suffix=st.sampled_from([".csv", ".tsv", ".json", ".jsonl", ".txt"]))
def test_any_bytes_as_a_results_table_read_or_fail_clearly(tmp_path, data, suffix):
    path = _write(tmp_path, f"results{suffix}", data)
    try:
        table = read_results(path)
    except (ValueError, FileNotFoundError) as error:
        _check_error(error, path)
    else:  # read: then it holds accuracies
        top1 = table[table["metric"] == "top1"]["value"].dropna()
        assert top1.between(0, 1).all()


def test_er_on_a_malformed_table_exits_2_with_one_line(tmp_path, capsys):
    for name, data in (("empty.csv", b""), ("cols.csv", b"model,score\na,1\n"), ("nan.csv", _csv(
            [LONG_HEADER, ["a", "imagenet", "top1", "lots", "10"]])), ("bin.csv", bytes(range(256)))):
        path = _write(tmp_path, name, data)
        assert main(["er", "--results", str(path), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("clipshift er: error: ") and err.count("\n") == 1 and str(path) in err


# --- caption tables ------------------------------------------------------------------------------------------

@BOUNDED
@given(header=st.lists(st.sampled_from(["filepath", "caption", "label", "x", "file path", ""]), max_size=4),
       rows=st.lists(st.lists(st.one_of(cell, st.just("img.png"), st.just("~nobody/x.png")), max_size=4),
                     max_size=4),
       sep=st.sampled_from([",", "\t", ";"]))
def test_a_malformed_caption_table_is_an_error_naming_the_file(tmp_path, header, rows, sep):
    (tmp_path / "img.png").write_bytes(b"\x89PNG")  # exists: only its path is checked here
    path = _write(tmp_path, "captions.csv", "\n".join(sep.join(r) for r in [header, *rows]).encode())
    try:
        table = read_caption_table(path)
    except (ValueError, FileNotFoundError) as error:
        _check_error(error, path)
    else:
        assert len(table) and (table["caption"].str.strip() != "").all()
        assert all(p.endswith("img.png") for p in table["filepath"])


@BOUNDED
@given(data=raw_bytes)
def test_any_bytes_as_a_caption_table_read_or_fail_clearly(tmp_path, data):
    path = _write(tmp_path, "captions.tsv", data)
    try:
        read_caption_table(path)
    except (ValueError, FileNotFoundError) as error:
        _check_error(error, path)


# --- YAML settings -------------------------------------------------------------------------------------------

yaml_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                        st.text(max_size=8))
yaml_value = st.recursive(yaml_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                               st.dictionaries(st.text(max_size=6), inner,
                                                                               max_size=3)), max_leaves=6)


def _settings(cls, sections: dict):
    """Mappings whose keys are mostly the dataclass's own settings (some unknown), with values of any
    type; a section named in `sections` gets a mapping of its dataclass's settings."""
    names = [f.name for f in fields(cls)]

    def value_for(name):
        if name in sections:
            return st.one_of(_settings(sections[name], {}), yaml_value)
        return yaml_value

    known = st.sampled_from(names).flatmap(lambda n: st.tuples(st.just(n), value_for(n)))
    unknown = st.tuples(st.text(min_size=1, max_size=6).filter(lambda k: k not in names), yaml_value)
    return st.lists(st.one_of(known, known, unknown), max_size=4).map(dict)


LOADERS = {
    "train": (lambda p: load_train_config(p), _settings(TrainRunConfig, {"train": TrainConfig})),
    "study": (lambda p: load_study_config(p), _settings(StudyConfig, {"contrastive": TrainConfig,
                                                                       "simclr": TrainConfig})),
    "quickstart": (lambda p: load_config("default", p), _settings(QuickstartConfig, {"supervised": TrainConfig})),
}


@pytest.mark.parametrize("recipe", list(LOADERS))
@BOUNDED
@given(data=st.data())
def test_random_settings_files_load_or_fail_clearly(tmp_path, recipe, data):
    load, strategy = LOADERS[recipe]
    document = data.draw(st.one_of(strategy, strategy, yaml_value), label="settings")
    path = _write(tmp_path, "settings.yaml", yaml.safe_dump(document).encode())
    try:
        load(path)
    except (ValueError, FileNotFoundError) as error:
        message = str(error)
        if not isinstance(document, dict):  # the file itself is wrong: it is named
            assert str(path) in message, message
        else:  # a setting is wrong: it is named, or its section, or the settings file
            keys = [*document, *(k for v in document.values() if isinstance(v, dict) for k in v)]
            names = {str(k) for k in keys} | {repr(k) for k in keys}
            assert any(name in message for name in names) or str(path) in message, (message, document)


@pytest.mark.parametrize("recipe", list(LOADERS))
@BOUNDED
@given(data=raw_bytes)
def test_any_bytes_as_a_settings_file_load_or_fail_clearly(tmp_path, recipe, data):
    assume(data.strip())
    path = _write(tmp_path, "settings.yaml", data)
    try:
        LOADERS[recipe][0](path)
    except (ValueError, FileNotFoundError) as error:
        if "YAML" in str(error) or "text" in str(error) or "mapping" in str(error):
            assert str(path) in str(error)


def test_a_bad_settings_file_on_the_command_line_exits_2_with_one_line(tmp_path, capsys):
    cases = {"broken.yaml": b"train: [1, 2\n", "list.yaml": b"- 1\n- 2\n", "binary.yaml": b"\xff\xfe\x00\x01",
             "types.yaml": b"train:\n  lr: fast\n", "sci.yaml": b"train:\n  lr: 1e-3\n"}
    expected = {"broken.yaml": "not valid YAML", "list.yaml": "expected a mapping of settings, got list",
                "binary.yaml": "not a text file", "types.yaml": "train.lr: expected float, got 'fast' (str)",
                "sci.yaml": "YAML reads 1e-3 as text, write 1.0e-3"}
    for name, data in cases.items():
        path = _write(tmp_path, name, data)
        assert main(["train", str(path), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("clipshift train: error: ") and err.count("\n") == 1 and expected[name] in err, err
    assert main(["train", str(path), "--quiet", "train.lr=[0.1"]) == 2  # a setting on the command line
    assert "setting 'train.lr=[0.1': the value is not valid YAML" in capsys.readouterr().err


def test_nested_settings_of_the_wrong_type_are_named(tmp_path):
    cases = [({"baselines": [{"train_size": "big", "epochs": 2}, {"train_size": 300, "epochs": 2}]},
              r"config\.baselines\[0\]\.train_size: expected int, got 'big'"),
             ({"distributions": {"narrow": {"rotation": [1]}}}, r"distributions\.narrow\.rotation: expected float"),
             ({"distributions": {"narrow": {"scale": [0.5]}}}, r"distributions\.narrow\.scale: expected tuple"),
             ({"supervised": {"epochs": 2.5}}, r"config\.supervised\.epochs: expected int, got 2\.5"),
             ({"jobs": True}, r"config\.jobs: expected int, got True")]
    for values, message in cases:
        with pytest.raises(ValueError, match=message):
            load_config("default", _write(tmp_path, "q.yaml", yaml.safe_dump(values).encode()))
    for values, message in [({"sources": [1]}, r"sources\[0\]: expected a mapping"),
                            ({"sources": [{"type": ["world"]}]}, r"sources\[0\]: unknown type \['world'\]"),
                            ({"sources": [{"type": "world", "weight": "x"}]}, r"weight must be a positive number"),
                            ({"train": {"lr": float("nan")}}, r"lr must be positive, got nan"),
                            ({"image_size": "32"}, r"settings\.image_size: expected int, got '32'")]:
        with pytest.raises(ValueError, match=message):
            load_train_config(_write(tmp_path, "t.yaml", yaml.safe_dump(values).encode()))
