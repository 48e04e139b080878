"""Textual inversion on the tiny SD model: new tokens and their initial vectors, only the new
rows in the optimizer, real AdamW steps with weight decay that move the new rows and leave
every other weight (the rest of the embedding matrix included) bit-identical, and
checkpoints holding just the new rows."""

from types import SimpleNamespace

import pytest
import torch

from edlib.model.methods.textual_inversion import Placeholder, TextualInversion
from edlib.model.models import encode_prompts, load_models
from tests.train.loop_support import one_torch_thread  # noqa: F401 - autouse fixture
from tests.train.method_support import stop_after, train_steps

OHWX = {"token": "<ohwx>", "init_word": "person", "num_vectors": 2}
ZZ = {"token": "<zz>", "init_word": "red cat"}


def ti_config(*placeholders, text_encoder_lr=1e-2) -> SimpleNamespace:
    """The config keys textual inversion reads (TrainConfig's names)."""
    return SimpleNamespace(placeholder_tokens=list(placeholders), text_encoder_lr=text_encoder_lr, text_encoder_2_lr=None, unet_lr=0.0)


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


def embedding_rows(models, token_ids) -> torch.Tensor:
    """What the text encoder's embedding layer gives for ``token_ids`` (peft's rows swapped in)."""
    with torch.no_grad():
        return models.text_encoder.get_input_embeddings()(torch.tensor([token_ids]))[0]


def test_setup_adds_tokens_initialised_from_the_init_word(tiny_sd1):
    models = load_models(tiny_sd1)
    vocabulary = len(models.tokenizer)
    original = models.text_encoder.get_input_embeddings().weight.detach().clone()
    two_words = {"token": "<pair>", "init_word": "red cat", "num_vectors": 2}
    TextualInversion(ti_config(OHWX, ZZ, two_words)).setup(models)

    tokenizer = models.tokenizer
    assert len(tokenizer) == vocabulary + 5
    assert tokenizer.tokenize("a <ohwx> <ohwx>_1 <zz>")[1:] == ["<ohwx>", "<ohwx>_1", "<zz>"]
    person, red, cat = (tokenizer.convert_tokens_to_ids(f"{word}</w>") for word in ("person", "red", "cat"))
    rows = embedding_rows(models, tokenizer.convert_tokens_to_ids(["<ohwx>", "<ohwx>_1", "<zz>", "<pair>", "<pair>_1"]))
    # one init token, two vectors: both start as it; two init tokens, one vector: their mean;
    # two init tokens, two vectors: one each
    assert torch.equal(rows[0], original[person]) and torch.equal(rows[1], original[person])
    assert torch.allclose(rows[2], (original[red] + original[cat]) / 2)
    assert torch.equal(rows[3], original[red]) and torch.equal(rows[4], original[cat])


def test_only_the_new_rows_are_in_the_optimizer(tiny_sd1):
    models = load_models(tiny_sd1)
    method = TextualInversion(ti_config(OHWX, ZZ, text_encoder_lr=5e-3))
    method.setup(models)
    (group,) = method.param_groups(models)
    assert group["lr"] == 5e-3
    (rows,) = group["params"]
    assert rows.shape == (3, models.text_encoder.config.hidden_size)
    trainable = [p for m in (models.unet, models.text_encoder, models.vae) for p in m.parameters() if p.requires_grad]
    assert len(trainable) == 1 and trainable[0] is rows
    assert method.trainable_module_names(models) == {"text_encoder"} and method.text_encoder_trains(models)


def test_steps_with_weight_decay_change_only_the_new_rows(tiny_sd1):
    models = load_models(tiny_sd1)
    method = TextualInversion(ti_config(OHWX, ZZ))
    method.setup(models)
    before = {name: state(getattr(models, name)) for name in ("unet", "vae")}
    text_before = state(models.text_encoder)
    (rows,) = method.param_groups(models)[0]["params"]
    start = rows.detach().clone()

    captions = ("a photo of <ohwx>", "<zz> style painting")
    losses = train_steps(models, method, steps=3, captions=captions, weight_decay=0.5)

    assert all(torch.isfinite(torch.tensor(losses)))
    for name in ("unet", "vae"):
        after = state(getattr(models, name))
        assert all(torch.equal(after[key], value) for key, value in before[name].items()), f"{name} changed"
    text_after = state(models.text_encoder)
    changed = {key for key, value in text_before.items() if not torch.equal(text_after[key], value)}
    assert changed == {"embeddings.token_embedding.trainable_tokens_delta.default"}
    # every vector moved, including the second vector of the two-vector placeholder
    assert all(not torch.equal(rows[i], start[i]) for i in range(3))
    tokenizer = models.tokenizer
    new_ids = tokenizer.convert_tokens_to_ids(["<ohwx>", "<ohwx>_1", "<zz>"])
    assert torch.equal(embedding_rows(models, new_ids), rows.detach())
    old_ids = list(range(len(tokenizer) - 3))
    base = text_before["embeddings.token_embedding.base_layer.weight"]
    assert torch.equal(embedding_rows(models, old_ids), base[old_ids])


