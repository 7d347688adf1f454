"""The benchmark scripts, run in their smoke modes: the JSON they write, never their timings;
and the pieces of the GPU check and the preprocess hooks the benchmarks rely on."""
import json
import os

import numpy as np
import pytest
import yaml

from conftest import ROOT, course_tree, data_params, run

STAMP = {"commit", "date", "machine", "torch", "repeats"}
SPREAD = {"median", "min", "max", "runs"}


def smoke(module: str, out, *extra) -> dict:
    stdout = run(["python", "-m", module, "--smoke", "--out", str(out), *extra], ROOT).stdout
    assert f"-> {out}" in stdout
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # written atomically: no temp file left
    return json.loads(out.read_text())


def test_loader_bench_smoke_gives_headline_spreads_and_other_sizes(tmp_path):
    r = smoke("bench.loader", tmp_path / "loader.json", "--repeats", "1")
    assert STAMP <= set(r) and r["repeats"] == 1 and r["smoke"] is True
    assert r["img_size"] == 32 and [o["img_size"] for o in r["other_sizes"]] == [16]
    assert r["workers"] == max(1, os.cpu_count() // 2)  # the study's rule, given to both loaders
    for row in [r, *r["other_sizes"]]:
        assert set(row["ours_img_s"]) == SPREAD == set(row["study_img_s"]) and len(row["ours_img_s"]["runs"]) == 1
        assert row["speedup"] == pytest.approx(row["ours_img_s"]["median"] / row["study_img_s"]["median"], rel=0.02)
        assert row["speedup_range"][0] <= row["speedup"] <= row["speedup_range"][1]


def test_epoch_bench_smoke_breaks_the_headline_epoch_into_model_and_loader_parts(tmp_path):
    r = smoke("bench.epoch", tmp_path / "epoch.json", "--repeats", "1", "--workers", "0")
    assert STAMP <= set(r) and r["img_size"] == 32 and r["other_sizes"][0]["img_size"] == 16
    assert set(r["ours_parts_s"]) == {"train_pass", "val_pass"}
    assert set(r["study_parts_s"]) == {"train_pass", "train_eval_pass", "val_pass"}
    assert sum(r["study_parts_s"].values()) == pytest.approx(r["study_s"]["median"], rel=0.05, abs=0.05)
    b = r["breakdown"]
    assert set(b["model_s"]) == {"train_pass", "train_eval_pass", "val_pass"}
    assert set(b["loader_s"]["study"]) == {"train", "train_eval", "val"} and set(b["loader_s"]["ours"]) == {"train", "val"}
    m = b["model_s"]
    assert b["speedup_if_data_were_free"] == pytest.approx(sum(m.values()) / (m["train_pass"] + m["val_pass"]), abs=0.01)
    assert set(b["train_pass_excess_s"]) == {"ours", "study"} and "breakdown" not in r["other_sizes"][0]


def test_benches_refuse_fewer_than_three_repeats_outside_smoke():
    from bench.common import check_repeats
    from stages.lib.errors import UserError

    with pytest.raises(UserError, match="at least 3 times"):
        check_repeats(2, smoke=False)
    check_repeats(1, smoke=True)
    check_repeats(3, smoke=False)


def test_gpu_bench_smoke_writes_real_and_ceiling_per_backbone(tmp_path):
    r = smoke("bench.gpu", tmp_path / "gpu.json", "--backbones", "resnet18", "--repeats", "1")
    assert r["device"] == "cpu" and r["smoke"] is True and r["img_size"] == 32 and r["precision"] == "float32"
    assert STAMP <= set(r) and list(r["backbones"]) == ["resnet18"] and r["workers"] == 1
    b = r["backbones"]["resnet18"]
    assert {"real_img_s", "ceiling_img_s", "real_over_ceiling", "first_batch_ms", "loader_img_s"} <= set(b)
    assert b["real_over_ceiling"] == pytest.approx(b["real_img_s"]["median"] / b["ceiling_img_s"]["median"], rel=0.02)


def test_gpu_bench_refuses_to_run_without_a_gpu_unless_smoke(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run(["python", "-m", "bench.gpu", "--out", str(tmp_path / "gpu.json")], ROOT, check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: bench.gpu needs a CUDA device; use --smoke for a CPU check of the script"
    assert not (tmp_path / "gpu.json").exists()


def test_cache_timings_are_recorded_but_never_reach_the_report(tmp_path):
    from stages.lib import cache

    data = course_tree(tmp_path / "data")
    p = {"img_size": 16, "center_crop_ratio": 0.9, "clahe_clip_limit": 1.5, "clahe_tile_grid": 8}
    d = data_params(min_val=1)
    cache.timings.clear()
    cache.build_cache(data, tmp_path / "c1", tmp_path / "r1.json", p, d, workers=1)
    assert {"decode_clahe", "hashing", "leakage", "shortcut", "report", "write_cache"} <= set(cache.timings)
    cache.build_cache(data, tmp_path / "c2", tmp_path / "r2.json", p, d, workers=1)
    assert (tmp_path / "r1.json").read_bytes() == (tmp_path / "r2.json").read_bytes()
    assert "seconds" not in (tmp_path / "r1.json").read_text()
    for split in ("train", "val", "test"):  # written with plain file writes, read back as .npy
        a, b = np.load(tmp_path / "c1" / f"{split}.npy"), np.load(tmp_path / "c2" / f"{split}.npy", mmap_mode="r")
        assert a.shape == (4 * {"train": 3}.get(split, 1), 16, 16) and a.dtype == np.uint8 and np.array_equal(a, b)
        assert a.std() > 0


def test_near_pairs_match_brute_force_across_blocks(monkeypatch):
    from stages.lib import leakage

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (50, 32), dtype=np.uint8)
    b = np.concatenate([a[:5] ^ np.eye(32, dtype=np.uint8)[:5], rng.integers(0, 256, (20, 32), dtype=np.uint8)])
    monkeypatch.setattr(leakage, "BLOCK_BYTES", 7 * b.nbytes)  # several blocks of 7 rows
    bits = np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=-1).sum(-1)
    expected = [(i, j, int(bits[i, j])) for i, j in zip(*np.nonzero(bits <= 100))]
    assert leakage.near_pairs(a, b, 100) == expected and (0, 0, 1) in expected
