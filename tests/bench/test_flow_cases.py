"""bench/flow_cases.py: the FLUX.1 and SD3.5 rows' tiny smoke mode end to end on the CPU (the
reference step as diffusers' scripts write it, and every engine case); the GPU figures
themselves are measured on the GPU machine."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "flow_cases.py"


@pytest.mark.slow
@pytest.mark.parametrize("model", ["flux", "sd35m"])
def test_tiny_smoke_mode_runs_every_case(model, capsys):
    spec = importlib.util.spec_from_file_location("flow_cases", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.main(["--tiny", "--model", model])
    out = capsys.readouterr().out
    rows = [line.split()[1] for line in out.splitlines() if line.startswith("edlib ")]
    assert rows == list(module.CASES[model])
    assert "reference (b1)" in out
