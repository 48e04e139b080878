"""AUTOMATIC1111 hypernetworks: the networks, and how they attach to a diffusers UNet.

A hypernetwork holds, for a context width (768 for SD1.x's text embedding, 1024 for SD2.x,
2048 for SDXL), two small networks: one transforms the context before the attention's key
projection (`to_k`), the other before its value projection (`to_v`); queries are unchanged.
Each is `x + linear(x) * multiplier`, with `linear` a `torch.nn.Sequential` laid out exactly as
A1111's `HypernetworkModule` (modules/hypernetworks/hypernetwork.py): per layer a Linear, the
activation (none for "linear", and none after the last Linear unless `activate_output`), a
LayerNorm if `is_layer_norm`, a Dropout where `dropout_structure` says. The state-dict keys are
the Sequential's indices, so the parameter-free modules shift them (`linear.0`, `linear.2`, ...
with an activation): the same keys A1111 writes and loads strictly. The multiplier (the
strength) applies in eval mode only; training always uses 1, as in A1111.

Attaching: A1111 and ComfyUI look the network up by the last dimension of the attention's
context, in self-attention too (where the context is the image features, 320/640/1280 wide in
SD, so a 768-wide network never fires there). edlib does the same with forward pre-hooks on
`to_k` and `to_v` of every attention module of the UNet: whatever attention processor runs
(sdpa, xformers), the projections see the transformed context. The hypernetwork becomes a
submodule of the UNet (`edlib_hypernetwork`), so it moves with it between devices, trains inside
accelerate's wrapper and is put in eval mode with it when sampling.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.nn.init import kaiming_normal_, kaiming_uniform_, normal_, xavier_normal_, xavier_uniform_, zeros_

from edlib.model.hypernetwork_settings import ACTIVATIONS, WEIGHT_INITIALIZATIONS, dropout_structure

ATTRIBUTE = "edlib_hypernetwork"  # the UNet submodule holding the attached hypernetwork

_ACTIVATION_MODULES = {
    "relu": torch.nn.ReLU,
    "leakyrelu": torch.nn.LeakyReLU,
    "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish,  # A1111's and ComfyUI's "swish" (not SiLU)
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
    "softsign": torch.nn.Softsign,
    "mish": torch.nn.Mish,
}


@dataclass(frozen=True)
class HypernetworkSpec:
    """The architecture of a hypernetwork, in A1111's terms (the metadata of its file)."""

    layer_structure: tuple[float, ...] = (1.0, 2.0, 1.0)
    activation_func: str = "linear"
    is_layer_norm: bool = False
    dropout_structure: tuple[float, ...] | None = None  # None: no dropout anywhere
    activate_output: bool = False
    weight_initialization: str = "Normal"

    def __post_init__(self):
        if self.dropout_structure is None:
            object.__setattr__(self, "dropout_structure", (0.0,) * len(self.layer_structure))
        if self.activation_func not in ACTIVATIONS:
            raise ValueError(f"activation_func {self.activation_func!r} is not one of {', '.join(ACTIVATIONS)}")
        if self.weight_initialization not in WEIGHT_INITIALIZATIONS:
            raise ValueError(
                f"weight_initialization {self.weight_initialization!r} is not one of {', '.join(WEIGHT_INITIALIZATIONS)}"
            )
        ls, ds = self.layer_structure, self.dropout_structure
        if len(ls) < 2 or ls[0] != 1 or ls[-1] != 1:
            raise ValueError(f"layer_structure {list(ls)} must start and end with 1")
        if len(ds) != len(ls) or ds[0] != 0 or ds[-1] != 0 or any(not 0 <= p < 1 for p in ds):
            raise ValueError(f"dropout_structure {list(ds)} must match layer_structure {list(ls)}, start and end with 0")

    @classmethod
    def from_config(cls, config) -> HypernetworkSpec:
        return cls(
            layer_structure=tuple(config.hypernetwork_layer_structure),
            activation_func=config.hypernetwork_activation_func,
            is_layer_norm=config.hypernetwork_is_layer_norm,
            dropout_structure=tuple(dropout_structure(config)),
            activate_output=config.hypernetwork_activate_output,
            weight_initialization=config.hypernetwork_weight_initialization,
        )


