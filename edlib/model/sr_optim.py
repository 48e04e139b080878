"""AdamW for bf16 weights with stochastic rounding (`full_bf16`), as a few flat updates a step.

With bf16 weights, round-to-nearest drops every update smaller than half a bf16 step (about
1/512 of the weight): at fine-tuning rates most updates. Stochastic rounding rounds the exact
fp32 result up or down at random, in proportion to where it lies between the two bf16
neighbours, so a weight moves by the exact update on average.

torchao's optimizers do this with one `torch.compile`d function per parameter shape: SDXL's
UNet has 44 shapes, and on a CPU the first step compiled for about 4 minutes and later steps
spent 0.75-0.87 s of host time on 1,680 per-parameter calls. Here each parameter group is laid
out once in chunks of about `CHUNK_ELEMENTS` elements, and a step works on a chunk as one flat
tensor: gradients and weights are gathered into fp32 work buffers with one foreach copy, the
AdamW update is a dozen whole-chunk operations, the result is rounded and copied back with one
foreach copy. No compilation; the number of operations per step grows with the number of
chunks (SDXL: about 80), not with the number of parameters. `bench/optim_bench.py` times it.

Two kinds of moment state, each chunk's in one flat buffer whose per-parameter views are what
`state_dict` shows (so a checkpoint lists the usual `exp_avg`/`exp_avg_sq` per parameter):

- `AdamWStochasticRounding`: the moments in the weights' dtype (bf16: 4 bytes per weight, as
  `edlib.model.estimate` counts), themselves rounded stochastically, so the second moment
  keeps decaying when gradients shrink (with nearest rounding a 0.1% decay per step is lost).
- `AdamW8bitStochasticRounding`: 8-bit block-wise moments (bitsandbytes' dynamic quantisation
  map, blocks of 256 values, each parameter starting a new block): 2 bytes per weight.
  Parameters under 4,096 values (biases, norms) keep moments as above, as bitsandbytes does.

Both skip a step on the device when given `found_inf` (see `edlib.model.nonfinite`), and use
the global RNG for the rounding, which a checkpoint saves and a resume restores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

CHUNK_ELEMENTS = 1 << 25  # 32M elements: fp32 temporaries of 128 MiB each
BLOCK = 256  # 8-bit state: values per quantisation block (bitsandbytes', torchao's)
MIN_8BIT_SIZE = 4096  # smaller parameters keep 16-bit moments (bitsandbytes' min_8bit_size)


def round_to_bf16(x: torch.Tensor) -> torch.Tensor:
    """fp32 `x` rounded stochastically to bf16: adding 16 random bits below the bf16 mantissa
    and truncating carries into it with probability (dropped bits) / 2**16."""
    noise = torch.randint(0, 1 << 16, x.shape, device=x.device, dtype=torch.int32)
    bits = (x.contiguous().view(torch.int32) + noise) & -65536  # -65536: 0xFFFF0000
    return bits.view(torch.float32).to(torch.bfloat16)  # exact: the low 16 bits are zero


def dynamic_map(signed: bool) -> torch.Tensor:
    """bitsandbytes' dynamic quantisation map for 8-bit optimizer state: 256 sorted values in
    [-1, 1] (signed) or [0, 1], dense near zero (an exponent of 10**-6 .. 10**0 and a
    shrinking linear fraction; Dettmers 2015, arXiv:1511.04561), without zero padding, as
    torchao's `create_dynamic_map` builds it (checked against it in the tests)."""
    exponent_bits, non_sign_bits = 7, 7
    values = []
    for i in range(exponent_bits):
        items = 2 ** (i + non_sign_bits - exponent_bits) + 1 if signed else 2 ** (i + non_sign_bits - exponent_bits + 1) + 1
        boundaries = torch.linspace(0.1, 1, items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        scale = 10 ** (-(exponent_bits - 1) + i)
        values += (scale * means).tolist() + ((-scale * means).tolist() if signed else [])
    values += [0.0, 1.0]
    if len(values) != 256:
        raise AssertionError(f"dynamic map has {len(values)} values")
    return torch.tensor(sorted(values), dtype=torch.float32)


@dataclass
class _Chunk:
    params: list[torch.nn.Parameter]
    offsets: list[int]
    length: int  # elements, padding included
    quantized: bool  # 8-bit moments (else in the parameters' dtype)
    step: torch.Tensor  # 0-dim float32 on the device, shared by the chunk's parameters
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # flat state buffers
    work: dict[str, list[torch.Tensor]] | None = None  # per-parameter views of the work buffers


class AdamWStochasticRounding(torch.optim.Optimizer):
    """AdamW with bf16 stochastic rounding of the weights and of the moments, which are kept
    in the weights' dtype. Decoupled weight decay and bias correction as torch's AdamW; see
    the module docstring."""

    _step_supports_amp_scaling = True  # takes `found_inf` and `grad_scale`, like torch's fused AdamW
    eight_bit = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, *, chunk_elements=CHUNK_ELEMENTS):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ValueError(f"invalid AdamW arguments: lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.chunk_elements = chunk_elements
        self._layout: list[list[_Chunk]] | None = None
        self._work: dict[tuple, torch.Tensor] = {}
        self._maps: dict[tuple, torch.Tensor] = {}

    # -- layout ------------------------------------------------------------------------------

    def _build_layout(self) -> list[list[_Chunk]]:
        """Each group's parameters in chunks of one kind (8-bit or not), device and dtype."""
        layout = []
        for group in self.param_groups:
            chunks, current, offsets, length, kind = [], [], [], 0, None
            for p in group["params"]:
                quantized = self.eight_bit and p.numel() >= MIN_8BIT_SIZE
                align = BLOCK if quantized else 1
                size = -(-p.numel() // align) * align
                if current and (length + size > self.chunk_elements or kind != (quantized, p.device, p.dtype)):
                    chunks.append(self._new_chunk(current, offsets, length, kind[0]))
                    current, offsets, length = [], [], 0
                kind = (quantized, p.device, p.dtype)
                current.append(p)
                offsets.append(length)
                length += size
            if current:
                chunks.append(self._new_chunk(current, offsets, length, kind[0]))
            layout.append(chunks)
        return layout

    def _new_chunk(self, params, offsets, length, quantized) -> _Chunk:
        device, dtype = params[0].device, params[0].dtype
        step = self.state.get(params[0], {}).get("step", torch.zeros(()))
        chunk = _Chunk(params, offsets, length, quantized, step.detach().to(device, torch.float32).clone())
        if quantized:  # codes start at the map's zero: padding reads as 0 whatever its block's scale
            for name, signed in (("exp_avg", True), ("exp_avg_sq", False)):
                zero = int((self._map(signed, device) == 0).nonzero()[0])
                chunk.state[name] = torch.full((length,), zero, dtype=torch.uint8, device=device)
                chunk.state[f"{name}_absmax"] = torch.zeros(length // BLOCK, dtype=torch.float32, device=device)
        else:
            chunk.state = {name: torch.zeros(length, dtype=dtype, device=device) for name in ("exp_avg", "exp_avg_sq")}
        for p, offset in zip(params, offsets):
            views = {name: chunk.state[name][offset : offset + p.numel()].view(p.shape) for name in ("exp_avg", "exp_avg_sq")}
            if quantized:
                blocks = slice(offset // BLOCK, (offset + p.numel() + BLOCK - 1) // BLOCK)
                views.update({f"{name}_absmax": chunk.state[f"{name}_absmax"][blocks] for name in ("exp_avg", "exp_avg_sq")})
            old = self.state.get(p, {})
            with torch.no_grad():
                for name, view in views.items():
                    if name in old:  # a loaded checkpoint: its values into the flat buffer
                        view.copy_(old[name].to(view.device, view.dtype).reshape(view.shape))
            self.state[p] = {"step": chunk.step, **views}
        return chunk

    def _map(self, signed: bool, device) -> torch.Tensor:
        if (signed, device) not in self._maps:
            self._maps[signed, device] = dynamic_map(signed).to(device)
            values = self._maps[signed, device]
            self._maps["mid", signed, device] = (values[1:] + values[:-1]) / 2
        return self._maps[signed, device]

    def _attach_work(self, chunk: _Chunk) -> None:
        """Views of the shared work buffers (gradients and weights, in the parameters' dtype)
        for each of the chunk's parameters, made once: a step then creates no per-parameter
        tensors. Chunks run one after another, so one pair of buffers, as long as the longest
        chunk, serves them all."""
        device, dtype = chunk.params[0].device, chunk.params[0].dtype
        longest = max(c.length for group in self._layout for c in group)
        chunk.work = {}
        for name in ("grad", "weight"):
            key = (name, device, dtype)
            if key not in self._work or self._work[key].numel() < longest:
                self._work[key] = torch.zeros(longest, dtype=dtype, device=device)
            flat = self._work[key]
            chunk.work[name] = [flat[o : o + p.numel()].view(p.shape) for p, o in zip(chunk.params, chunk.offsets)]
            chunk.work[f"{name}_flat"] = [flat[: chunk.length]]

    def load_state_dict(self, state_dict) -> None:
        # torch casts every state value but the step to the parameter's dtype; 8-bit block
        # scales must stay fp32 (codes survive bf16: integers up to 256 are exact), so they
        # are set again from the checkpoint after torch's load.
        scales = {pid: {k: v for k, v in values.items() if k.endswith("_absmax")} for pid, values in state_dict["state"].items()}
        super().load_state_dict(state_dict)
        saved_ids = [pid for group in state_dict["param_groups"] for pid in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for pid, param in zip(saved_ids, params):
            if scales.get(pid):
                self.state[param].update({k: v.to(param.device, torch.float32) for k, v in scales[pid].items()})
        self._layout = None  # rebuilt from the loaded values at the next step

    # -- the step -------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._layout is None:
            self._layout = self._build_layout()
        found_inf, grad_scale = getattr(self, "found_inf", None), getattr(self, "grad_scale", None)
        for group, chunks in zip(self.param_groups, self._layout):
            for chunk in chunks:
                self._update_chunk(group, chunk, found_inf, grad_scale)
        return loss

    def _update_chunk(self, group, chunk: _Chunk, found_inf, grad_scale) -> None:
        with_grad = [p.grad is not None for p in chunk.params]
        if not any(with_grad):
            return
        if chunk.work is None:
            self._attach_work(chunk)
        work, device = chunk.work, chunk.step.device
        grad, weight = work["grad_flat"][0], work["weight_flat"][0]
        if chunk.quantized or not all(with_grad):
            grad.zero_()  # padding and missing gradients read as zeros (a block's scale sees them)
        if all(with_grad):
            torch._foreach_copy_(work["grad"], [p.grad for p in chunk.params])
        else:
            torch._foreach_copy_([v for v, has in zip(work["grad"], with_grad) if has], [p.grad for p in chunk.params if p.grad is not None])
        torch._foreach_copy_(work["weight"], chunk.params)
        grad = grad.float() if grad_scale is None else grad.float().div_(grad_scale.to(device))
        skip = None if found_inf is None else found_inf.to(device).reshape(()) > 0
        chunk.step += 1 if skip is None else (~skip).to(torch.float32)
        keep = self._keep_old(chunk, with_grad, skip)

        beta1, beta2 = group["betas"]
        lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
        exp_avg, exp_avg_sq = self._load(chunk)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        self._store(chunk, exp_avg, exp_avg_sq, keep)
        denom = exp_avg_sq.sqrt_().div_((1 - beta2**chunk.step).sqrt()).add_(eps)
        new_weight = exp_avg.div_(denom).mul_(-lr / (1 - beta1**chunk.step))  # the Adam step, in exp_avg's buffer
        shrink = 1 - lr * decay  # decoupled weight decay (a tensor if a checkpoint kept lr as one)
        new_weight = new_weight.add_(weight, alpha=shrink) if isinstance(shrink, float) else new_weight.add_(weight * shrink)
        if keep is not None:
            new_weight = torch.where(keep, weight, new_weight)
        weight.copy_(round_to_bf16(new_weight) if weight.dtype == torch.bfloat16 else new_weight)
        torch._foreach_copy_(chunk.params, work["weight"])

    def _keep_old(self, chunk: _Chunk, with_grad: list[bool], skip) -> torch.Tensor | None:
        """Where the update must leave everything as it was: everywhere on a skipped step, and
        over the parameters without a gradient (torch's AdamW leaves them alone). None: nowhere."""
        if all(with_grad):
            return skip
        mask = torch.zeros(chunk.length, dtype=torch.bool, device=chunk.step.device)
        align = BLOCK if chunk.quantized else 1
        for p, o, has in zip(chunk.params, chunk.offsets, with_grad):
            if not has:
                mask[o : o + -(-p.numel() // align) * align] = True
        return mask if skip is None else mask | skip

    # -- moments -------------------------------------------------------------------------------

    def _load(self, chunk: _Chunk) -> tuple[torch.Tensor, torch.Tensor]:
        """The chunk's moments as new fp32 tensors."""
        if not chunk.quantized:
            return tuple(chunk.state[name].to(torch.float32, copy=True) for name in ("exp_avg", "exp_avg_sq"))
        moments = []
        for name, signed in (("exp_avg", True), ("exp_avg_sq", False)):
            values = torch.index_select(self._map(signed, chunk.step.device), 0, chunk.state[name].int()).view(-1, BLOCK)
            moments.append((values * chunk.state[f"{name}_absmax"][:, None]).view(-1))
        return tuple(moments)

    def _store(self, chunk: _Chunk, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, keep) -> None:
        for name, value, signed in (("exp_avg", exp_avg, True), ("exp_avg_sq", exp_avg_sq, False)):
            stored = chunk.state[name]
            if not chunk.quantized:
                new = round_to_bf16(value) if stored.dtype == torch.bfloat16 else value.to(stored.dtype)
                stored.copy_(new if keep is None else torch.where(keep, stored, new))
                continue
            blocks = value.view(-1, BLOCK)
            absmax = blocks.abs().amax(dim=1).clamp(min=1e-12)
            midpoints = self._maps["mid", signed, chunk.step.device]
            codes = torch.bucketize(blocks / absmax[:, None], midpoints, right=True, out_int32=True).view(-1).to(torch.uint8)
            stored_absmax = chunk.state[f"{name}_absmax"]
            if keep is not None:
                codes = torch.where(keep, stored, codes)
                absmax = torch.where(keep if keep.dim() == 0 else keep.view(-1, BLOCK)[:, 0], stored_absmax, absmax)
            stored.copy_(codes)
            stored_absmax.copy_(absmax)


class AdamW8bitStochasticRounding(AdamWStochasticRounding):
    """AdamW with bf16 stochastic rounding of the weights and 8-bit block-wise moments
    (`exp_avg`/`exp_avg_sq`: uint8 codes; `*_absmax`: one fp32 scale per 256 values);
    parameters under 4,096 values keep bf16 moments. See the module docstring."""

    eight_bit = True