def test_checkpoint_holds_just_the_new_rows_and_loads_back(tiny_sd1):
    config = ti_config(OHWX, ZZ)
    models = load_models(tiny_sd1)
    method = TextualInversion(config)
    method.setup(models)
    train_steps(models, method, steps=2, captions=("a photo of <ohwx>", "<zz> cat"))
    saved = method.checkpoint_weights(models)
    assert set(saved) == {"embeddings"}
    assert {token: tuple(t.shape) for token, t in saved["embeddings"].items()} == {"<ohwx>": (2, 32), "<zz>": (1, 32)}

    fresh = load_models(tiny_sd1)
    restored = TextualInversion(config)
    restored.setup(fresh)
    captions = restored.prepare_captions(["a photo of <ohwx> and <zz>"])
    with torch.no_grad():
        assert not torch.equal(encode_prompts(fresh, captions).hidden, encode_prompts(models, captions).hidden)
        restored.load_weights(fresh, saved)
        assert torch.equal(encode_prompts(fresh, captions).hidden, encode_prompts(models, captions).hidden)

    other = load_models(tiny_sd1)
    wrong = TextualInversion(ti_config({**OHWX, "num_vectors": 3}, ZZ))
    wrong.setup(other)
    with pytest.raises(ValueError, match="<ohwx> has 2 vectors"):
        wrong.load_weights(other, saved)


def test_prepare_captions_spells_out_every_vector():
    method = TextualInversion(ti_config(OHWX, ZZ))
    assert method.prepare_captions(["<ohwx>, photo of <ohwx> with <zz>", "no placeholder", "<ohwx> <ohwx>_1 <zz>"]) == [
        "<ohwx> <ohwx>_1, photo of <ohwx> <ohwx>_1 with <zz>",
        "no placeholder",
        "<ohwx> <ohwx>_1 <zz>",  # already spelled out: unchanged
    ]


@pytest.mark.parametrize(
    ("placeholders", "lr", "message"),
    [
        ([{"token": "cat", "init_word": "dog"}], 1e-3, "already a word"),
        ([{"token": "cat</w>", "init_word": "dog"}], 1e-3, "already a word"),
        ([], 1e-3, "at least one"),
        ([OHWX, OHWX], 1e-3, "given twice"),
        ([{"token": "two words", "init_word": "dog"}], 1e-3, "whitespace"),
        ([OHWX], 0.0, "text_encoder_lr"),
        ([{"token": "<x>"}], 1e-3, r"placeholder_tokens\[0\]: init_word: Field required"),
        ([{**OHWX, "num_vectors": 0}], 1e-3, "num_vectors"),
    ],
)
def test_bad_placeholders_are_clear_errors(tiny_sd1, placeholders, lr, message):
    with pytest.raises(ValueError, match=message):
        TextualInversion(ti_config(*placeholders, text_encoder_lr=lr)).setup(load_models(tiny_sd1))


def test_placeholder_vector_names_follow_diffusers():
    assert Placeholder(token="<x>", init_word="dog", num_vectors=3).tokens == ["<x>", "<x>_1", "<x>_2"]


