"""What `make` installs: the venv's size on disk, and how much of it is torch's CUDA build.

    python -m bench.install [--venv .venv] [--out bench/results/install.json]

README's "about N GB on disk" is read from the file this writes (tests/test_docs.py). Sizes are the
blocks the files take (as `du` counts them), in GB of 10^9 bytes; "torch and CUDA" is torch, triton and
every NVIDIA/CUDA wheel the lock pulls in with it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.common import save, stamp

TORCH_AND_CUDA = ("torch", "triton", "nvidia", "cuda")  # site-packages entries that are torch's CUDA build


def disk_bytes(path: Path) -> int:
    """Bytes of disk the files under `path` take (st_blocks, as du; a hard-linked file counted once)."""
    seen, total = set(), 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def sizes(venv: Path) -> dict:
    """GB of the whole venv and of its torch-and-CUDA part."""
    site = next(venv.glob("lib/python*/site-packages"))
    part = sum(disk_bytes(p) for p in site.iterdir() if p.name.split("-")[0].split("_")[0] in TORCH_AND_CUDA)
    return {"venv_gb": disk_bytes(venv) / 1e9, "torch_and_cuda_gb": part / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=Path(".venv"))
    parser.add_argument("--out", type=Path, default=None, help="result file (default bench/results/install.json)")
    args = parser.parse_args()
    path = save("install", {**{k: round(v, 2) for k, v in sizes(args.venv).items()}, **stamp()}, args.out)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
