"""Runs that stop or run long away from a terminal (issue 31): a full disk while the cache is written is one
line naming the folder and the space needed, the old cache intact; Ctrl-C ends every command with one line
saying what was kept and exit 130; off a terminal, preprocess and cxr4-predict print a progress line at a
steady interval (count, rate, time left)."""

import errno
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from unittest.mock import patch

import pytest

from helpers import P32, ROOT, SLOW_PREPROCESS, course_tree, data_params, run_predict, write_xray
from stages.lib.core import progress
from stages.lib.core.errors import EXIT_INTERRUPTED, KEPT, Interrupted, UserError, cli
from stages.lib.core.files import atomic_path
from stages.lib.core.staging import swap_in
from stages.lib.data import cache_writer
from stages.lib.data.dataset import verify_cache
from stages.preprocess import build_cache

FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --- a full disk while the cache is written -------------------------------------------------------------


def _full_at_the_3rd_film(monkeypatch):
    append, written = cache_writer.Staged.append, []

    def append_until_full(self, img):
        if len(written) == 2:
            raise FULL
        written.append(1)
        append(self, img)

    monkeypatch.setattr(cache_writer.Staged, "append", append_until_full)


def _full_at_an_index(monkeypatch):
    def write_into_a_full_disk(path, text):
        with atomic_path(path):  # as files.write_text: its OSError comes back as a UserError
            raise FULL

    monkeypatch.setattr(cache_writer, "write_text", write_into_a_full_disk)


@pytest.mark.parametrize("fill", [_full_at_the_3rd_film, _full_at_an_index])
def test_a_full_disk_while_the_cache_is_written_is_one_line_naming_the_folder_and_the_space(
    tmp_path, monkeypatch, fill
):
    data, cache = course_tree(tmp_path / "data"), tmp_path / "cache"
    build_cache(data, cache, tmp_path / "report.json", P32, data_params(min_val=1), workers=1)
    before = {f.name: f.read_bytes() for f in cache.iterdir()}
    fill(monkeypatch)
    with pytest.raises(UserError) as err:
        build_cache(data, cache, tmp_path / "report.json", P32, data_params(min_val=1), workers=1)
    message = str(err.value)
    assert "\n" not in message and message.startswith(
        f"No space left on device in {tmp_path} while writing the cache {cache}: it needs about 40 KiB free "
        "there (20 films of 32x32 px, held twice until the splits are written), "
    )
    assert message.endswith("free some space there and rerun (the old cache is unchanged)")
    assert {f.name: f.read_bytes() for f in cache.iterdir()} == before and verify_cache(cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data", "report.json"]  # no staging left


def test_the_space_is_said_in_binary_units():
    assert cache_writer.size_text(2 * 20000 * 256 * 256) == "2.44 GiB"
    assert cache_writer.size_text(2 * 90 * 64 * 64) == "720 KiB" and cache_writer.size_text(5 * 2**40) == "5 TiB"


# --- Ctrl-C -----------------------------------------------------------------------------------------------


def test_ctrl_c_ends_a_command_with_one_line_saying_what_was_kept_and_exit_130(capsys):
    @cli
    def stage():
        raise KeyboardInterrupt

    @cli
    def knows_its_output():
        raise Interrupted("out.csv unchanged, nothing written")

    for main, kept in ((stage, KEPT), (knows_its_output, "out.csv unchanged, nothing written")):
        with pytest.raises(SystemExit) as done:
            try:
                main()
            except KeyboardInterrupt:
                pytest.fail("the KeyboardInterrupt reached the user as a traceback")
        assert done.value.code == 130 == EXIT_INTERRUPTED and capsys.readouterr().err == f"interrupted: {kept}\n"
    assert KEPT.startswith("no file is half-written")


def test_ctrl_c_in_cxr4_predict_keeps_the_earlier_csv_and_leaves_no_temp_file(
    tmp_path, model_path, monkeypatch, capsys
):
    import stages.predict as prediction

    for i in range(4):
        write_xray(tmp_path / "new" / f"{i}.png", i)
    out = tmp_path / "p.csv"
    out.write_text("earlier,results\n")
    lines, batches = prediction._lines, []

    def interrupted_at_the_2nd_batch(*args):
        batches.append(1)
        if len(batches) == 2:
            raise KeyboardInterrupt  # as Ctrl-C does, between two batches
        return lines(*args)

    monkeypatch.setattr(prediction, "_lines", interrupted_at_the_2nd_batch)
    argv = ["--model", model_path, "--images", tmp_path / "new", "--out", out, "--batch-size", "2"]
    try:
        code, stdout, err = run_predict(argv, monkeypatch, capsys)
    except KeyboardInterrupt:
        pytest.fail("the KeyboardInterrupt reached the user as a traceback")
    assert (code, stdout, err) == (130, "", f"interrupted: {out} unchanged, nothing written")
    assert out.read_text() == "earlier,results\n" and sorted(os.listdir(tmp_path)) == ["new", "p.csv"]


def test_pool_workers_leave_ctrl_c_to_the_parent():
    """Ctrl-C signals the whole process group: a decoding worker took it too and printed its own traceback."""
    with ProcessPoolExecutor(
        1, initializer=cache_writer._init_worker, initargs=(P32, 10**8, None, os.getpid())
    ) as pool:
        assert pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN


def test_the_cache_swap_holds_ctrl_c_until_the_new_cache_is_in_place(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "meta.json").write_text("{}")
    renames, rename = [], Path.rename

    def rename_with_ctrl_c(self, target):
        if not renames:
            os.kill(os.getpid(), signal.SIGINT)  # between moving the old cache aside and the new one in
        renames.append(target)
        return rename(self, target)

    with pytest.raises(KeyboardInterrupt):  # delivered once both renames are done
        with patch.object(Path, "rename", rename_with_ctrl_c):
            swap_in(tmp_path / "new", tmp_path / "old")
    assert len(renames) == 2 and (tmp_path / "old" / "meta.json").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals a process group")
def test_ctrl_c_in_a_terminal_stops_preprocess_with_one_line_and_its_cache_as_it_was(tmp_path):
    """A real SIGINT to the process group, as a terminal sends it: the parent and its decoding workers."""
    course_tree(tmp_path / "data")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "meta.json").write_text("the old cache\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_PREPROCESS, str(tmp_path)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not list(tmp_path.glob(".cache.*/all.npy")):
        time.sleep(0.05)
    assert proc.poll() is None, "preprocess ended before it could be interrupted"
    time.sleep(0.5)  # the workers busy decoding
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err == f"interrupted: {KEPT}\n", err
    assert (tmp_path / "cache" / "meta.json").read_text() == "the old cache\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data"]  # staging and its lock removed


