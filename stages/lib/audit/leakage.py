"""Leakage between splits: shared patients, exact duplicates and near duplicates; within a split,
files listed twice and identical pixels (reported); identical pixels under two labels (refused).

Hashes are computed in the preprocess worker from the decoded gray image, so the check costs no
second pass over the files. Exact: SHA-1 of the decoded pixels (same picture in another container
or encoding setting that decodes identically). Near: a DCT perceptual hash (pHash as in the
`imagehash` package; ten lines of OpenCV here rather than a dependency that pulls in PyWavelets)
that survives re-encoding, resizing and mild contrast changes; compared by Hamming
distance with numpy, all pairs of two splits in blocks.
"""

from __future__ import annotations

import hashlib
from itertools import combinations

import cv2
import numpy as np

from stages.lib.core.errors import UserError
from stages.lib.core.names import SPLITS

HASH_SIDE = 16  # 16x16 low DCT frequencies = 256 bits; 64 bits confuse different chest films too often
BLOCK_BYTES = 2**25  # of hashes XORed at once, 32 MiB


def fingerprints(gray: np.ndarray) -> dict:
    """A decoded film's two hashes, `exact` and `phash`, added to its facts by the preprocess worker."""
    return {"exact": exact_hash(gray), "phash": perceptual_hash(gray)}


def exact_hash(gray: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(gray).tobytes() + str(gray.shape).encode()).hexdigest()


def perceptual_hash(gray: np.ndarray) -> bytes:
    """pHash: low-frequency DCT coefficients of the image at 4*HASH_SIDE px, thresholded at their median."""
    small = cv2.resize(gray, (4 * HASH_SIDE, 4 * HASH_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:HASH_SIDE, :HASH_SIDE].ravel()
    return np.packbits(low > np.median(low[1:])).tobytes()


def near_pairs(a: np.ndarray, b: np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) of every pair of packed hashes a[i] [B], b[j] [B] (B a multiple of 8) at
    Hamming distance <= max_distance. Rows are compared in blocks and only the close pairs kept, so
    memory stays flat (a whole 100k x 15k distance matrix would take 6 GB)."""
    a, b = a.view(np.uint64), b.view(np.uint64)  # 8 bytes per popcount instead of 1
    rows = max(1, BLOCK_BYTES // max(1, b.nbytes))
    pairs = []
    for start in range(0, len(a), rows):
        dist = np.bitwise_count(a[start : start + rows, None, :] ^ b[None, :, :]).sum(-1, dtype=np.int32)
        i, j = np.nonzero(dist <= max_distance)
        pairs += zip((i + start).tolist(), j.tolist(), dist[i, j].tolist())
    return pairs


def find_leaks(splits: dict[str, list[dict]], max_distance: int) -> dict:
    """`splits`: split -> records with name, patient, exact, phash. Returns per split pair the
    shared patients, exact duplicate pairs and near duplicate pairs (with their distance)."""
    report = {}
    for a, b in combinations([s for s in splits if splits[s]], 2):
        ra, rb = splits[a], splits[b]
        patients = sorted({r["patient"] for r in ra if r["patient"]} & {r["patient"] for r in rb if r["patient"]})
        by_hash = {}
        for r in ra:
            by_hash.setdefault(r["exact"], []).append(r["name"])
        exact = [[x, r["name"]] for r in rb for x in by_hash.get(r["exact"], [])]
        close = near_pairs(
            np.stack([np.frombuffer(r["phash"], np.uint8) for r in ra]),
            np.stack([np.frombuffer(r["phash"], np.uint8) for r in rb]),
            max_distance,
        )
        near = [[ra[i]["name"], rb[j]["name"], d] for i, j, d in close if ra[i]["exact"] != rb[j]["exact"]]
        report[f"{a}/{b}"] = {"shared_patients": patients, "exact_duplicates": exact, "near_duplicates": near}
    return report


def same_pixels(splits: dict[str, list[dict]]) -> dict[str, list[list[str]]]:
    """Per split (only those with any), the groups of names whose decoded pixels are identical."""
    out = {}
    for split, records in splits.items():
        groups: dict[str, list[str]] = {}
        for r in records:
            groups.setdefault(r["exact"], []).append(r["name"])
        if same := [names for names in groups.values() if len(names) > 1]:
            out[split] = same
    return out


def label_conflict(splits: dict[str, list[dict]]) -> tuple[tuple[str, dict], tuple[str, dict]] | None:
    """The first two (split, record) with identical pixels and different labels, or None.
    An unlabeled record (hidden-label test set) conflicts with nothing."""
    seen: dict[str, tuple[str, dict]] = {}
    for split, records in splits.items():
        for r in records:
            if r["label"] is None:
                continue
            first = seen.setdefault(r["exact"], (split, r))
            if first[1]["label"] != r["label"]:
                return first, (split, r)
    return None


def refuse_label_conflict(splits: dict[str, list[dict]], classes) -> None:
    """One picture under two labels would train, or be scored, under both: refused naming the two files."""
    found = label_conflict(splits)
    if found:
        (sa, a), (sb, b) = found
        raise UserError(
            f"{sa} image {a['name']!r} ({classes[a['label']]}) and {sb} image {b['name']!r} "
            f"({classes[b['label']]}) hold identical pixels under two labels; remove the wrong one"
        )


def duplicates(repeats: dict[str, list[list[str]]], pixels: dict[str, list[list[str]]]) -> dict:
    """Within each split: files listed twice (kept once) and distinct files with identical pixels (kept)."""
    parts = [
        f"{split}: "
        + ", ".join(
            f"{n} {what}"
            for n, what in (
                (len(repeats.get(split, [])), "file(s) listed twice, kept once"),
                (len(pixels.get(split, [])), "group(s) of files with identical pixels"),
            )
            if n
        )
        for split in SPLITS
        if repeats.get(split) or pixels.get(split)
    ]
    return {"summary": "; ".join(parts) or None, "same_file": repeats, "same_pixels": pixels}


def leak_summary(leaks: dict) -> str | None:
    """One line saying what leaked where, or None when nothing did."""
    parts = []
    for pair, found in leaks.items():
        counts = [
            (len(found["shared_patients"]), "shared patient(s)"),
            (len(found["exact_duplicates"]), "exact duplicate(s)"),
            (len(found["near_duplicates"]), "near duplicate(s)"),
        ]
        said = ", ".join(f"{n} {what}" for n, what in counts if n)
        if said:
            example = (
                found["shared_patients"]
                or [" ~ ".join(map(str, (found["exact_duplicates"] or found["near_duplicates"])[0][:2]))]
            )[0]
            parts.append(f"{pair}: {said} (e.g. {example})")
    return "; ".join(parts) or None
