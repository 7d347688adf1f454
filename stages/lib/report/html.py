"""The single-file report for a reviewer: metrics/summary.md as one HTML page that renders offline.

The Markdown is rendered by markdown-it-py (CommonMark with tables; raw HTML in it is escaped, not passed
through), and every image the summary embeds is inlined as a base64 data URI, so the file can be mailed
or archived alone. No script, no style sheet or font from elsewhere: the page makes no request at all
(unlike `dvc plots show`'s page, which loads Vega from a CDN). tests/test_figures.py opens it in headless
Chromium and fails on a blank page, a broken image or any network request.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

from markdown_it import MarkdownIt

from stages.lib.core.errors import UserError

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1b1b1b;
       max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
h1, h2, h3 { line-height: 1.25; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: 13px; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; } td { white-space: nowrap; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; display: block; margin: .5rem 0; }
blockquote { margin: 1rem 0; padding: .5rem 1rem; border-left: 4px solid #D55E00; background: #fff4ec; }
pre { background: #f6f6f6; padding: .75rem; overflow-x: auto; font-size: 12px; } code { font-size: 90%; }
"""


def inline_images(page: str, base: Path) -> str:
    """Every `<img src="relative.png">` replaced by the file's bytes as a data URI (paths from `base`)."""
    return re.sub(
        r'<img src="([^"]*)"',
        lambda m: f'<img src="{_data_uri(base / html.unescape(m[1]), html.unescape(m[1]))}"',
        page,
    )


def _data_uri(path: Path, src: str) -> str:
    if path.suffix.lower() != ".png":
        raise UserError(f"the summary embeds {src}, which is not a PNG; the HTML report inlines PNG figures only")
    if not path.is_file():
        raise UserError(
            f"the summary embeds {src} but {path} does not exist; rerun the stage that writes it (dvc repro)"
        )
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def html_report(markdown: str, base: str | os.PathLike, title: str) -> str:
    """One self-contained HTML page from the summary's Markdown; image links are relative to `base`."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"{inline_images(body, Path(base))}</body>\n</html>\n"
    )
