"""A1111 hypernetwork export: the `.pt` layout AUTOMATIC1111 writes (int width keys, a pair of
state dicts in Sequential order, its metadata with their types, in its key order), written in
torch's legacy serialization so A1111's safe-unpickle check passes, loadable with
`weights_only=True`; and the networks A1111's and ComfyUI's loaders build from it compute what
edlib's computed (re-implemented loaders: tests/export/hypernetwork_clients.py)."""

from __future__ import annotations

import zipfile
from collections import OrderedDict
from dataclasses import replace

import pytest
import torch

from edlib.export.a1111_hypernetwork import export_a1111_hypernetwork, hypernetwork_file_contents
from edlib.model.hypernetwork_layers import Hypernetwork, HypernetworkSpec
from tests.export.hypernetwork_clients import a1111_check_pt, a1111_load, comfyui_networks

METADATA_TYPES = {
    "step": int,
    "name": str,
    "layer_structure": list,
    "activation_func": str,
    "is_layer_norm": bool,
    "weight_initialization": str,
    "sd_checkpoint": type(None),  # a diffusers folder has no A1111 short hash
    "sd_checkpoint_name": str,
    "activate_output": bool,
    "use_dropout": bool,
    "dropout_structure": list,
    "last_layer_dropout": bool,
    "optional_info": str,
}
# A1111's `Hypernetwork.save` order (modules/hypernetworks/hypernetwork.py, 3157fe28).
A1111_ORDER = list(METADATA_TYPES)


def trained(width: int, spec: HypernetworkSpec, seed: int = 0) -> Hypernetwork:
    """A hypernetwork whose weights are far from their start, as after training (so an
    identity-like network could not pass the comparisons by accident)."""
    hypernetwork = Hypernetwork([width], spec).initialise(torch.Generator().manual_seed(seed))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in hypernetwork.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.2)
    return hypernetwork


def test_the_file_has_a1111s_layout_keys_order_and_metadata_types(tmp_path):
    spec = HypernetworkSpec(activation_func="relu")
    path = export_a1111_hypernetwork(trained(768, spec), tmp_path / "mine.pt", step=120, base_model=str(tmp_path), dtype="fp32")
    contents = torch.load(path, weights_only=True)  # ComfyUI's way: no pickled code can run
    assert list(contents) == [768, *A1111_ORDER]
    assert type(list(contents)[0]) is int  # A1111 makes layers only of keys whose type is int
    for key, kind in METADATA_TYPES.items():
        assert type(contents[key]) is kind, key
    assert contents["name"] == "mine" and contents["step"] == 120 and contents["activation_func"] == "relu"
    assert contents["layer_structure"] == [1.0, 2.0, 1.0] and contents["dropout_structure"] == [0.0, 0.0, 0.0]
    assert contents["activate_output"] is False and contents["last_layer_dropout"] is False
    key_net, value_net = contents[768]
    assert type(contents[768]) is tuple and type(key_net) is OrderedDict and type(value_net) is OrderedDict
    # The relu after the first Linear shifts the second Linear to index 2 (the notes' checked layout).
    expected = {"linear.0.weight": (1536, 768), "linear.0.bias": (1536,), "linear.2.weight": (768, 1536), "linear.2.bias": (768,)}
    for network in (key_net, value_net):
        assert {k: tuple(v.shape) for k, v in network.items()} == expected
        assert list(network) == list(expected) and all(v.dtype == torch.float32 for v in network.values())


@pytest.mark.parametrize(
    "spec, keys",
    [
        (HypernetworkSpec(), ["linear.0", "linear.1"]),
        (HypernetworkSpec(dropout_structure=(0, 0.3, 0)), ["linear.0", "linear.2"]),
        (HypernetworkSpec(is_layer_norm=True), ["linear.0", "linear.1", "linear.2", "linear.3"]),
        (HypernetworkSpec(activation_func="relu", is_layer_norm=True), ["linear.0", "linear.2", "linear.3", "linear.4"]),
    ],
    ids=["linear", "dropout", "layer-norm", "relu+layer-norm"],
)
def test_linear_numbering_shifts_with_parameter_free_layers(spec, keys):
    """The four layouts of the field notes (dim 768, [1, 2, 1]), checked there against A1111."""
    contents = hypernetwork_file_contents(Hypernetwork([768], spec), name="n", step=0, base_model="m", base_model_label="m")
    assert [k.removesuffix(".weight") for k in contents[768][0] if k.endswith(".weight")] == keys


def test_legacy_serialization_passes_a1111s_safety_check_where_current_torch_fails(tmp_path):
    spec = HypernetworkSpec(layer_structure=(1, 1.5, 1), activation_func="mish", is_layer_norm=True)
    for dtype in ("fp16", "fp32"):
        path = export_a1111_hypernetwork(trained(64, spec), tmp_path / f"{dtype}.pt", step=3, base_model="m", dtype=dtype)
        assert not zipfile.is_zipfile(path)  # the legacy format: five pickles, then raw storages
        a1111_check_pt(path)  # raises if A1111 would refuse it
        assert {v.dtype for v in torch.load(path, weights_only=True)[64][0].values()} == {getattr(torch, {"fp16": "float16", "fp32": "float32"}[dtype])}
    # The same dict saved the way current torch saves by default is refused: the check is real.
    torch.save(torch.load(path, weights_only=True), tmp_path / "zip.pt")
    with pytest.raises(Exception, match="bad file inside"):
        a1111_check_pt(tmp_path / "zip.pt")
    assert not list(tmp_path.glob(".*partial"))  # no temporary file left beside the exports