# --- progress off a terminal --------------------------------------------------------------------------------

PROGRESS = re.compile(
    r"(predict|preprocess): (\d+)/(\d+) img \(\d+%\), [\d.]+(img/s|s/img), \d\d:\d\d left, \d\d:\d\d elapsed"
)


def progress_lines(err: str, desc: str) -> list[tuple[int, int]]:
    """(count, total) of each progress line of `desc` in stderr; every line of it must be whole."""
    assert "\r" not in err
    found = [m for m in map(PROGRESS.fullmatch, err.splitlines()) if m and m.group(1) == desc]
    assert len(found) == sum(line.startswith(f"{desc}: ") for line in err.splitlines()), err
    return [(int(m.group(2)), int(m.group(3))) for m in found]


def test_off_a_terminal_cxr4_predict_prints_a_progress_line_at_a_steady_interval(
    tmp_path, model_path, monkeypatch, capsys
):
    """A line every INTERVAL, none before it: a run shorter than it says nothing (test_predict.py's runs
    assert their stderr whole)."""
    import stages.predict as prediction

    for i in range(10):
        write_xray(tmp_path / "new" / f"{i}.png", i)
    lines = prediction._lines

    def slow(*args):
        time.sleep(0.1)  # a batch of 1 a tenth of a second: 1 s in all
        return lines(*args)

    monkeypatch.setattr(prediction, "_lines", slow)
    monkeypatch.setattr(progress, "INTERVAL", 0.35)
    argv = ["--model", model_path, "--images", tmp_path / "new", "--out", tmp_path / "p.csv", "--batch-size", "1"]
    code, _, err = run_predict(argv, monkeypatch, capsys)
    seen = progress_lines(err, "predict")
    # one every ~0.35 s, not one a batch: none at 0, the last at 10, one line a count at most
    assert code == 0 and 2 <= len(seen) < 10 and seen[-1] == (10, 10), err
    assert [n for n, _ in seen] == sorted({n for n, _ in seen}) and seen[0][0] >= 1


def test_off_a_terminal_preprocess_prints_a_progress_line_at_a_steady_interval(tmp_path, monkeypatch, capsys):
    append = cache_writer.Staged.append

    def slow(self, img):
        time.sleep(0.08)  # 20 films: 1.6 s
        append(self, img)

    monkeypatch.setattr(cache_writer.Staged, "append", slow)
    monkeypatch.setattr(progress, "INTERVAL", 0.4)
    build_cache(
        course_tree(tmp_path / "data"), tmp_path / "cache", tmp_path / "r.json", P32, data_params(min_val=1), workers=1
    )
    err = capsys.readouterr().err
    seen = progress_lines(err, "preprocess")
    assert 2 <= len(seen) < 20 and seen[-1] == (20, 20) and seen[0][0] >= 1, err  # one every ~0.4 s, not one a film
