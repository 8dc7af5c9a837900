"""Linear layers with weights packed once for oneDNN: same results as ``F.linear``, used by
every CPU model the engine loads, switchable off, and copyable."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seallm import LLM, SamplingParams
from seallm.models.linear import linear, pack_linear_weight, packing_supported
from seallm.worker.weights import copy_model
from tests.conftest import random_prompts

DTYPES = [torch.float32, torch.bfloat16]


def _need(dtype):
    if not packing_supported(dtype):
        pytest.skip(f"oneDNN linear layers of {dtype} are not supported on this CPU/build")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 7, 64])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_matches_f_linear(dtype, rows, bias):
    _need(dtype)
    g = torch.Generator().manual_seed(rows)
    w = torch.randn(96, 80, generator=g).to(dtype)
    b = torch.randn(96, generator=g).to(dtype) if bias else None
    x = torch.randn(rows, 80, generator=g).to(dtype)
    pw = pack_linear_weight(w)
    assert pw.is_mkldnn and tuple(pw.shape) == (96, 80)
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    # fp32: summation order only; bf16: the output is rounded to bf16 (8 bits of mantissa)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    got = linear(x, pw, b).double()
    assert got.shape == (rows, 96)
    assert torch.allclose(got, ref, atol=tol * ref.abs().max().item(), rtol=0)
    # a row slice of a bigger batch (non-contiguous rows are made contiguous)
    xs = torch.randn(2 * rows, 80, generator=g).to(dtype)[::2]
    assert torch.allclose(linear(xs, pw, b).double(), F.linear(xs.double(), w.double(), None if b is None else b.double()),
                          atol=tol * ref.abs().max().item() * 4, rtol=0)


def test_packing_off_and_unsupported_weights_stay_plain(monkeypatch):
    w = torch.randn(8, 4)
    monkeypatch.setenv("SEALLM_CPU_PACKED_LINEAR", "0")
    assert pack_linear_weight(w) is w
    monkeypatch.delenv("SEALLM_CPU_PACKED_LINEAR")
    assert pack_linear_weight(torch.randn(8)).dim() == 1  # not a matrix: left alone
    h = torch.randn(8, 4, dtype=torch.float16)
    assert pack_linear_weight(h) is h  # fp16 is not packed
    x = torch.randn(3, 4)
    assert torch.equal(linear(x, w), F.linear(x, w))  # plain weights go through F.linear


def test_engine_models_are_packed_and_copies_keep_working(checkpoints):
    _need(torch.float32)
    llm = LLM(models={"m": checkpoints["llama"]}, kv_cache_memory="8MiB")
    model = llm.core.executor.models["m"]
    w = model.layers[0]
    assert w.qkv.is_mkldnn and w.o.is_mkldnn and w.gate_up.is_mkldnn and w.down.is_mkldnn
    assert not w.input_norm.is_mkldnn and not model.embed.is_mkldnn
    prompts = random_prompts(3, [5, 17, 30], seed=4)
    sp = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    before = [o.token_ids for o in llm.generate(prompts, sp)]
    clone = copy_model(model, torch.device("cpu"))
    assert clone.layers[0].qkv.is_mkldnn and clone.layers[0].qkv is not w.qkv
    llm.core.executor.models["m"] = clone
    assert [o.token_ids for o in llm.generate(prompts, sp)] == before
