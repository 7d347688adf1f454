"""The benchmark scripts, run in their smoke modes: the JSON they write, never their timings;
and the pieces of the GPU check and the preprocess hooks the benchmarks rely on."""

import json
import os

import numpy as np
import pytest
import yaml

from helpers import CLASS_NAMES, ROOT, course_tree, data_params, run

STAMP = {"commit", "date", "machine", "torch", "repeats"}
SPREAD = {"median", "min", "max", "runs"}


def smoke(module: str, out, *extra, beside=()) -> dict:
    stdout = run(["python", "-m", module, "--smoke", "--out", str(out), *extra], ROOT).stdout
    assert f"-> {out}" in stdout
    # written atomically: no temp file left, only the result and what it names `beside` it
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, *beside])
    return json.loads(out.read_text())


@pytest.mark.slow
def test_loader_bench_smoke_gives_headline_spreads_and_other_sizes(tmp_path):
    r = smoke("bench.loader", tmp_path / "loader.json", "--repeats", "2")
    assert STAMP <= set(r) and r["repeats"] == 2 and r["smoke"] is True
    assert r["img_size"] == 32 and [o["img_size"] for o in r["other_sizes"]] == [16]
    assert r["workers"] == max(1, os.cpu_count() // 2)  # the study's rule, given to both loaders
    for row in [r, *r["other_sizes"]]:
        ours, study = row["ours_img_s"], row["study_img_s"]
        assert set(ours) == SPREAD == set(study) and len(ours["runs"]) == len(study["runs"]) == 2
        assert (ours["min"], ours["max"]) == (min(ours["runs"]), max(ours["runs"]))
        assert row["speedup"] == pytest.approx(ours["median"] / study["median"], rel=0.02)
        # the range pairs our slowest run with the study's fastest, and the other way round
        low, high = row["speedup_range"]
        assert low == pytest.approx(ours["min"] / study["max"], rel=0.02) and high == pytest.approx(
            ours["max"] / study["min"], rel=0.02
        )
        assert low < row["speedup"] < high


@pytest.mark.slow
def test_epoch_bench_smoke_breaks_the_headline_epoch_into_model_and_loader_parts(tmp_path):
    r = smoke("bench.epoch", tmp_path / "epoch.json", "--repeats", "1", "--workers", "0")
    assert STAMP <= set(r) and r["img_size"] == 32 and r["other_sizes"][0]["img_size"] == 16
    assert set(r["ours_parts_s"]) == {"train_pass", "val_pass"}
    assert set(r["study_parts_s"]) == {"train_pass", "train_eval_pass", "val_pass"}
    assert sum(r["study_parts_s"].values()) == pytest.approx(r["study_s"]["median"], rel=0.05, abs=0.05)
    b = r["breakdown"]
    assert set(b["model_s"]) == {"train_pass", "train_eval_pass", "val_pass"}
    assert set(b["loader_s"]["study"]) == {"train", "train_eval", "val"} and set(b["loader_s"]["ours"]) == {
        "train",
        "val",
    }
    m = b["model_s"]
    assert b["speedup_if_data_were_free"] == pytest.approx(
        sum(m.values()) / (m["train_pass"] + m["val_pass"]), abs=0.01
    )
    assert set(b["train_pass_excess_s"]) == {"ours", "study"} and "breakdown" not in r["other_sizes"][0]


def test_benches_refuse_fewer_than_three_repeats_outside_smoke():
    from bench.common import check_repeats
    from stages.lib.core.errors import UserError

    with pytest.raises(UserError, match="at least 3 times"):
        check_repeats(2, smoke=False)
    check_repeats(1, smoke=True)
    check_repeats(3, smoke=False)


@pytest.mark.slow
def test_gpu_bench_smoke_writes_real_and_ceiling_per_backbone(tmp_path):
    r = smoke("bench.gpu", tmp_path / "gpu.json", "--backbones", "resnet18", "--repeats", "1")
    assert r["device"] == "cpu" and r["smoke"] is True and r["img_size"] == 32 and r["precision"] == "float32"
    assert STAMP <= set(r) and list(r["backbones"]) == ["resnet18"] and r["workers"] == 1
    b = r["backbones"]["resnet18"]
    assert {"real_img_s", "ceiling_img_s", "real_over_ceiling", "first_batch_ms", "loader_img_s"} <= set(b)
    assert r["batch_sizes"] == {
        size: {"resnet18": {"note": "more than the 12 training images"}} for size in ("64", "256")
    }
    assert b["real_over_ceiling"] == pytest.approx(b["real_img_s"]["median"] / b["ceiling_img_s"]["median"], rel=0.02)


@pytest.mark.slow
def test_gpu_bench_refuses_to_run_without_a_gpu_unless_smoke(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run(["python", "-m", "bench.gpu", "--out", str(tmp_path / "gpu.json")], ROOT, check=False)
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == "error: bench.gpu needs a CUDA device; use --smoke for a CPU check of the script"
    )
    assert not (tmp_path / "gpu.json").exists()


@pytest.mark.slow
def test_gpu_check_smoke_runs_the_stages_in_dvc_yaml_order_then_the_bench(tmp_path):
    results = tmp_path / "results"
    run(
        [
            "python",
            "-m",
            "tools.gpu.gpu_check",
            "--smoke",
            "--runner",
            "stages",
            "--results",
            str(results),
            "--wheels",
            str(tmp_path / "no-wheels"),
        ],
        ROOT,
    )
    r = json.loads((results / "gpu.json").read_text())
    check = r["check"]
    assert check["ok"] is True and check["pipeline"]["runner"] == "stages"
    assert [s["stage"] for s in check["pipeline"]["stages"]] == [
        "synthesize",
        "preprocess",
        "external@shifted",
        "pixel_shortcut",
        "train@resnet18-42",
        "evaluate@resnet18-42",
        "combine@resnet18",
        "ensemble",
        "report",
    ]
    assert all(check["pipeline"]["outputs"].values()) and check["bench"]["exit"] == 0
    b = r["backbones"]["resnet18"]
    assert b["stage_over_real"] == pytest.approx(b["stage_img_s"] / b["real_img_s"]["median"], rel=0.02)
    assert b["epoch1_img_s"] == b["stage_img_s"] and "epoch2_img_s" not in b and b["first_batch_s"] >= 0  # 1 epoch
    assert b["agreement"]["films"] == 32 and b["agreement"]["max_prob_diff"] > 0  # val + test, fp32 against bf16
    assert set(check["goals"]["resnet18"]) == {
        "epoch1_ok",
        "real_over_ceiling_ok",
        "stage_matches_real_ok",
        "timed_long_enough_ok",
        "evaluate_agrees_ok",
    }
    assert check["goals"]["resnet18"]["epoch1_ok"] is None and "check" not in check["goals"]  # smoke: no time goal
    times = {s["stage"]: s["seconds"] for s in check["pipeline"]["stages"]}
    row = check["table"]["resnet18"]
    assert (row["train_s"], row["evaluate_s"]) == (times["train@resnet18-42"], times["evaluate@resnet18-42"])
    assert row["real_over_ceiling"] == b["real_over_ceiling"] and row["agreement"] == b["agreement"]["agreeing"]
    log = (results / "gpu_check.log").read_text()
    assert "gpu check passed" in log and "real/ceil stage/real" in log


def test_gpu_check_refuses_an_incomplete_wheel_folder_and_still_leaves_json_and_log(tmp_path):
    wheels = tmp_path / "whl"
    wheels.mkdir()
    (wheels / "albumentations-2.0.8-py3-none-any.whl").write_bytes(b"")
    proc = run(
        ["python", "-m", "tools.gpu.gpu_check", "--smoke", "--results", str(tmp_path), "--wheels", str(wheels)],
        ROOT,
        check=False,
    )
    assert proc.returncode == 2
    error = json.loads((tmp_path / "gpu.json").read_text())["check"]["error"]
    assert (
        "lacks" in error and "dvc==3.67.1" in error and "albumentations==" not in error and "make gpu-wheels" in error
    )
    assert error in (tmp_path / "gpu_check.log").read_text()


def test_wheel_check_wants_exactly_one_wheel_of_each_pinned_version(tmp_path):
    from tools.gpu.wheels import missing, pins

    listed = tmp_path / "list.txt"
    listed.write_text("# comment\nfoo-bar==1.0\nbaz==2.0  # build\nqux==3.0\n")
    assert pins(listed) == [("foo-bar", "1.0", False), ("baz", "2.0", True), ("qux", "3.0", False)]
    for name in (
        "foo_bar-1.0-cp312-cp312-manylinux_2_17_x86_64.whl",
        "baz-2.0-py3-none-any.whl",
        "qux-3.0-py3-none-any.whl",
        "qux-3.1-py3-none-any.whl",
    ):
        (tmp_path / name).write_bytes(b"")
    assert missing(tmp_path, listed) == ["qux==3.0"]  # two versions of qux would stop the install


def test_wheel_list_pins_what_requirements_pin():
    from tools.gpu.wheels import pins

    pinned = dict(
        line.split(" ")[0].split("==")
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )  # the lock: "name==version \"
    carried = {name: version for name, version, _ in pins(ROOT / "tools" / "gpu" / "gpu_wheels.txt")}
    for name in ("albumentations", "dvc", "dvclive", "pydicom", "grad-cam"):
        assert carried[name] == pinned[name]


def _dvc_stages(folder) -> dict:
    from dvc.repo import Repo

    with Repo(str(folder)) as repo:
        return {s.name: s.cmd for s in repo.index.stages if s.cmd}


@pytest.mark.parametrize("folder", [".", "demo"])
def test_stage_commands_expand_the_project_pipelines_as_dvc_does(folder):
    from tools.gpu.gpu_check import stage_commands

    root = ROOT / folder
    ours = stage_commands(
        yaml.safe_load((root / "dvc.yaml").read_text()), yaml.safe_load((root / "params.yaml").read_text())
    )
    assert dict(ours) == _dvc_stages(root)
    names = [name for name, _ in ours if not name.startswith("external@")]  # the demo's external set: params
    assert names[-4:-1] == ["combine@efficientnet_b0", "combine@convnext_tiny", "ensemble"]


def test_stage_commands_expand_matrix_and_dict_foreach_as_dvc_does(tmp_path):
    from tools.gpu.gpu_check import stage_commands

    params = {"sizes": [32, 64], "opt": {"lr": 0.1}, "runs": {"a": {"n": 1}, "b": {"n": 2}}}
    pipeline = {
        "stages": {
            "plain": {"cmd": "echo ${opt.lr}"},
            "grid": {"matrix": {"size": "${sizes}", "seed": [0, 1]}, "cmd": "echo ${item.size} ${item.seed} ${opt.lr}"},
            "each": {"foreach": "${runs}", "do": {"cmd": "echo ${key} ${item.n}"}},
        }
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    run(["dvc", "init", "--no-scm", "-q"], tmp_path)  # a subprocess: DVC's in-process logger may hold a closed stream
    ours = stage_commands(pipeline, params)
    assert dict(ours) == _dvc_stages(tmp_path)
    assert ours[:3] == [("plain", "echo 0.1"), ("grid@32-0", "echo 32 0 0.1"), ("grid@32-1", "echo 32 1 0.1")]


@pytest.mark.slow
def test_scale_bench_smoke_gives_parts_memory_and_extrapolation(tmp_path):
    r = smoke("bench.scale", tmp_path / "scale.json")
    parts = {"decode_clahe", "hashing", "layout", "leakage", "shortcut", "write_cache", "report", "other"}
    assert [row["n"] for row in r["sizes"]] == [30, 60] and r["repeats"] == 2
    for row in r["sizes"]:
        assert {"img_s_per_core", "peak_rss_mb", "peak_rss_anon_mb", "peak_rss_file_mb", "cache_mb"} <= set(row)
        assert set(row["parts_s"]) == parts and row["cache_mb"] > 0
        assert row["peak_rss_mb"] >= row["rss_after_imports_mb"] > 0
        # the workers measured themselves, not the stage's process: one peak per worker, summed
        assert row["workers_seen"] == row["workers"] and row["worker_peak_rss_mb"] != row["peak_rss_mb"]
        assert row["worker_peak_rss_mb"] > 0 and row["peak_pss_mb"] >= row["workers_peak_pss_mb"] > 0
        assert row["repeats"] == 2 and row["wall_s"] == pytest.approx(sum(row["wall_s_runs"]) / 2, abs=0.01)
    large, target = r["sizes"][-1], 130_000
    for part, g in r["growth"].items():  # extrapolated with max(b, 1), or linearly under the timer's noise
        noisy = g["exponent"] is None or large["parts_s"][part] < 0.05
        assert g["exponent_used"] == (1.0 if noisy else max(g["exponent"], 1.0))
        assert g["at_130k_s"] == pytest.approx(
            large["parts_s"][part] * (target / 60) ** g["exponent_used"], rel=0.02, abs=0.1
        )
    assert set(r["growth"]) == parts and r["target"] == {"train": 100_000, "val": 15_000, "test": 15_000, "cores": 16}
    per_image = sum(r["growth"][p]["at_130k_s"] for p in ("decode_clahe", "hashing"))
    assert r["extrapolated_100k_s"] == pytest.approx(
        per_image / 16 + sum(g["at_130k_s"] for p, g in r["growth"].items() if p not in ("decode_clahe", "hashing")),
        abs=0.2,
    )


def test_cache_timings_are_recorded_but_never_reach_the_report(tmp_path):
    from stages.lib.data.cache_writer import seconds
    from stages.lib.params.schema import Preprocess
    from stages.preprocess import build_cache

    data = course_tree(tmp_path / "data")
    p = Preprocess(img_size=32, center_crop_ratio=0.9, clahe_clip_limit=1.5, clahe_tile_grid=8)
    d = data_params(min_val=1)
    seconds.clear()
    build_cache(data, tmp_path / "c1", tmp_path / "r1.json", p, d, workers=1)
    assert {"decode_clahe", "hashing", "leakage", "shortcut", "report", "write_cache"} <= set(seconds)
    build_cache(data, tmp_path / "c2", tmp_path / "r2.json", p, d, workers=1)
    assert (tmp_path / "r1.json").read_bytes() == (tmp_path / "r2.json").read_bytes()
    assert "seconds" not in (tmp_path / "r1.json").read_text()
    for split in ("train", "val", "test"):  # written with plain file writes, read back as .npy
        a, b = np.load(tmp_path / "c1" / f"{split}.npy"), np.load(tmp_path / "c2" / f"{split}.npy", mmap_mode="r")
        assert a.shape == (4 * {"train": 3}.get(split, 1), 32, 32) and a.dtype == np.uint8 and np.array_equal(a, b)
        assert a.std() > 0


def test_near_pairs_match_brute_force_across_blocks(monkeypatch):
    from stages.lib.audit import leakage

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (50, 32), dtype=np.uint8)
    b = np.concatenate([a[:5] ^ np.eye(32, dtype=np.uint8)[:5], rng.integers(0, 256, (20, 32), dtype=np.uint8)])
    monkeypatch.setattr(leakage, "BLOCK_BYTES", 7 * b.nbytes)  # several blocks of 7 rows
    bits = np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=-1).sum(-1)
    expected = [(i, j, int(bits[i, j])) for i, j in zip(*np.nonzero(bits <= 100))]
    assert leakage.near_pairs(a, b, 100) == expected and (0, 0, 1) in expected


