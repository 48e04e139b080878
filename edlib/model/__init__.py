"""What a model is and how its weights are trained and saved, without the training loop.

    config.py          the training config schema (`TrainConfig`; imports no torch)
    config_files.py    YAML files and key=value overrides; docs/config.md
    identify.py        what a model argument names (its family: SD1/SD2, SDXL, SD3, FLUX; native size), without torch
    models.py          loading a model into a `Models` bundle (bundle.py); the encoders and the UNet call
    flow*.py           SD3/FLUX: loading and the transformer's call (flow.py), their text (flow_text.py),
                       their config keys and per-family defaults (flow_config.py)
    block_swap.py      transformer blocks whose frozen weights wait in CPU memory
    architectures.py   per-family facts (SD1.x, SD2.x, SDXL, SD3.5, FLUX.1)
    methods/           full fine-tune, LoRA/LoCon, textual inversion behind one registry
    optim.py, lr.py    optimizers and learning-rate schedules (and the curve a preview draws)
    sr_optim.py        AdamW / 8-bit AdamW with bf16 stochastic rounding (full_bf16)
    nonfinite.py       skipping a non-finite step on the device; transfer.py: host data to the GPU without waiting
    plan.py            a run's preview and LR curve from its config
    ema.py, offload.py EMA of the trained weights; frozen encoders kept in CPU memory
    checkpoint.py      checkpoints on disk (atomic, complete or ignored); trained.py loads them
    estimate.py        memory and time estimates for a config (SD3.5/FLUX: estimate_flow.py)
    tiny.py, world/    tiny models built from configs (tests; SD3/FLUX: tiny_flow.py), and the bundled toy-world model

It depends only on `edlib.data` below it; the loop (`edlib.train`), sampling and export sit above.
"""
