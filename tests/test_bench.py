"""The GPU benchmark's script, run in its CPU smoke mode: the JSON it writes, not its timings."""
import json

import pytest

from conftest import ROOT, run


def test_gpu_bench_smoke_writes_figures_and_ratios_per_backbone(tmp_path):
    out = tmp_path / "gpu.json"
    stdout = run(["python", "-m", "bench.gpu", "--smoke", "--backbones", "resnet18", "--out", str(out)], ROOT).stdout
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["smoke"] is True and result["img_size"] == 32
    r = result["resnet18"]
    assert set(r) == {"real_img_s", "ceiling_img_s", "study_img_s", "real_over_ceiling", "real_over_study"}
    assert all(v > 0 for v in r.values())
    assert r["real_over_ceiling"] == pytest.approx(r["real_img_s"] / r["ceiling_img_s"], rel=0.05)
    assert "densenet121" not in result and f"-> {out}" in stdout
    assert [p.name for p in tmp_path.iterdir()] == ["gpu.json"]  # written atomically: no temp file left


def test_gpu_bench_refuses_to_run_without_a_gpu_unless_smoke(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run(["python", "-m", "bench.gpu", "--out", str(tmp_path / "gpu.json")], ROOT, check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: bench.gpu needs a CUDA device; use --smoke for a CPU check of the script"
    assert not (tmp_path / "gpu.json").exists()
