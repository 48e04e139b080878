"""Write every notebook's setup cell and Colab badge from edlib.environment (REPOSITORY,
the version, SETUP_CELL), after either changed: the notebooks cannot import edlib before
installing it, so they carry the text. tests/notebooks/test_sources.py checks they agree.

    python scripts/sync_notebook_setup.py
"""

import re
import sys
from pathlib import Path

import nbformat

from edlib.environment import colab_url, setup_cell_source

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
BADGE_TARGET = re.compile(r"\(https://colab\.research\.google\.com/github/[^)]*\)")
SETUP_MARK = "# Setup:"


def sync(path: Path) -> bool:
    """Rewrite `path`'s setup cell and badge; True when the file changed."""
    nb = nbformat.read(path, as_version=4)
    setup = next((c for c in nb.cells if c.cell_type == "code" and c.source.startswith(SETUP_MARK)), None)
    if setup is None:
        raise SystemExit(f"{path}: no code cell starting with {SETUP_MARK!r}")
    intro = nb.cells[0]
    if intro.cell_type != "markdown" or not BADGE_TARGET.search(intro.source):
        raise SystemExit(f"{path}: the first cell has no Colab badge")
    before = (setup.source, intro.source)
    setup.source = setup_cell_source()
    intro.source = BADGE_TARGET.sub(f"({colab_url(path.name)})", intro.source)
    if (setup.source, intro.source) == before:
        return False
    nbformat.write(nb, path)
    return True


def main() -> int:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        print(("updated " if sync(path) else "unchanged ") + path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