def _straight_and_resumed_weights(model, tmp_path):
    """Train `<ohwx>` through the real loop twice: straight, and stopped after step 1 then
    resumed. Returns (the straight run's folder, {run folder: checkpoint weights})."""
    from edlib.model.checkpoint import load_checkpoint, resolve_checkpoint
    from edlib.train.loop import train
    from tests.train.loop_support import make_data_root, tiny_config

    data = make_data_root(tmp_path / "data")
    for image in data.rglob("*.png"):
        image.with_suffix(".txt").write_text(f"a photo of <ohwx>, {image.stem.split('_')[0]}", encoding="utf-8")
    # No weight decay: then a vector moves only if its token is in the prompt (so this also
    # checks that the loop spells out both vectors of the placeholder).
    settings = dict(
        method="textual_inversion", placeholder_tokens=[OHWX], text_encoder_lr=1e-2, batch_size=2,
        optimizer_args={"weight_decay": 0.0},
    )  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tiny_config(model, data, straight, **settings))
    config = tiny_config(model, data, resumed, **settings)
    assert train(config, callbacks=[stop_after(resumed, 1)]).stopped_by == "stop request"
    train(config, resume="latest")
    return straight, {run: load_checkpoint(resolve_checkpoint("latest", run)).weights for run in (straight, resumed)}


def test_textual_inversion_through_the_loop_changes_only_the_new_rows(tiny_sd1, tmp_path):
    """`method: textual_inversion` in the real loop: the checkpoint holds just the
    placeholder's vectors, they moved, and a resumed run ends where a straight one does."""
    straight, weights = _straight_and_resumed_weights(tiny_sd1, tmp_path)
    resumed = tmp_path / "resumed"
    assert set(weights[straight]) == {"embeddings"} and set(weights[straight]["embeddings"]) == {"<ohwx>"}
    learned = weights[straight]["embeddings"]["<ohwx>"]
    assert torch.allclose(weights[resumed]["embeddings"]["<ohwx>"], learned, rtol=0, atol=1e-6)

    models = load_models(tiny_sd1)
    TextualInversion(ti_config(OHWX)).setup(models)
    start = embedding_rows(models, models.tokenizer.convert_tokens_to_ids(["<ohwx>", "<ohwx>_1"]))
    assert all(not torch.equal(learned[i], start[i]) for i in range(2))  # both vectors trained

    # `edlib sample RUN` (load_pipeline of the run) conditions on both vectors, as training did
    from edlib.model.trained import load_trained
    from edlib.sample.pipeline import load_pipeline

    trained = load_trained(straight)
    pipe = load_pipeline(straight)
    with torch.no_grad():
        expected = encode_prompts(trained.models, trained.method.prepare_captions(["a photo of <ohwx>"])).hidden
        for prompt in ("a photo of <ohwx>", "a photo of <OHWX>"):
            hidden, _ = pipe.encode_prompt(prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
            assert torch.equal(hidden, expected), prompt


# --- SDXL: the same placeholder in both tokenizers and encoders ---


def sdxl_steps(models, method, *, steps=3, captions=("a photo of <ohwx>", "<zz> style painting"), weight_decay=0.5):
    """Real AdamW steps on SDXL (both encoders' conditioning, pooled embedding and
    micro-conditioning, as the loop's `predict` gives them)."""
    from edlib.model.models import predict
    from edlib.train.noise import per_sample_loss, sample_noise, sample_timesteps, training_target

    optimizer = torch.optim.AdamW(method.param_groups(models), weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(0)
    time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]] * len(captions))
    for _ in range(steps):
        latents = torch.randn(len(captions), 4, 8, 8, generator=generator)
        noise = sample_noise(latents, generator)
        timesteps = sample_timesteps(models.noise_scheduler, generator, batch_size=len(captions))
        noisy = models.noise_scheduler.add_noise(latents, noise, timesteps)
        cond = encode_prompts(models, method.prepare_captions(list(captions))).with_time_ids(time_ids)
        target = training_target(models.noise_scheduler, latents, noise, timesteps)
        per_sample_loss(predict(models.unet, noisy, timesteps, cond), target).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_sdxl_gets_the_placeholder_in_both_tokenizers_and_encoders(tiny_sdxl):
    models = load_models(tiny_sdxl)
    originals = {name: getattr(models, name).get_input_embeddings().weight.detach().clone() for name in ("text_encoder", "text_encoder_2")}
    method = TextualInversion(SimpleNamespace(**{**vars(ti_config(OHWX, ZZ, text_encoder_lr=5e-3)), "text_encoder_2_lr": 1e-3}))
    method.setup(models)

    for tokenizer_name, encoder_name, width in (("tokenizer", "text_encoder", 32), ("tokenizer_2", "text_encoder_2", 48)):
        tokenizer, encoder = getattr(models, tokenizer_name), getattr(models, encoder_name)
        assert tokenizer.tokenize("a <ohwx> <ohwx>_1 <zz>")[1:] == ["<ohwx>", "<ohwx>_1", "<zz>"]
        person = tokenizer.convert_tokens_to_ids("person</w>")
        with torch.no_grad():
            rows = encoder.get_input_embeddings()(torch.tensor([tokenizer.convert_tokens_to_ids(["<ohwx>", "<ohwx>_1"])]))[0]
        assert rows.shape == (2, width)
        assert torch.equal(rows[0], originals[encoder_name][person]) and torch.equal(rows[1], originals[encoder_name][person])

    groups = {group["name"]: group for group in method.param_groups(models)}
    assert {name: group["lr"] for name, group in groups.items()} == {"embeddings": 5e-3, "embeddings_2": 1e-3}
    assert [tuple(group["params"][0].shape) for group in groups.values()] == [(3, 32), (3, 48)]
    trainable = [p for name in models.module_names for p in getattr(models, name).parameters() if p.requires_grad]
    assert len(trainable) == 2
    assert method.trainable_module_names(models) == {"text_encoder", "text_encoder_2"}