LOADER_CASES = [
    HypernetworkSpec(),
    HypernetworkSpec(activation_func="relu"),
    HypernetworkSpec(activation_func="swish", activate_output=True),
    HypernetworkSpec(activation_func="leakyrelu", layer_structure=(1, 2, 2, 1)),
    HypernetworkSpec(is_layer_norm=True),
    HypernetworkSpec(activation_func="tanh", is_layer_norm=True, activate_output=True),
    # 12 modules per network: `linear.10` must stay after `linear.2` for ComfyUI
    HypernetworkSpec(activation_func="elu", is_layer_norm=True, activate_output=True, layer_structure=(1, 2, 2, 2, 1)),
]


@pytest.mark.parametrize("spec", LOADER_CASES, ids=lambda s: f"{s.activation_func}-ln{int(s.is_layer_norm)}-out{int(s.activate_output)}-{len(s.layer_structure)}")
def test_a1111_and_comfyui_build_networks_that_compute_what_edlibs_do(tmp_path, spec):
    strength = 0.7
    hypernetwork = trained(48, spec)
    hypernetwork.set_strength(strength)
    hypernetwork.eval()
    path = export_a1111_hypernetwork(hypernetwork, tmp_path / "h.pt", step=1, base_model="m", base_model_label="m", dtype="fp32")
    contents = torch.load(path, weights_only=True)
    context = torch.randn(2, 7, 48, generator=torch.Generator().manual_seed(9))

    a1111 = a1111_load(contents)
    comfy = comfyui_networks(contents)
    assert set(a1111) == set(comfy) == {48}
    with torch.no_grad():
        for index, ours in enumerate(hypernetwork.networks(48)):
            expected = ours(context)
            a1111[48][index].multiplier = strength
            assert torch.allclose(a1111[48][index](context), expected, atol=1e-6)
            comfy_out = context + comfy[48][index](context) * strength  # ComfyUI's patch
            assert torch.allclose(comfy_out, expected, atol=1e-6)


def test_comfyui_builds_layer_norm_with_an_activation_differently_unless_activate_output(tmp_path):
    """A trap found by re-implementing ComfyUI's loader: it counts the LayerNorm weights when it
    decides which Linear is the last, so it adds the activation after the last Linear too. Such
    files differ between the clients unless `activate_output` is set (edlib's setup warns)."""
    spec = HypernetworkSpec(activation_func="relu", is_layer_norm=True)
    contents = hypernetwork_file_contents(trained(32, spec), name="n", step=0, base_model="m", base_model_label="m", dtype="fp32")
    a1111_layers = [type(m).__name__ for m in a1111_load(contents)[32][0].linear]
    comfy_layers = [type(m).__name__ for m in comfyui_networks(contents)[32][0]]
    assert a1111_layers == ["Linear", "ReLU", "LayerNorm", "Linear", "LayerNorm"]
    assert comfy_layers == ["Linear", "ReLU", "LayerNorm", "Linear", "ReLU", "LayerNorm"]
    fixed = hypernetwork_file_contents(trained(32, replace(spec, activate_output=True)), name="n", step=0, base_model="m", base_model_label="m")
    assert [type(m).__name__ for m in a1111_load(fixed)[32][0].linear] == [type(m).__name__ for m in comfyui_networks(fixed)[32][0]]


def test_none_activation_and_missing_metadata_are_never_written():
    """ComfyUI refuses an `activation_func` of None and defaults `activate_output` to False
    where A1111 defaults it to True: both are always written, as strings and bools."""
    contents = hypernetwork_file_contents(Hypernetwork([16], HypernetworkSpec()), name="n", step=0, base_model="m", base_model_label="m")
    assert contents["activation_func"] == "linear" and contents["activate_output"] is False
    assert comfyui_networks(contents) is not None


def test_base_model_name_and_short_hash_as_a1111_writes_them(tmp_path):
    """The name is A1111's (the file name without folders or extension, as `export.run`
    names base models so no local path travels); the hash is A1111's short hash of the file."""
    import hashlib

    from edlib.export.run import base_model_name

    single = tmp_path / "models" / "base-v1.safetensors"
    single.parent.mkdir()
    single.write_bytes(b"not really a model, but hashed like one" * 1000)
    contents = hypernetwork_file_contents(
        Hypernetwork([8], HypernetworkSpec()), name="n", step=5, base_model=str(single), base_model_label=base_model_name(str(single))
    )
    assert contents["sd_checkpoint_name"] == "base-v1" and str(tmp_path) not in contents["optional_info"]
    assert contents["sd_checkpoint"] == hashlib.sha256(single.read_bytes()).hexdigest()[:10]
    hub = hypernetwork_file_contents(Hypernetwork([8], HypernetworkSpec()), name="n", step=5, base_model="org/model", base_model_label="org/model")
    assert hub["sd_checkpoint"] is None and hub["sd_checkpoint_name"] == "org/model"


def test_a_name_without_pt_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.pt"):
        export_a1111_hypernetwork(Hypernetwork([8], HypernetworkSpec()), tmp_path / "h.safetensors", step=0, base_model="m", base_model_label="m")