@pytest.mark.slow
def test_quality_bench_smoke_gives_each_seed_the_seed_ensemble_and_the_shortcut(tmp_path):
    r = smoke("bench.quality", tmp_path / "quality.json", "--seeds", "1", "2", beside=["quality_predictions"])
    assert STAMP - {"repeats"} <= set(r) and r["smoke"] is True and r["protocol"]["train"]["epochs"] == 1
    b = r["backbones"]["resnet18"]
    runs = b["test_macro_f1"]["runs"]
    assert set(runs) == {"1", "2"} and b["test_macro_f1"]["mean"] == pytest.approx(sum(runs.values()) / 2, abs=1e-4)
    assert b["seed_ensemble_gain"] == pytest.approx(
        b["seed_ensemble_test_macro_f1"] - b["test_macro_f1"]["mean"], abs=2e-4
    )
    assert b["minus_shortcut"].startswith("resnet18 − shortcut = ") and len(b["train_s_per_run"]) == 2
    assert 0 <= r["shortcut_test_macro_f1"] <= 1 and r["goal"]["resnet18"]["gain_at_least"] == 0.02
    # the pixel shortcut beside the metadata one, each model against both and with the lungs hidden, and every
    # per-image prediction kept, so a later comparison needs no retraining
    assert b["minus_pixel_shortcut"].startswith("resnet18 − pixel_shortcut = ") and "beats_pixel_shortcut" in b
    assert r["stronger_shortcut"] in ("shortcut", "pixel_shortcut")
    best = max(("shortcut", "pixel_shortcut"), key=lambda n: r[f"{n}_test_macro_f1"])
    assert b["beats_stronger_shortcut"] == b[f"beats_{best}"]
    for name in ("shortcut", "pixel_shortcut"):
        low, high = r[f"{name}_test_macro_f1_ci95"]
        assert low <= r[f"{name}_test_macro_f1"] <= high and set(r[f"{name}_test_recall"]) <= set(CLASS_NAMES)
    assert b["lungs_hidden"]["split"] == "test" and set(b["lungs_hidden"]["per_class"]) == set(CLASS_NAMES)
    kept = tmp_path / "quality_predictions"
    assert r["predictions"] == str(kept) and (kept / "pixel_shortcut" / "test.csv").is_file()
    for s in ("1", "2"):
        assert (kept / "resnet18" / "seeds" / f"seed{s}" / "lungs_hidden" / "test.csv").is_file()


def test_the_install_size_counts_torch_and_its_cuda_wheels_apart_from_the_rest(tmp_path):
    from bench.install import sizes

    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    # each part bigger than the tolerance (2e-5 GB = 20,000 bytes), so leaving any one out or counting any other
    # one in fails; whole 4 KiB blocks of random bytes, so disk blocks (as du counts them) are the bytes written
    for name, kb in (("torch/lib.so", 400), ("nvidia/cublas/lib.so", 300), ("cuda_bindings-13.dist-info/x", 64)):
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(os.urandom(kb * 1024))
    (site / "numpy").mkdir()
    (site / "numpy" / "core.so").write_bytes(os.urandom(200 * 1024))
    (site / "torchvision").mkdir()
    (site / "torchvision" / "ops.so").write_bytes(os.urandom(100 * 1024))
    got = sizes(tmp_path / "venv")
    assert got["torch_and_cuda_gb"] == pytest.approx(764 * 1024 / 1e9, abs=2e-5)  # torch, nvidia, cuda_*: not numpy
    assert got["venv_gb"] == pytest.approx(1064 * 1024 / 1e9, abs=2e-5)
