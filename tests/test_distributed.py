"""Scale-out: two gloo processes share the class-balanced stream and write one set of outputs."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import TINY, make_project, merge, run, run_paths, stage_cmd
from stages.lib.data.dataset import balanced_sampler
from stages.lib.model.distributed import RankShard

TRAIN = stage_cmd("train", "resnet18")
RUN = run_paths("resnet18")


@pytest.mark.parametrize("n,world", [(32, 2), (30, 4), (7, 3)])
def test_rank_shares_partition_the_single_process_stream(n, world):
    labels = torch.tensor([0] * (n - n // 2) + [3] * (n // 2)).numpy()
    stream = list(balanced_sampler(labels, torch.Generator().manual_seed(5)))
    shares = [
        list(RankShard(balanced_sampler(labels, torch.Generator().manual_seed(5)), r, world)) for r in range(world)
    ]
    per_rank = -(-n // world)
    assert [len(s) for s in shares] == [per_rank] * world  # DDP needs equal batch counts
    interleaved = [shares[i % world][i // world] for i in range(per_rank * world)]
    assert interleaved == stream + stream[: per_rank * world - n]  # padded with the stream's own start


@pytest.mark.slow
def test_two_gloo_processes_train_one_epoch_on_the_same_number_of_samples(tmp_path, tiny_data):
    outputs = {}
    for nproc in (1, 2):
        proj = make_project(
            tmp_path / f"nproc{nproc}",
            tiny_data,
            merge(TINY, {"backbones": ["resnet18"], "train": {"nproc": nproc}}),
            git=False,
        )
        run(stage_cmd("preprocess"), proj)
        stdout = run(TRAIN, proj).stdout
        outputs[nproc] = stdout
        assert sorted(p.relative_to(proj).as_posix() for p in (proj / "checkpoints").rglob("*.pt")) == [RUN["resume"]]
        assert sorted(p.relative_to(proj).as_posix() for p in (proj / "models").rglob("*.pt")) == [RUN["model"]]
        state = torch.load(proj / RUN["resume"], weights_only=True)
        assert state["progress"] == {
            "epoch": 1,
            "best_epoch": 1,
            "best_val_macro_f1": state["progress"]["best_val_macro_f1"],
            "stale": 0,
            "finished": True,
        }
        rows = (proj / RUN["live"] / "plots/metrics/train/images_per_s.tsv").read_text().splitlines()
        assert len(rows) == 2 and float(rows[1].split("\t")[-1]) > 0  # one writer, one row per epoch
    counts = {
        n: re.findall(r"resnet18 seed 42 epoch 1/1: .* \| (\d+) images, \d+ img/s", out) for n, out in outputs.items()
    }
    assert counts[1] == counts[2] == ["32"]  # tiny_data has 32 training images; printed once, by rank 0


@pytest.mark.slow
def test_killed_two_process_run_resumes_at_the_next_epoch(tmp_path, tiny_data):
    proj = make_project(
        tmp_path / "p",
        tiny_data,
        merge(TINY, {"backbones": ["resnet18"], "train": {"nproc": 2, "epochs": 3}}),
        git=False,
    )
    run(stage_cmd("preprocess"), proj)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(proj))
    proc = subprocess.Popen(
        TRAIN, cwd=proj, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = proj / RUN["resume"]
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks
    proc.wait()
    assert last.exists(), "training ended before its first checkpoint appeared"
    done = torch.load(last, weights_only=True)["progress"]["epoch"]
    assert done < 3, "the kill came too late to test anything"

    rerun = run(TRAIN, proj).stdout
    assert f"resuming from {RUN['resume']}: epoch {done} done" in rerun
    assert re.findall(r"resnet18 seed 42 epoch (\d)/3: .* \| 32 images", rerun) == [str(e) for e in range(done + 1, 4)]
    steps = (proj / RUN["live"] / "plots/metrics/val/macro_f1.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in steps] == ["step", "1", "2", "3"]


def test_more_ranks_than_visible_gpus_is_refused_before_launch(monkeypatch):
    import stages.train
    from stages.lib.core.errors import UserError
    from stages.lib.model import distributed
    from stages.lib.params.schema import Train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(distributed, "launch", lambda *a: pytest.fail("launched anyway"))
    with pytest.raises(
        UserError, match=r"^train.nproc 4 exceeds the 2 visible GPU\(s\); lower it or set CUDA_VISIBLE_DEVICES$"
    ):
        stages.train.launch_ranks("resnet18", Train(nproc=4, pretrained=False))
