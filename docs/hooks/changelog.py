"""mkdocs hook: the site's changelog page is the repository's CHANGELOG.md, read at build time.

CHANGELOG.md links into the docs by repository path (``docs/context.md``); on the site those
pages sit beside the changelog page, so the ``docs/`` prefix is dropped. Nothing is copied:
the page stays current with CHANGELOG.md.
"""

from __future__ import annotations

import re
from pathlib import Path


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "changelog.md":
        return markdown
    root = Path(config.config_file_path).parent
    text = (root / "CHANGELOG.md").read_text(encoding="utf-8")
    return re.sub(r"\]\(docs/", "](", text)
