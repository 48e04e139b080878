"""edlib.model.sr_optim: AdamW with bf16 stochastic rounding as flat chunk updates (issue 16).
Its update matches exact fp32 AdamW on average, a checkpoint resumes it exactly, it skips a
step on the device, leaves parameters without gradients alone, and its 8-bit map is
bitsandbytes'/torchao's."""

import pytest
import torch

from edlib.model.sr_optim import AdamW8bitStochasticRounding, AdamWStochasticRounding, dynamic_map, round_to_bf16

CLASSES = [AdamWStochasticRounding, AdamW8bitStochasticRounding]


def _shapes():
    # A conv kernel, a matrix, a bias, a scalar-ish tensor: chunk boundaries and 8-bit
    # block padding get exercised (small chunks force several).
    return [(32, 16, 3, 3), (300, 70), (70,), (1,), (5, 513)]


def _params(seed=0, dtype=torch.bfloat16):
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter((torch.randn(shape, generator=generator) * 0.05).to(dtype)) for shape in _shapes()]


def _grads(step):
    generator = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(shape, generator=generator) for shape in _shapes()]


def test_stochastic_rounding_is_unbiased_and_lands_on_a_neighbour():
    torch.manual_seed(0)
    x = torch.full((200_000,), 1.0 + 2**-9)  # a quarter of the way from 1 to the next bf16 (1 + 2**-7)
    rounded = round_to_bf16(x).float()
    assert set(rounded.unique().tolist()) == {1.0, 1.0 + 2**-7}
    assert rounded.mean().item() == pytest.approx(1.0 + 2**-9, abs=2e-5)
    assert torch.equal(round_to_bf16(torch.tensor([0.5, -3.0, 0.0])).float(), torch.tensor([0.5, -3.0, 0.0]))


@pytest.mark.parametrize("cls", CLASSES)
def test_the_update_matches_exact_adamw_on_average(cls):
    """20 steps on random gradients against torch's AdamW in fp32 from the same start: the
    per-weight differences are rounding noise (no bias), within the 5% the stochastic-rounding
    test of test_optim allows for the mean move."""
    torch.manual_seed(0)
    exact = [torch.nn.Parameter(p.detach().float()) for p in _params()]
    ours = _params()
    start = [p.detach().float().clone() for p in exact]
    reference = torch.optim.AdamW(exact, lr=1e-4, weight_decay=1e-2)
    optimizer = cls(ours, lr=1e-4, weight_decay=1e-2, chunk_elements=8192)
    for step in range(20):
        for e, o, g in zip(exact, ours, _grads(step)):
            e.grad, o.grad = g.clone(), g.bfloat16()
        reference.step()
        optimizer.step()
    for e, o, s in zip(exact, ours, start):
        assert o.dtype == torch.bfloat16
        moved_exact, moved = (e.detach() - s).flatten(), (o.detach().float() - s).flatten()
        if moved.numel() < 1000:
            continue
        # Unbiased: the mean difference is small against the mean move...
        assert (moved - moved_exact).mean().abs() < 0.05 * moved_exact.abs().mean()
        # ...and the moves follow the exact ones (noise of about one bf16 step per weight).
        assert torch.corrcoef(torch.stack([moved, moved_exact]))[0, 1] > 0.8


@pytest.mark.parametrize("cls", CLASSES)
def test_a_checkpoint_resumes_it_exactly(cls):
    """6 steps straight, or 3 steps, state_dict, a new optimizer loading it (and the RNG state
    restored, as a checkpoint does), 3 steps: the same bits."""

    def run(params, optimizer, steps):
        for step in steps:
            for p, g in zip(params, _grads(step)):
                p.grad = g.bfloat16()
            optimizer.step()

    torch.manual_seed(5)
    straight = _params()
    run(straight, cls(straight, lr=1e-3, chunk_elements=8192), range(6))

    torch.manual_seed(5)
    first = _params()
    optimizer = cls(first, lr=1e-3, chunk_elements=8192)
    run(first, optimizer, range(3))
    saved, rng = optimizer.state_dict(), torch.get_rng_state()
    saved = torch.load(_roundtrip(saved), weights_only=True)
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in first]
    again = cls(resumed, lr=1e-3, chunk_elements=8192)
    again.load_state_dict(saved)
    torch.set_rng_state(rng)
    run(resumed, again, range(3, 6))
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))


def _roundtrip(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("cls", CLASSES)
def test_found_inf_skips_on_the_device_and_missing_gradients_are_left_alone(cls):
    params = _params()
    optimizer = cls(params, lr=1e-3, chunk_elements=8192)
    for p, g in zip(params, _grads(0)):
        p.grad = g.bfloat16()
    optimizer.step()
    before = [p.detach().clone() for p in params]
    state = {id(p): {k: v.clone() for k, v in optimizer.state[p].items()} for p in params}
    for p in params:
        p.grad = torch.full_like(p, float("nan"))
    optimizer.found_inf, optimizer.grad_scale = torch.ones(()), None
    optimizer.step()
    del optimizer.found_inf, optimizer.grad_scale
    assert all(torch.equal(a, b) for a, b in zip(before, params))
    assert all(torch.equal(state[id(p)][k], v) for p in params for k, v in optimizer.state[p].items())

    for p, g in zip(params, _grads(1)):
        p.grad = g.bfloat16()
    params[1].grad = None  # no gradient this step: torch's AdamW leaves it (and its moments) alone
    optimizer.step()
    assert torch.equal(params[1], before[1]) and not torch.equal(params[0], before[0])
    assert all(torch.equal(state[id(params[1])][k], v) for k, v in optimizer.state[params[1]].items() if k != "step")


def test_the_8bit_map_is_bitsandbytes_dynamic_map_as_torchao_builds_it():
    quant_utils = pytest.importorskip("torchao.optim.quant_utils")
    for signed in (True, False):
        assert torch.equal(dynamic_map(signed), torch.tensor(quant_utils.create_dynamic_map(signed=signed), dtype=torch.float32))
