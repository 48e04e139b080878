"""edlib used end to end on the toy world: `edlib demo` (`run`), the preservation lab
(`lab`), and the world model's evaluation and noise diagnostic (`evaluate`, `noise_check`).

It sits on top of every layer: it scans, previews, trains, samples and exports through the
same library calls the CLI and notebooks use.
"""

from edlib.demo.run import fine_tune, run_demo, sample_and_score, scene_prompts
from edlib.world.demo_data import DEMO_SPEC, DEMO_WEIGHTS, NEW_CONCEPT

__all__ = ["DEMO_SPEC", "DEMO_WEIGHTS", "NEW_CONCEPT", "fine_tune", "run_demo", "sample_and_score", "scene_prompts"]
