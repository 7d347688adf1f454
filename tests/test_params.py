"""params.yaml is validated once, when it loads: every mistake is one line naming the key and the fix."""

import sys

import pytest

from helpers import ROOT, stage_cmd
from stages.lib.core.backbones import BACKBONES, REGISTRY
from stages.lib.core.errors import UserError
from stages.lib.params.loader import load_params
from stages.lib.params.messages import sections
from stages.lib.params.schema import Assemble, Config
from tools.params_docs import params_table

STUDY = (ROOT / "params.yaml").read_text()


def load(tmp_path, old: str, new: str):
    """params.yaml with one line changed, loaded."""
    assert old in STUDY
    path = tmp_path / "params.yaml"
    path.write_text(STUDY.replace(old, new, 1))
    return load_params(path)


def test_committed_params_are_the_declared_defaults():
    assert load_params(ROOT / "params.yaml") == Config(assemble=Assemble())


def test_every_param_is_documented_in_docs_params_md():
    doc = (ROOT / "docs" / "params.md").read_text()
    assert params_table() in doc, "regenerate the table: python -m tools.params_docs docs/params.md"
    assert all(f"| `{key}` |" in doc for key, _, sub in sections() if sub is None)


@pytest.mark.parametrize("written,value", [("1e-3", 0.001), ("1.0e-3", 0.001), ("0.001", 0.001), ("1E-4", 1e-4)])
def test_a_number_with_an_exponent_is_a_number_as_dvc_reads_it(tmp_path, written, value):
    cfg = load(tmp_path, "  lr: 5.0e-5", f"  lr: {written}")
    assert cfg.train.lr == value and type(cfg.train.lr) is float