class HypernetworkModule(torch.nn.Module):
    """One of a width's two networks (key or value), in A1111's layout."""

    def __init__(self, width: int, spec: HypernetworkSpec):
        super().__init__()
        ls, last = spec.layer_structure, len(spec.layer_structure) - 2
        layers: list[torch.nn.Module] = []
        for i in range(len(ls) - 1):
            layers.append(torch.nn.Linear(int(width * ls[i]), int(width * ls[i + 1])))
            if spec.activation_func != "linear" and (i < last or spec.activate_output):
                layers.append(_ACTIVATION_MODULES[spec.activation_func]())
            if spec.is_layer_norm:
                layers.append(torch.nn.LayerNorm(int(width * ls[i + 1])))
            if spec.dropout_structure[i + 1] > 0:
                layers.append(torch.nn.Dropout(p=spec.dropout_structure[i + 1]))
        self.linear = torch.nn.Sequential(*layers)
        self.multiplier = 1.0

    def initialise(self, spec: HypernetworkSpec, generator: torch.Generator) -> None:
        """A1111's initialisation: "Normal" is N(0, 0.01) weights and zero biases, which LayerNorms
        get whatever the setting; Kaiming's gain follows the activation."""
        nonlinearity = "leaky_relu" if spec.activation_func == "leakyrelu" else "relu"
        with torch.no_grad():
            for layer in self.linear:
                if not isinstance(layer, (torch.nn.Linear, torch.nn.LayerNorm)):
                    continue
                weight, init = layer.weight, spec.weight_initialization
                if init == "Normal" or isinstance(layer, torch.nn.LayerNorm):
                    normal_(weight, mean=0.0, std=0.01, generator=generator)
                elif init == "XavierUniform":
                    xavier_uniform_(weight, generator=generator)
                elif init == "XavierNormal":
                    xavier_normal_(weight, generator=generator)
                elif init == "KaimingUniform":
                    kaiming_uniform_(weight, nonlinearity=nonlinearity, generator=generator)
                else:
                    kaiming_normal_(weight, nonlinearity=nonlinearity, generator=generator)
                zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The network keeps its own dtype (fp32 beside a half-precision UNet, as LoRA adapters
        # do); the context goes back in the dtype it came in.
        dtype = self.linear[0].weight.dtype
        h = x.to(dtype)
        out = h + self.linear(h) * (1.0 if self.training else self.multiplier)
        return out.to(x.dtype)


class Hypernetwork(torch.nn.Module):
    """The key and value networks of each context width: ``layers[str(width)] = [k, v]``."""

    def __init__(self, widths: Sequence[int], spec: HypernetworkSpec):
        super().__init__()
        if not widths:
            raise ValueError("a hypernetwork needs at least one context width")
        self.spec = spec
        self.layers = torch.nn.ModuleDict(
            {str(w): torch.nn.ModuleList([HypernetworkModule(w, spec), HypernetworkModule(w, spec)]) for w in widths}
        )
        self._hooks: list = []

    @property
    def widths(self) -> list[int]:
        return [int(w) for w in self.layers]

    def initialise(self, generator: torch.Generator) -> Hypernetwork:
        for pair in self.layers.values():
            for network in pair:
                network.initialise(self.spec, generator)
        return self

    def set_strength(self, strength: float) -> None:
        """The multiplier used in eval mode (A1111's `<hypernet:NAME:strength>`)."""
        for pair in self.layers.values():
            for network in pair:
                network.multiplier = float(strength)

    @property
    def strength(self) -> float:
        return next(iter(self.layers.values()))[0].multiplier

    def networks(self, width: int) -> tuple[HypernetworkModule, HypernetworkModule] | None:
        pair = self.layers[str(width)] if str(width) in self.layers else None
        return None if pair is None else (pair[0], pair[1])

    def layer_state(self) -> dict[int, tuple[OrderedDict, OrderedDict]]:
        """``{width: (key network's state dict, value network's)}``, keys in A1111's order
        (``linear.0.weight``, ``linear.0.bias``, ...), tensors detached."""
        return {
            int(w): tuple(OrderedDict((k, v.detach()) for k, v in network.state_dict().items()) for network in pair)
            for w, pair in self.layers.items()
        }

    def load_layer_state(self, state: Mapping[int, Sequence[Mapping[str, torch.Tensor]]], where: str) -> None:
        """Load `layer_state`'s layout; a missing width, key or shape is an error naming ``where``."""
        if set(state) != set(self.widths):
            raise ValueError(f"{where}: holds context widths {sorted(state)}, this hypernetwork has {self.widths}")
        for width, pair in state.items():
            for network, tensors, role in zip(self.networks(width), pair, ("key", "value"), strict=True):
                expected = network.state_dict()
                wrong = [k for k in expected if k not in tensors or tensors[k].shape != expected[k].shape]
                extra = [k for k in tensors if k not in expected]
                if wrong or extra:
                    raise ValueError(
                        f"{where}: the {role} network of width {width} does not match the layer structure, activation "
                        f"and layer norm settings {self.spec}: missing or misshapen {wrong[:4]}, unexpected {extra[:4]}"
                    )
                network.load_state_dict(dict(tensors), strict=True)


def find_hypernetwork(unet: torch.nn.Module) -> Hypernetwork | None:
    """The hypernetwork attached to ``unet`` (also through DDP or torch.compile wrappers)."""
    for module in unet.modules():
        if isinstance(module, Hypernetwork):
            return module
    return None


def attach(unet: torch.nn.Module, hypernetwork: Hypernetwork) -> Hypernetwork:
    """Apply ``hypernetwork`` in every attention of the (plain) ``unet``: it becomes the UNet's
    submodule, on the UNet's device, and transforms the input of each `to_k` / `to_v` whose
    width it has a network for. One hypernetwork per UNet."""
    from diffusers.models.attention_processor import Attention

    if find_hypernetwork(unet) is not None:
        raise ValueError("this UNet already has a hypernetwork; load the model again to apply another")
    projections = [
        (attention.to_k, attention.to_v)
        for attention in unet.modules()
        if isinstance(attention, Attention) and attention.to_k is not None and attention.to_v is not None
    ]
    widths = {to_k.in_features for to_k, _ in projections}
    if not widths & set(hypernetwork.widths):
        raise ValueError(
            f"the hypernetwork has networks for context widths {hypernetwork.widths}, but this UNet's attention "
            f"layers take {sorted(widths)}: it was made for another model family (768: SD1.x, 1024: SD2.x, 2048: SDXL)"
        )
    hypernetwork.to(next(unet.parameters()).device)
    unet.add_module(ATTRIBUTE, hypernetwork)
    for pair in projections:
        for index, projection in enumerate(pair):
            hypernetwork._hooks.append(projection.register_forward_pre_hook(_transform_context(hypernetwork, index)))
    return hypernetwork


def detach(unet: torch.nn.Module) -> Hypernetwork | None:
    """Take the hypernetwork off ``unet`` again (hooks removed); returns it, or None."""
    hypernetwork = find_hypernetwork(unet)
    if hypernetwork is None:
        return None
    for handle in hypernetwork._hooks:
        handle.remove()
    hypernetwork._hooks.clear()
    delattr(unet, ATTRIBUTE)
    return hypernetwork


def _transform_context(hypernetwork: Hypernetwork, index: int):
    """A pre-hook for `to_k` (index 0) or `to_v` (1): the context through that network."""

    def hook(module, args):
        pair = hypernetwork.networks(args[0].shape[-1])
        if pair is None:
            return None
        return (pair[index](args[0]), *args[1:])

    return hook
