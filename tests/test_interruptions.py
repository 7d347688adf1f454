"""Runs that stop or run long away from a terminal (issue 31): a full disk while the cache is written is one
line naming the folder and the space needed, the old cache intact; Ctrl-C ends every command with one line
saying what was kept and exit 130; off a terminal, preprocess and cxr4-predict print a progress line at a
steady interval (count, rate, time left)."""

import errno
import os

import pytest

from helpers import course_tree, data_params
from stages.lib.core.errors import UserError
from stages.lib.core.files import atomic_path
from stages.lib.data import cache_writer
from stages.lib.data.cache import build_cache
from stages.lib.data.dataset import verify_cache
from stages.lib.params.schema import Preprocess

P32 = Preprocess(img_size=32, center_crop_ratio=0.9, clahe_clip_limit=1.5, clahe_tile_grid=2)
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
