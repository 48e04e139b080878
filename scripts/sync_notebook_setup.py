"""Write every notebook's setup cell from edlib.notebook_setup (SETUP_CELL, the version),
after either changed: the notebooks cannot import edlib before installing it, so they
carry the text. tests/notebooks/test_sources.py checks they agree.

    python scripts/sync_notebook_setup.py
"""

import sys
from pathlib import Path

import nbformat

from edlib.notebook_setup import setup_cell_source

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SETUP_MARK = "# Setup:"


def sync(path: Path) -> bool:
    """Rewrite `path`'s setup cell; True when the file changed."""
    nb = nbformat.read(path, as_version=4)
    setup = next((c for c in nb.cells if c.cell_type == "code" and c.source.startswith(SETUP_MARK)), None)
    if setup is None:
        raise SystemExit(f"{path}: no code cell starting with {SETUP_MARK!r}")
    if setup.source == setup_cell_source():
        return False
    setup.source = setup_cell_source()
    nbformat.write(nb, path)
    return True


def main() -> int:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        print(("updated " if sync(path) else "unchanged ") + path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
