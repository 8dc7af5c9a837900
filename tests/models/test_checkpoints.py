"""Checkpoint loading: shards, dtypes, tied embeddings, and clear errors for bad folders."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from seallm import LLM, SamplingParams
from seallm.models.config import CheckpointError, load_model_config
from seallm.models.random_checkpoint import write_random_checkpoint
from tests.conftest import hf_greedy, random_prompts


def _greedy(llm, prompts, n=10):
    return [o.token_ids for o in llm.generate(prompts, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))]


def test_sharded_checkpoint_with_index(tmp_path):
    import torch
    import transformers

    path = str(tmp_path / "sharded")
    src = write_random_checkpoint(str(tmp_path / "src"), "qwen2", seed=3)
    model = transformers.AutoModelForCausalLM.from_pretrained(src)
    model.save_pretrained(path, max_shard_size="100KB")
    assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
    prompts = random_prompts(2, [6, 20], seed=1)
    llm = LLM(models={"m": path}, kv_cache_memory="4MiB")
    assert _greedy(llm, prompts) == hf_greedy(src, prompts, 10)
    del torch


def test_tied_embeddings(tmp_path):
    path = write_random_checkpoint(str(tmp_path / "tied"), "llama", seed=5, tie_word_embeddings=True)
    prompts = random_prompts(2, [3, 15], seed=2)
    llm = LLM(models={"m": path}, kv_cache_memory="4MiB")
    assert _greedy(llm, prompts) == hf_greedy(path, prompts, 10)


def test_mistral_sliding_window(tmp_path):
    path = write_random_checkpoint(str(tmp_path / "swa"), "mistral", seed=6, sliding_window=8)
    prompts = random_prompts(2, [30, 5], seed=3)
    llm = LLM(models={"m": path}, kv_cache_memory="4MiB", max_num_batched_tokens=7)
    assert _greedy(llm, prompts, 16) == hf_greedy(path, prompts, 16)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_runs(tmp_path, dtype):
    path = write_random_checkpoint(str(tmp_path / dtype), "qwen3", dtype=dtype, seed=7, head_dim=32)
    cfg = load_model_config(path)
    assert cfg.dtype == dtype and cfg.kv_spec.dtype_bytes == 2
    llm = LLM(models={"m": path}, kv_cache_memory="4MiB")
    out = llm.generate([[5, 6, 7, 8]], SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))[0]
    assert len(out.token_ids) == 6
    # A half-precision model and an fp32 model share one pool.
    other = write_random_checkpoint(str(tmp_path / "f32"), "llama", seed=8)
    both = LLM(models={"h": path, "f": other}, kv_cache_memory="4MiB")
    outs = both.generate([[5, 6, 7, 8]] * 2, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True),
                         model=["h", "f"])
    assert outs[0].token_ids == out.token_ids


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def _edit_config(path, **changes):
    p = os.path.join(path, "config.json")
    with open(p) as f:
        c = json.load(f)
    for k, v in changes.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    with open(p, "w") as f:
        json.dump(c, f)


def test_unsupported_architecture_names_file_and_field(checkpoints, tmp_path):
    p = _copy(checkpoints["llama"], tmp_path / "gpt")
    _edit_config(p, architectures=["GPT2LMHeadModel"])
    with pytest.raises(CheckpointError, match=r"config\.json.*'architectures'.*GPT2LMHeadModel"):
        LLM(models={"m": p})


def test_missing_field_names_it(checkpoints, tmp_path):
    p = _copy(checkpoints["llama"], tmp_path / "nofield")
    _edit_config(p, hidden_size=None)
    with pytest.raises(CheckpointError, match=r"config\.json: missing field 'hidden_size'"):
        LLM(models={"m": p})
    _edit_config(p, hidden_size="big")
    with pytest.raises(CheckpointError, match=r"'hidden_size' must be int"):
        LLM(models={"m": p})


def test_missing_tensor_and_bad_shape_name_the_file(checkpoints, tmp_path):
    from safetensors.torch import load_file, save_file

    p = _copy(checkpoints["qwen2"], tmp_path / "broken")
    f = os.path.join(p, "model.safetensors")
    tensors = load_file(f)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, f, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'"):
        LLM(models={"m": p})
    tensors = load_file(os.path.join(checkpoints["qwen2"], "model.safetensors"))
    tensors["model.norm.weight"] = tensors["model.norm.weight"][:5].clone()
    save_file(tensors, f, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'model\.norm\.weight' has shape \(5,\)"):
        LLM(models={"m": p})


def test_no_weights_and_no_config(tmp_path, checkpoints):
    p = _copy(checkpoints["llama"], tmp_path / "noweights")
    os.remove(os.path.join(p, "model.safetensors"))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        LLM(models={"m": p})
    with pytest.raises(CheckpointError, match="not a directory"):
        LLM(models={"m": str(tmp_path / "missing")})
    os.makedirs(tmp_path / "empty")
    with pytest.raises(CheckpointError, match=r"config\.json: file not found"):
        LLM(models={"m": str(tmp_path / "empty")})
    bad = _copy(checkpoints["llama"], tmp_path / "badjson")
    with open(os.path.join(bad, "config.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        LLM(models={"m": bad})
