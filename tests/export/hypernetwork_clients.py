"""What AUTOMATIC1111 and ComfyUI do with a hypernetwork file, re-implemented for the tests.

Neither client can be imported here (each needs its whole application), and the tests must
not need the network or a checkout, so the parts that decide whether a file loads and what it
computes are written out again from their source, as faithfully as possible:

- `a1111_check_pt`: AUTOMATIC1111's safe-unpickle check, `modules/safe.py` (stored at
  05933840f0676dd1a90a7e2ad3f2a0672624b2cd): zip member names against its pattern, then a
  restricted unpickler with its allow-list of globals; a legacy (non-zip) file is checked as
  five consecutive pickles. The pytorch_lightning entries of the allow-list are left out
  (they import pytorch_lightning; no hypernetwork file names them).
- `a1111_module`: `HypernetworkModule.__init__` + `load_state_dict` of
  `modules/hypernetworks/hypernetwork.py` (stored at 3157fe28c3d3b075dec53d6c9830bbafd79cec1b),
  with the metadata defaults of `Hypernetwork.load`; forward is `x + linear(x) * multiplier`.
- `comfyui_networks`: `load_hypernetwork_patch` of `comfy_extras/nodes_hypernetwork.py` (stored
  at 0323d8746da9beb8f3face4b77305af8d58319d6), which rebuilds each network from the order of
  its `*.weight` keys; the patch computes `k + hn[0](k) * strength` (and the same for v). Its
  Sequentials are never put in eval mode.
"""

from __future__ import annotations

import collections
import inspect
import pickle
import re
import zipfile

import numpy
import torch


class RestrictedUnpickler(pickle.Unpickler):
    def persistent_load(self, saved_id):
        assert saved_id[0] == "storage"
        return torch.storage.TypedStorage(_internal=True)

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return getattr(collections, name)
        if module == "torch._utils" and name in ["_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_device_tensor_from_numpy"]:
            return getattr(torch._utils, name)
        if module == "torch" and name in [
            "FloatStorage", "HalfStorage", "IntStorage", "LongStorage", "DoubleStorage", "ByteStorage", "float32", "BFloat16Storage"
        ]:  # fmt: skip
            return getattr(torch, name)
        if module == "torch.nn.modules.container" and name in ["ParameterDict"]:
            return getattr(torch.nn.modules.container, name)
        if module == "numpy.core.multiarray" and name in ["scalar", "_reconstruct"]:
            return getattr(numpy.core.multiarray, name)
        if module == "numpy" and name in ["dtype", "ndarray"]:
            return getattr(numpy, name)
        if module == "_codecs" and name == "encode":
            import _codecs

            return _codecs.encode
        if module == "__builtin__" and name == "set":
            return set
        raise Exception(f"global '{module}/{name}' is forbidden")


ALLOWED_ZIP_NAMES = re.compile(r"^([^/]+)/((data/\d+)|version|(data\.pkl))$")
DATA_PKL = re.compile(r"^([^/]+)/data\.pkl$")


def a1111_check_pt(filename) -> None:
    """Raises as A1111's check does when it would refuse the file; returns when it passes."""
    try:
        with zipfile.ZipFile(filename) as z:
            for name in z.namelist():
                if not ALLOWED_ZIP_NAMES.match(name):
                    raise Exception(f"bad file inside {filename}: {name}")
            data_pkl = [f for f in z.namelist() if DATA_PKL.match(f)]
            if len(data_pkl) != 1:
                raise Exception(f"data.pkl not found (or several) in {filename}")
            with z.open(data_pkl[0]) as file:
                RestrictedUnpickler(file).load()
    except zipfile.BadZipfile:
        with open(filename, "rb") as file:
            unpickler = RestrictedUnpickler(file)
            for _ in range(5):
                unpickler.load()


# A1111 builds its activation table from every class in torch.nn.modules.activation.
A1111_ACTIVATIONS = {
    "linear": torch.nn.Identity, "relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU, "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
}  # fmt: skip
A1111_ACTIVATIONS.update(
    {
        n.lower(): c
        for n, c in inspect.getmembers(torch.nn.modules.activation)
        if inspect.isclass(c) and c.__module__ == "torch.nn.modules.activation"
    }
)


