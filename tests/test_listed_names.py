"""A CSV names a file as the user's tools wrote it (issue 31): a name in another Unicode form than the
disk's (macOS writes NFD, most exports NFC) is found, two files equal under one form are refused by
name, and a Windows path is refused saying so."""

import unicodedata

import pytest

from helpers import write_xray
from stages.lib.core.errors import UserError
from stages.lib.core.names import STUDY_CLASSES
from stages.lib.data.image_files import DecodedImages, list_images
from stages.lib.data.layouts import read_layout
from stages.lib.data.records import check_paths
from stages.lib.params.schema import Preprocess

NFC, NFD = (unicodedata.normalize(form, "Ärzte/röntgen-é.png") for form in ("NFC", "NFD"))


def manifest(root, rows: list[str]):
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").write_text("path,label,split\n" + "".join(f"{r}\n" for r in rows), encoding="utf-8")
    return root


def samples(data):
    return [s for ss in read_layout(data, "manifest", STUDY_CLASSES).values() for s in ss]


@pytest.mark.parametrize("on_disk,in_csv", [(NFD, NFC), (NFC, NFD)])
def test_a_name_in_another_unicode_form_is_found(tmp_path, on_disk, in_csv):
    data = manifest(tmp_path / "data", [f"{in_csv},normal,train"])
    write_xray(data / on_disk, 1)
    (s,) = samples(data)
    assert check_paths([s], data) == [] and s.path == data / on_disk and s.path.is_file()
    assert s.name == in_csv  # rows keep the CSV's spelling


def test_a_course_csv_name_in_another_unicode_form_is_found(tmp_path):
    data = tmp_path / "data"
    name = unicodedata.normalize("NFD", "é.png")
    write_xray(data / "train_images" / name, 1)
    (data / "train_data.csv").write_text(
        "new_filename,normal,bacteria,virus,COVID-19\n" + unicodedata.normalize("NFC", "é.png") + ",1,0,0,0\n"
    )
    (s,) = read_layout(data, "course", STUDY_CLASSES)["train"]
    assert s.path == data / "train_images" / name


def test_two_files_equal_under_one_unicode_form_are_refused_by_name(tmp_path):
    data = manifest(tmp_path / "data", [f"{NFC},normal,train"])
    write_xray(data / NFC, 1)
    write_xray(data / NFD, 2)
    with pytest.raises(UserError) as err:
        samples(data)
    message = str(err.value)
    assert message.startswith(f"{data / 'manifest.csv'}:2: {NFC!r} matches 2 files") and "\n" not in message
    assert "differ only in Unicode form (NFC/NFD" in message and "rename" in message


def test_a_windows_path_is_refused_saying_why(tmp_path):
    data = manifest(tmp_path / "data", ["images\\x.png,normal,train"])
    write_xray(data / "images" / "x.png", 1)
    (missing,) = check_paths(samples(data), data)
    assert "backslashes (a Windows path?)" in str(missing) and "write it with / (images/x.png)" in str(missing)


def test_predicts_list_finds_a_name_in_another_unicode_form_and_explains_a_windows_path(tmp_path):
    write_xray(tmp_path / NFD, 1)
    write_xray(tmp_path / "images" / "x.png", 2)
    (tmp_path / "list.csv").write_text(f"path\n{NFC}\nimages\\x.png\n", encoding="utf-8")
    files = list_images(tmp_path / "list.csv")
    assert files[0].path == tmp_path / NFD and files[0].name == NFC
    decoded = DecodedImages(files, Preprocess(img_size=32), 10**8)
    assert decoded[0][2] == "" and "write it with / (images/x.png)" in decoded[1][2]
