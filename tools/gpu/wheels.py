"""Wheels for a CUDA machine that has torch but no package registry.

    python -m tools.gpu.wheels [--folder .whl]   # here, with PyPI: `make gpu-wheels`

downloads every package `tools/gpu/gpu_wheels.txt` pins, built for that machine (CPython 3.12,
manylinux x86_64), into the git-ignored .whl/ that travels with the tree. There, `tools.gpu.gpu_check`
calls `missing` and `install` before anything else.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from stages.lib.core.errors import Interrupted, cli

LIST = Path("tools/gpu/gpu_wheels.txt")
FOLDER = Path(".whl")
PYTHON = "3.12"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
BUILD_MARK = "# build"  # PyPI has a source archive only: build a pure-Python wheel here


def canonicalize_name(name: str) -> str:
    """PEP 503's normal form (what packaging.utils does; the stdlib only: this runs before .whl/ is unpacked)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_wheel_filename(filename: str) -> tuple[str, str]:
    """(name, version) of `name-version[-build]-python-abi-platform.whl` (PEP 427)."""
    parts = filename.removesuffix(".whl").split("-")
    if len(parts) not in (5, 6):
        raise ValueError(f"not a wheel file name: {filename}")
    return parts[0], parts[1]


def pins(path: Path = LIST) -> list[tuple[str, str, bool]]:
    """(name, version, built here) for every `name==version` line."""
    out = []
    for line in path.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            name, version = spec.split("==")
            out.append((name, version, BUILD_MARK in line))
    return out


def not_wheels(folder: Path = FOLDER) -> list[str]:
    """The names of the .whl files in `folder` that are not named as a wheel is (PEP 427): pip refuses them."""
    out = []
    for wheel in sorted(folder.glob("*.whl")):
        try:
            parse_wheel_filename(wheel.name)
        except ValueError:
            out.append(wheel.name)
    return out


def missing(folder: Path = FOLDER, path: Path = LIST) -> list[str]:
    """`name==version` of every pin without exactly one matching wheel in `folder`."""
    found: dict[str, list[str]] = {}
    for wheel in folder.glob("*.whl"):
        name, version = parse_wheel_filename(wheel.name)
        found.setdefault(canonicalize_name(name), []).append(str(version))
    return [f"{name}=={version}" for name, version, _ in pins(path) if found.get(canonicalize_name(name)) != [version]]


def size_mb(folder: Path = FOLDER) -> float:
    return round(sum(f.stat().st_size for f in folder.glob("*.whl")) / 2**20, 1)


def install(folder: Path, target: Path) -> None:
    """Unpack every wheel into `target` (put it first on PYTHONPATH); nothing is fetched."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--no-cache-dir",
            "--upgrade",
            "--target",
            str(target),
            *map(str, sorted(folder.glob("*.whl"))),
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def download(folder: Path = FOLDER, path: Path = LIST) -> None:
    """Fill `folder` (emptied first: two versions of one package would stop the install)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    listed = pins(path)
    pip = [sys.executable, "-m", "pip", "-q"]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [
            *pip,
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            PYTHON,
            "--implementation",
            "cp",
            *platforms,
            "-d",
            str(folder),
            *[f"{n}=={v}" for n, v, build in listed if not build],
        ],
        check=True,
    )
    subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(folder), *[f"{n}=={v}" for n, v, build in listed if build]], check=True
    )
    left = missing(folder, path)
    if left:
        sys.exit(f"error: {folder} lacks {', '.join(left)} after the download; check {path}")
    print(f"{folder}: {len(listed)} wheels, {size_mb(folder)} MiB (for CPython {PYTHON}, manylinux x86_64)")


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=FOLDER)
    folder = parser.parse_args().folder
    try:
        download(folder)
    except KeyboardInterrupt:
        raise Interrupted(f"{folder}/ may hold part of the wheels; rerun `make gpu-wheels` to fill it whole") from None


if __name__ == "__main__":
    main()
