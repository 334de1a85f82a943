"""Every notebook runs end to end (QUICK=1 shrinks its schedules)."""
import glob
import json
import os

import pytest

NOTEBOOKS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "notebooks", "*.ipynb")))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    pytest.importorskip("skimage")          # the demo photographs
    with open(path) as f:
        nb = json.load(f)
    monkeypatch.setenv("QUICK", "1")
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "__main__"}
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        exec(compile(src, f"{os.path.basename(path)} cell {i}", "exec"), ns)


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no .ipynb"
