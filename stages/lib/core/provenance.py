"""Where a result came from: the git commit of the code, the data's DVC hash and the params.

Every result a reader may copy out (the summary, each checkpoint, each detail metrics file, the
data report) carries `stamp(...)`, so a number can be traced back without the repository's history.
No clock time goes in: a rerun at the same commit with the same data and params stays byte-identical.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

# What "dirty" means: the code or the params differ from the commit. Pipeline outputs (metrics,
# plots, dvc.lock) are left out: rewriting them is what a run does.
SOURCE_PATHSPECS = (
    ":(top,glob)**/*.py",
    ":(top,glob)**/dvc.yaml",
    ":(top,glob)**/params.yaml",
    ":(top)requirements.txt",
    ":(top)pyproject.toml",
    ":(top,glob).dvc/plots/*",
)
MAX_LISTED = 10
UNKNOWN = "unknown"  # `dirty` when git status gave no answer


def _git(*args: str) -> str | None:
    """git's stdout as printed (not stripped: porcelain lines start with a space), None on failure."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def changed_paths(porcelain_z: str) -> list[str]:
    """Root-relative paths from `git status --porcelain -z` ("XY path\0", a rename's old path next)."""
    entries, paths = iter(porcelain_z.split("\0")), []
    for entry in entries:
        if entry:
            paths.append(entry[3:])
            if entry[0] in "RC":
                next(entries, None)  # the path it was renamed or copied from
    return sorted(paths)


def git_state() -> dict:
    """{"commit", "dirty", "modified"} for the checkout the stage runs in; nulls outside git; `dirty` is
    "unknown" when git names the commit but `git status` then fails."""
    commit = (_git("rev-parse", "HEAD") or "").strip() or None
    if commit is None:
        return {"commit": None, "dirty": None, "modified": [], "note": "not a git checkout with a commit"}
    status = _git("status", "--porcelain", "-z", "--untracked-files=no", "--", *SOURCE_PATHSPECS)
    if status is None:  # failed or timed out: no answer is not "nothing modified"
        return {"commit": commit, "dirty": UNKNOWN, "modified": [], "note": "git status failed: changes unknown"}
    modified = changed_paths(status)
    return {"commit": commit, "dirty": bool(modified), "modified": modified[:MAX_LISTED]}


def data_hash(data_dir: str | os.PathLike) -> dict | None:
    """The DVC hash of the data folder: from `<data>.dvc` (dvc add), else from the dvc.lock entry of
    the stage that writes it (the demo's synthesize stage). None when DVC does not track it."""
    data_dir = Path(data_dir)
    dvc_file = data_dir.with_name(data_dir.name + ".dvc")
    if dvc_file.is_file():
        for out in (_yaml(dvc_file) or {}).get("outs", []):
            if Path(out.get("path", "")) == Path(data_dir.name):
                return {"path": str(data_dir), "md5": out.get("md5"), "from": str(dvc_file)}
    lock = _yaml(Path("dvc.lock")) or {}
    for name, stage in (lock.get("stages") or {}).items():
        for out in stage.get("outs", []):
            if Path(out.get("path", "")) == data_dir:
                return {"path": str(data_dir), "md5": out.get("md5"), "from": f"dvc.lock (stage {name})"}
    return None


def _yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def stamp(params: dict, data: dict | None) -> dict:
    """The provenance block: code (git), data (DVC hash) and the params that made the result."""
    return {"git": git_state(), "data": data, "params": params}


def code_words(git: dict) -> str:
    """The git stamp in words, one wording for the summary and every card: the commit and whether the
    code differed from it (changed files named; "unknown" when git status gave no answer)."""
    if not git.get("commit"):
        return git.get("note") or "not recorded (not run in a git repository)"
    changes = {
        True: " with uncommitted changes to " + ", ".join(git.get("modified") or ["(files not listed)"]),
        False: " (clean)",
        UNKNOWN: f" (uncommitted changes unknown: {git.get('note')})",
        None: " (uncommitted changes not recorded)",
    }
    return f"commit `{git['commit']}`{changes[git.get('dirty')]}"


def markdown(stamp_: dict) -> list[str]:
    """The stamp as a few Markdown lines for the summary."""
    git, data = stamp_["git"], stamp_["data"]
    code = code_words(git)
    source = f"`{data['path']}` md5 `{data['md5']}` (from {data['from']})" if data else "not tracked by DVC"
    return [
        "## Provenance",
        "",
        f"- Code: {code}",
        f"- Data: {source}",
        "- Params: the `params` block of each `metrics/<model>.json` (all of them below).",
        "",
        "```yaml",
        yaml.safe_dump(stamp_["params"], sort_keys=False).rstrip(),
        "```",
        "",
    ]
