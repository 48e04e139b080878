"""The hypernetwork's config keys (`method: hypernetwork`), without torch.

Each key is `hypernetwork_` + the name AUTOMATIC1111 gives the setting in its hypernetwork file
(`layer_structure`, `activation_func`, `is_layer_norm`, `weight_initialization`,
`dropout_structure`, `activate_output`), so a setting reads the same in an edlib config and in
the file it exports; `hypernetwork_strength` is A1111's multiplier (`<hypernet:NAME:1.0>`).
`TrainConfig` (edlib.model.config) inherits them from `HypernetworkKeys`; the checks across
keys are `config_problems`.

Only the activations both AUTOMATIC1111 and ComfyUI build are allowed: ComfyUI's loader knows
these 9 (comfy_extras/nodes_hypernetwork.py) and refuses a file with any other, A1111 knows
them all (modules/hypernetworks/hypernetwork.py). "swish" is torch's Hardswish in both.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

ACTIVATIONS = ("linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid", "softsign", "mish")
WEIGHT_INITIALIZATIONS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")


def _layer_structure(value: list[float]) -> list[float]:
    if len(value) < 2 or value[0] != 1 or value[-1] != 1:
        raise ValueError("must start and end with 1 (the network maps the context back to its own width), e.g. [1, 2, 1]")
    if any(v <= 0 for v in value):
        raise ValueError("every layer's size factor must be above 0")
    return value


def _dropout_structure(value: list[float] | None) -> list[float] | None:
    if value is None:
        return None
    if any(not 0 <= v < 1 for v in value):
        raise ValueError("each dropout probability must be 0 or more and below 1")
    if value and (value[0] != 0 or value[-1] != 0):
        raise ValueError("must start and end with 0 (no dropout on the input or after the last layer), e.g. [0, 0.3, 0]")
    return value


LayerStructure = Annotated[list[float], AfterValidator(_layer_structure)]
DropoutStructure = Annotated[list[float] | None, AfterValidator(_dropout_structure)]

LAYER_STRUCTURE = Field(
    default_factory=lambda: [1.0, 2.0, 1.0],
    description="Hypernetwork (method: hypernetwork, trained at `unet_lr`): the width of each layer as a multiple "
    "of the text context's width (768 for SD1.x, 1024 for SD2.x, 2048 for SDXL), from input to output; starts "
    "and ends with 1. [1, 2, 1] (A1111's default) is two Linear layers with a hidden layer twice as wide.",
)
ACTIVATION_FUNC = Field(
    "linear",
    description="Hypernetwork: activation after each layer but the last (`linear`: none). One of the 9 both "
    "AUTOMATIC1111 and ComfyUI load: " + ", ".join(ACTIVATIONS) + " (`swish` is Hardswish, as in both).",
)
WEIGHT_INITIALIZATION = Field(
    "Normal",
    description="Hypernetwork: how the layers start, as in A1111: `Normal` (weights N(0, 0.01), biases 0: the "
    "network starts as almost the identity), `XavierUniform`, `XavierNormal`, `KaimingUniform`, `KaimingNormal`.",
)
IS_LAYER_NORM = Field(False, description="Hypernetwork: a LayerNorm after every layer (A1111's 'Add layer normalization').")
DROPOUT_STRUCTURE = Field(
    None,
    description="Hypernetwork: dropout probability after each layer, one number per entry of "
    "`hypernetwork_layer_structure`, starting and ending with 0, e.g. [0, 0.3, 0]. Null: no dropout. "
    "ComfyUI keeps dropout on when it samples, so leave it null for ComfyUI users.",
)
ACTIVATE_OUTPUT = Field(
    False,
    description="Hypernetwork: also apply the activation after the last layer (A1111's 'activate_output'; "
    "no effect with `linear`).",
)
STRENGTH = Field(
    1.0,
    description="Hypernetwork: the strength (A1111's multiplier, `<hypernet:NAME:1.0>`) its samples use, during "
    "training and from the run's checkpoints; training itself always uses 1. It can change on resume.",
)

Activation = Literal[ACTIVATIONS]  # type: ignore[valid-type]
WeightInitialization = Literal[WEIGHT_INITIALIZATIONS]  # type: ignore[valid-type]


class HypernetworkKeys(BaseModel):
    """The keys this module adds to `TrainConfig` (see the module docstring)."""

    hypernetwork_layer_structure: LayerStructure = LAYER_STRUCTURE
    hypernetwork_activation_func: Activation = ACTIVATION_FUNC
    hypernetwork_weight_initialization: WeightInitialization = WEIGHT_INITIALIZATION
    hypernetwork_is_layer_norm: bool = IS_LAYER_NORM
    hypernetwork_dropout_structure: DropoutStructure = DROPOUT_STRUCTURE
    hypernetwork_activate_output: bool = ACTIVATE_OUTPUT
    hypernetwork_strength: float = STRENGTH


def dropout_structure(config: Any) -> list[float]:
    """The dropout after each layer as A1111 writes it: the config's, or all zeros."""
    given = config.hypernetwork_dropout_structure
    return list(given) if given is not None else [0.0] * len(config.hypernetwork_layer_structure)


def config_problems(config: Any) -> str | None:
    """What is wrong across the hypernetwork keys and the rest of a config, or None."""
    structure, dropout = config.hypernetwork_layer_structure, config.hypernetwork_dropout_structure
    if dropout is not None and len(dropout) != len(structure):
        return (
            f"hypernetwork_dropout_structure: has {len(dropout)} entries but hypernetwork_layer_structure has "
            f"{len(structure)}; give one dropout probability per layer size, e.g. [0, 0.3, 0] for [1, 2, 1]"
        )
    if config.method != "hypernetwork":
        return None
    if config.text_encoder_lr > 0 or (config.text_encoder_2_lr or 0) > 0:
        return (
            "text_encoder_lr: a hypernetwork trains with the whole model frozen, text encoders included; "
            "set text_encoder_lr: 0 (and text_encoder_2_lr: null)"
        )
    if config.unet_lr <= 0:
        return "unet_lr: the hypernetwork trains at this rate; it is 0; set it, e.g. to 1e-5"
    if getattr(config, "fp8_base", False):
        return "fp8_base: is for LoRA; a hypernetwork keeps the frozen model in the mixed-precision dtype"
    return None
