"""Run by the fresh runtime's own Python (tests/install/test_fresh_runtime.py): execute a
notebook top to bottom in a kernel of this interpreter, from the current folder, and save
it with its outputs. Usage: python run_notebook.py NOTEBOOK OUT.ipynb"""

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

notebook, out = Path(sys.argv[1]), Path(sys.argv[2])
nb = nbformat.read(notebook, as_version=4)
client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(Path.cwd())}})
try:
    client.execute()
finally:
    nbformat.write(nb, out)  # with the outputs up to a failing cell