class A1111Module(torch.nn.Module):
    def __init__(self, dim, state_dict, layer_structure, activation_func, add_layer_norm, activate_output, dropout_structure):
        super().__init__()
        self.multiplier = 1.0
        assert layer_structure[0] == 1 and layer_structure[-1] == 1
        linears = []
        for i in range(len(layer_structure) - 1):
            linears.append(torch.nn.Linear(int(dim * layer_structure[i]), int(dim * layer_structure[i + 1])))
            if activation_func == "linear" or activation_func is None or (i >= len(layer_structure) - 2 and not activate_output):
                pass
            elif activation_func in A1111_ACTIVATIONS:
                linears.append(A1111_ACTIVATIONS[activation_func]())
            else:
                raise RuntimeError(f"hypernetwork uses an unsupported activation function: {activation_func}")
            if add_layer_norm:
                linears.append(torch.nn.LayerNorm(int(dim * layer_structure[i + 1])))
            if dropout_structure is not None and dropout_structure[i + 1] > 0:
                assert 0 < dropout_structure[i + 1] < 1
                linears.append(torch.nn.Dropout(p=dropout_structure[i + 1]))
        self.linear = torch.nn.Sequential(*linears)
        self.load_state_dict(state_dict)  # strict, as A1111 loads

    def forward(self, x):
        return x + self.linear(x) * (self.multiplier if not self.training else 1)


def a1111_parse_dropout_structure(layer_structure, use_dropout, last_layer_dropout):
    if not use_dropout:
        return [0] * len(layer_structure)
    return [0, *[0.3] * (len(layer_structure) - 3), 0.3 if last_layer_dropout else 0, 0]


def a1111_load(contents: dict) -> dict[int, tuple[A1111Module, A1111Module]]:
    """`Hypernetwork.load` after `torch.load`: the (key, value) modules per int key, in eval mode."""
    layer_structure = contents.get("layer_structure", [1, 2, 1])
    activation_func = contents.get("activation_func", None)
    add_layer_norm = contents.get("is_layer_norm", False)
    dropout_structure = contents.get("dropout_structure", None)
    use_dropout = True if dropout_structure is not None and any(dropout_structure) else contents.get("use_dropout", False)
    activate_output = contents.get("activate_output", True)
    last_layer_dropout = contents.get("last_layer_dropout", False)
    if dropout_structure is None:
        dropout_structure = a1111_parse_dropout_structure(layer_structure, use_dropout, last_layer_dropout)
    layers = {}
    for size, sd in contents.items():
        if type(size) == int:  # A1111's own test, on purpose
            pair = tuple(
                A1111Module(size, dict(s), layer_structure, activation_func, add_layer_norm, activate_output, dropout_structure)
                for s in sd
            )
            for module in pair:
                module.eval()
            layers[size] = pair
    return layers


COMFYUI_ACTIVATIONS = {
    "linear": torch.nn.Identity, "relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU, "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "softsign": torch.nn.Softsign,
    "mish": torch.nn.Mish,
}  # fmt: skip


def comfyui_networks(sd: dict) -> dict[int, list[torch.nn.Sequential]] | None:
    """The networks ComfyUI's loader builds (None where it logs "Unsupported Hypernetwork format")."""
    activation_func = sd.get("activation_func", "linear")
    is_layer_norm = sd.get("is_layer_norm", False)
    use_dropout = sd.get("use_dropout", False)
    activate_output = sd.get("activate_output", False)
    last_layer_dropout = sd.get("last_layer_dropout", False)
    if activation_func not in COMFYUI_ACTIVATIONS:
        return None
    out = {}
    for d in sd:
        try:
            dim = int(d)
        except (TypeError, ValueError):
            continue
        output = []
        for index in [0, 1]:
            attn_weights = sd[dim][index]
            linears = [a[: -len(".weight")] for a in attn_weights.keys() if a.endswith(".weight")]
            layers = []
            i = 0
            while i < len(linears):
                lin_name = linears[i]
                last_layer = i == (len(linears) - 1)
                penultimate_layer = i == (len(linears) - 2)
                lin_weight = attn_weights[f"{lin_name}.weight"]
                layer = torch.nn.Linear(lin_weight.shape[1], lin_weight.shape[0])
                layer.load_state_dict({"weight": lin_weight, "bias": attn_weights[f"{lin_name}.bias"]})
                layers.append(layer)
                if activation_func != "linear" and ((not last_layer) or activate_output):
                    layers.append(COMFYUI_ACTIVATIONS[activation_func]())
                if is_layer_norm:
                    i += 1
                    ln_name = linears[i]
                    ln_weight = attn_weights[f"{ln_name}.weight"]
                    ln = torch.nn.LayerNorm(ln_weight.shape[0])
                    ln.load_state_dict({"weight": ln_weight, "bias": attn_weights[f"{ln_name}.bias"]})
                    layers.append(ln)
                if use_dropout and (not last_layer) and (not penultimate_layer or last_layer_dropout):
                    layers.append(torch.nn.Dropout(p=0.3))
                i += 1
            output.append(torch.nn.Sequential(*layers))
        out[dim] = output
    return out
