"""`edlib demo --quick` in-process: the whole flow (data root, scan, preview, fine-tune,
before/after samples scored by the check, export) runs and leaves its files where it says."""

import re

import pytest
from diffusers import StableDiffusionPipeline

from edlib.demo import NEW_CONCEPT, run_demo


@pytest.mark.slow
def test_quick_demo_runs_the_whole_flow(tmp_path, capsys):
    out = tmp_path / "demo"
    result = run_demo(out, quick=True)
    printed = capsys.readouterr().out

    # Data root, schedules and the run folder.
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted(["preservation", "stars", NEW_CONCEPT])
    assert (out / "schedules" / "ep0_batch_schedule.txt").is_file()
    run_dir = result["run_dir"]
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.jsonl").is_file()
    assert any((run_dir / "checkpoints").iterdir())

    # Before and after samples, one PNG per prompt plus a grid, for both prompt sets.
    for when in ("before", "after"):
        for prompts in (NEW_CONCEPT, "known-shapes"):
            folder = out / "samples" / when / prompts
            assert (folder / "grid.png").is_file()
            assert len(list(folder.glob("0*.png"))) == 4

    # Exports: a diffusers folder that loads and a single-file checkpoint.
    diffusers_dir, single_file = result["exports"]
    StableDiffusionPipeline.from_pretrained(diffusers_dir, local_files_only=True)
    assert single_file.suffix == ".safetensors" and single_file.stat().st_size > 0

    # The before -> after report, with the numbers the result holds.
    new = result["scores"]["new_concept"]
    line = next(l for l in printed.splitlines() if l.strip().startswith(f"new concept ({NEW_CONCEPT})"))
    assert re.search(r"shape +\d+% -> +\d+%", line)
    assert f"{100 * new['after']['shape']:.0f}%" in line
    assert f"shape fidelity {new['before']['fidelity']:.2f} -> {new['after']['fidelity']:.2f}" in line
    assert "known shapes (preservation)" in printed
    assert str(run_dir / "exports") in printed