def test_sdxl_steps_change_only_the_new_rows_of_both_encoders(tiny_sdxl):
    models = load_models(tiny_sdxl)
    method = TextualInversion(ti_config(OHWX, ZZ))
    method.setup(models)
    before = {name: state(getattr(models, name)) for name in models.module_names}
    starts = {name: method.learned_embeddings(models, encoder=name) for name in ("text_encoder", "text_encoder_2")}

    sdxl_steps(models, method)

    delta = "embeddings.token_embedding.trainable_tokens_delta.default"
    for name in models.module_names:
        after = state(getattr(models, name))
        changed = {key for key, value in before[name].items() if not torch.equal(after[key], value)}
        assert changed == ({f"text_model.{delta}"} if name == "text_encoder_2" else {delta} if name == "text_encoder" else set()), name
    for name, start in starts.items():
        learned = method.learned_embeddings(models, encoder=name)
        assert all(not torch.equal(learned[token][i], start[token][i]) for token in start for i in range(len(start[token]))), name


def test_an_sdxl_second_encoder_at_lr_0_keeps_its_initial_vectors(tiny_sdxl):
    models = load_models(tiny_sdxl)
    method = TextualInversion(SimpleNamespace(**{**vars(ti_config(OHWX)), "text_encoder_2_lr": 0.0}))
    method.setup(models)
    start = {name: method.learned_embeddings(models, encoder=name)["<ohwx>"] for name in ("text_encoder", "text_encoder_2")}
    assert [group["name"] for group in method.param_groups(models)] == ["embeddings"]
    sdxl_steps(models, method, captions=("a photo of <ohwx>",))
    assert torch.equal(method.learned_embeddings(models, encoder="text_encoder_2")["<ohwx>"], start["text_encoder_2"])
    assert not torch.equal(method.learned_embeddings(models)["<ohwx>"], start["text_encoder"])
    # the checkpoint still holds both encoders' rows: an SDXL embedding file needs both
    assert set(method.checkpoint_weights(models)) == {"embeddings", "embeddings_2"}


def _set_up(folder):
    models = load_models(folder)
    TextualInversion(ti_config(OHWX)).setup(models)
    return models


def test_sdxl_textual_inversion_through_the_loop_resumes_exactly(tiny_sdxl, tmp_path):
    straight, weights = _straight_and_resumed_weights(tiny_sdxl, tmp_path)
    resumed = tmp_path / "resumed"
    assert set(weights[straight]) == {"embeddings", "embeddings_2"}
    start = _set_up(tiny_sdxl)
    for file_name, encoder in (("embeddings", "text_encoder"), ("embeddings_2", "text_encoder_2")):
        learned = weights[straight][file_name]["<ohwx>"]
        assert torch.allclose(weights[resumed][file_name]["<ohwx>"], learned, rtol=0, atol=1e-6), file_name
        initial = TextualInversion(ti_config(OHWX)).learned_embeddings(start, encoder=encoder)["<ohwx>"]
        assert all(not torch.equal(learned[i], initial[i]) for i in range(2)), file_name  # both vectors trained
