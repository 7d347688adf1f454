"""README.md and docs/ as a reader follows them: every link leads somewhere, and the GPU requirement
they state is the one of the torch build the lock installs. (The README's commands run on the demo
in tests/test_pipeline.py.)"""
import re
from pathlib import Path

import pytest
import torch

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a '#' in a code block is no heading
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} leads nowhere"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: {target}: no such heading in {linked.name}"


def test_the_stated_gpu_requirement_is_the_locked_torch_build():
    """README and docs/gpu.md say: torch <locked version>, CUDA 13.0, compute capability 7.5 or newer."""
    locked = re.search(r"^torch==([\d.]+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert torch.__version__.split("+")[0] == locked
    assert torch.version.cuda == "13.0"
    capabilities = sorted(int(arch.removeprefix("sm_")) for arch in torch.cuda.get_arch_list())
    assert capabilities[0] == 75
    for page in (ROOT / "README.md", ROOT / "docs" / "gpu.md"):
        text = " ".join(page.read_text().split())
        assert f"torch {locked}" in text and "CUDA 13.0" in text and "compute capability 7.5 or newer" in text


def test_the_readme_comparison_example_is_the_committed_demo_summarys():
    """README's paired-comparison example is a line of demo/metrics/summary.md, not a made-up one."""
    readme, summary = (ROOT / "README.md").read_text(), (ROOT / "demo" / "metrics" / "summary.md").read_text()
    example = re.search(r"the demo's `(resnet18 − densenet121 = [^`]+)`", readme.replace("\n", " ")).group(1)
    assert f"- {example}\n" in summary, f"README's example is not in demo/metrics/summary.md: {example}"
    assert f"    {example}\n" in (ROOT / "docs" / "seeds.md").read_text()