REFUSALS = {  # case: (line in params.yaml, its replacement, the message after "<file>: ")
    "unknown key": ("  lr: 5.0e-5", "  lrr: 5.0e-5", "unknown key train.lrr; did you mean train.lr?"),
    "unknown section": ("evaluate:\n", "evalute:\n", "unknown key evalute; did you mean evaluate?"),
    "quoted false": (
        "  pretrained: true",
        '  pretrained: "false"',
        "train.pretrained must be true or false, got 'false'; write it without quotes",
    ),
    "YAML 1.1 yes": ("  compile: false", "  compile: yes", "train.compile must be true or false, got 'yes'"),
    "quoted number": (
        "  lr: 5.0e-5",
        '  lr: "0.1"',
        "train.lr must be a number in (0, 1], got '0.1'; write it without quotes",
    ),
    "string dropout": (
        "  dropout: 0.1",
        '  dropout: "0.1"',
        "train.dropout must be a number in [0, 1), got '0.1'; write it without quotes",
    ),
    "string clahe_clip_limit": (
        "  clahe_clip_limit: 1.5",
        "  clahe_clip_limit: high",
        "preprocess.clahe_clip_limit must be a number in (0, 40], got 'high'",
    ),
    "string num_workers": (
        "  num_workers: auto",
        '  num_workers: "4"',
        "train.num_workers must be auto or an integer from 0 to 64, got '4'; write it without quotes",
    ),
    "zero threads": (
        "  threads: null ",
        "  threads: 0 ",
        "train.threads must be null or an integer from 1 to 1024, got 0",
    ),
    "string seed": (
        "  seed: 42   ",
        "  seed: forty-two   ",
        "data.seed must be an integer in [0, 4294967296), got 'forty-two'",
    ),
    "seeds not a list of distinct integers": (
        "seeds: [42]",
        "seeds: [42, 42]",
        "seeds must be a non-empty list of distinct integers from 0 to 2**32 - 1, got [42, 42]",
    ),
    "train.seed": (
        "train:\n",
        "train:\n  seed: 42\n",
        "train.seed moved to the top level as a list: write `seeds: [42]` beside `backbones:` (one training "
        "run per backbone and seed)",
    ),
    "fractional epochs": ("  epochs: 50", "  epochs: 2.5", "train.epochs must be an integer >= 1, got 2.5"),
    "img_size 1": ("  img_size: 256", "  img_size: 1", "preprocess.img_size must be an integer from 32 to 1024, got 1"),
    "img_size 100000": (
        "  img_size: 256",
        "  img_size: 100000",
        "preprocess.img_size must be an integer from 32 to 1024, got 100000",
    ),
    "unknown choice": (
        "  scheduler: plateau",
        "  scheduler: step",
        "train.scheduler must be one of plateau, cosine, got 'step'",
    ),
    "train.amp": (
        "  precision: auto",
        "  amp: true\n  precision: auto",
        "train.amp was removed: train.precision is the one mixed-precision knob (auto | bf16 | fp16 | fp32; "
        "amp: false is precision: fp32); delete train.amp",
    ),
    "train.backbones": (
        "train:\n",
        "train:\n  backbones: [resnet18]\n",
        "train.backbones moved to the top level: write `backbones: [...]` beside `train:`, not inside it",
    ),
    "backbone without a record": (
        "backbones: [resnet18,",
        "backbones: [vgg16, resnet18,",
        f"backbones lists 'vgg16', which has no record in {REGISTRY} (records: {', '.join(BACKBONES)}); add its "
        "record there or remove the name",
    ),
    "missing key": (
        "  lr: 5.0e-5\n",
        "",
        "train.lr is missing; add it (default: {{lr: 5.0e-05}}). Every param must be in {path}, where DVC tracks it",
    ),
    "key given twice": (
        "  lr: 5.0e-5",
        "  lr: 5.0e-5\n  lr: 1e-3",
        "key 'lr' appears twice (line {lr_line}); keep one",
    ),
    "duplicate classes": (
        "classes: [normal, bacteria, virus, COVID-19]",
        "classes: [normal, covid, COVID-19]",
        "data.classes must be two or more distinct class names (no commas), e.g. [normal, pneumonia], "
        "got ['normal', 'covid', 'COVID-19']",
    ),
    "caps not the study's classes": (
        "virus: null, COVID-19: null}",
        "virus: null, covid: 5}",
        "assemble.max_per_class must map normal, bacteria, virus, COVID-19 to "
        "null or an integer >= 1, got {{'normal': None, 'bacteria': None, 'virus': None, 'covid': 5}}",
    ),
    "alpha 1": ("  alpha: 0.1", "  alpha: 1.0", "evaluate.alpha must be a number in (0, 1), got 1.0"),
    "alpha 0": ("  alpha: 0.1", "  alpha: 0", "evaluate.alpha must be a number in (0, 1), got 0"),
    "target class not in data.classes": (
        "  target_sensitivity: {}",
        "  target_sensitivity: {covid: 0.95}",
        "evaluate.target_sensitivity names 'covid', not in data.classes ['normal', 'bacteria', 'virus', 'COVID-19']; "
        "use one of those names",
    ),
    "target sensitivity above 1": (
        "  target_sensitivity: {}",
        "  target_sensitivity: {COVID-19: 95}",
        "evaluate.target_sensitivity must map each class to a sensitivity in (0, 1]; COVID-19 has 95",
    ),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_bad_params_are_refused_in_one_line_naming_the_key(tmp_path, case):
    old, new, message = REFUSALS[case]
    with pytest.raises(UserError) as err:
        load(tmp_path, old, new)
    path = tmp_path / "params.yaml"
    lr_line = STUDY[: STUDY.index("  lr: 5.0e-5")].count("\n") + 1  # the line the key is first given on
    assert str(err.value) == f"{path}: {message.format(path=path, lr_line=lr_line)}"


def test_a_missing_section_is_refused_with_its_defaults(tmp_path):
    start, end = STUDY.index("\ntrain:\n"), STUDY.index("\nevaluate:\n")
    with pytest.raises(UserError) as err:
        load(tmp_path, STUDY[start:end], "")
    message = str(err.value)
    assert (
        message.startswith(
            f"{tmp_path / 'params.yaml'}: train is missing; add it (default: {{train: {{pretrained: true, lr: 5.0e-05,"
        )
        and "\n" not in message
    )


def test_a_refused_param_stops_the_stage_before_any_work(tmp_path, monkeypatch, capsys):
    import stages.preprocess

    (tmp_path / "params.yaml").write_text(STUDY.replace("  img_size: 256", "  img_size: 100000"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", stage_cmd("preprocess")[2:])
    with pytest.raises(SystemExit) as done:
        stages.preprocess.main()
    err = capsys.readouterr().err
    assert done.value.code == 2 and err == (
        "error: params.yaml: preprocess.img_size must be an integer from 32 to 1024, got 100000\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_per_class_caps_are_read_in_any_key_order():
    """A tool that rewrites params.yaml may sort a mapping's keys; the caps mean the same."""
    from stages.lib.params.schema import Assemble

    caps = Assemble.model_validate({"max_per_class": {"virus": None, "COVID-19": 3, "bacteria": None, "normal": 5}})
    assert list(caps.max_per_class.items()) == [("normal", 5), ("bacteria", None), ("virus", None), ("COVID-19", 3)]
