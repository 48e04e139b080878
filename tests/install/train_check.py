"""Run by the fresh runtime's own Python after edlib was installed from the wheel with the
newest dependency versions its ranges allow (tests/install/test_fresh_runtime.py): a LoRA
run that trains the text encoder too (the combination that broke with transformers 5.24+
and peft 0.21), a full fine-tune, and every notebook panel built with the ipywidgets this
runtime has. Prints one JSON object. Usage: python train_check.py FOLDER"""

import json
import sys
from importlib import metadata
from pathlib import Path

from safetensors import safe_open

import edlib
from edlib.model.world import bundled_model_path
from edlib.train import TrainConfig, train
from edlib.world import write_data_root

folder = Path(sys.argv[1])
root = folder / "data"
write_data_root(root, {"concept": {"count": 6}, "preservation": {"count": 6, "multiply": "0.5"}}, seed=3, size=64)
model = bundled_model_path()  # the world model inside the wheel
common = dict(model=str(model), data_root=str(root), resolution=64, batch_size=2, epochs=1, max_steps=2, seed=1)
runs = {
    "lora": dict(method="lora", network_dim=4, network_alpha=2.0, unet_lr=1e-4, text_encoder_lr=5e-5),
    "full": dict(method="full", unet_lr=1e-5, text_encoder_lr=1e-5),
}
report = {
    "edlib_file": edlib.__file__,
    "versions": {name: metadata.version(name) for name in ("torch", "transformers", "peft", "diffusers", "accelerate", "ipywidgets")},
}
for name, settings in runs.items():
    summary = train(TrainConfig.from_dict({**common, **settings, "run_dir": str(folder / "runs" / name)}))
    with safe_open(str(summary.exports[0]), "pt") as exported:
        info = exported.metadata()
    report[name] = {
        "step": summary.step,
        "loss": summary.last_loss,
        "exports": [p.name for p in summary.exports],
        "base_model": info.get("base_model"),
        "ss_sd_model_name": info.get("ss_sd_model_name"),
    }

from edlib.widgets import BalancePanel, DatasetPanel, PreservationPanel, SamplingPanel, TrainingPanel

panels = [
    DatasetPanel(root, batch_size=2),
    BalancePanel(root),
    PreservationPanel(root),
    TrainingPanel(root, str(model), folder / "runs" / "panel"),
    SamplingPanel(folder / "runs" / "full", ["a red circle"]),
]
# What the notebook shows for each (ipywidgets 7 has no _repr_mimebundle_ of its own).
report["panels"] = {type(p).__name__: sorted(p._repr_mimebundle_()) for p in panels}
print(json.dumps(report))
