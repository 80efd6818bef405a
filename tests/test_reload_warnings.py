"""The merged weight push silences vLLM's `Failed to load weights` and `Following weights were not loaded
from checkpoint` warnings for the layers it leaves out on purpose (norms, embeddings), and only those
(pipeline/rollout/vllm_engine.py)."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
import torch
from torch import nn

from pipeline.rollout.vllm_engine import (FAILED_TO_LOAD, INPLACE_LOGGER, NOT_LOADED, RELOAD_LOGGER,
                                          OmittedLayerFilter, omitted_layers, omitted_parameters, reload_quietly)


# Stand-ins named like vLLM's layer classes; the warning names a layer by its class.
class RMSNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))


class QKVParallelLinear(nn.Linear):
    pass


class RowParallelLinear(nn.Linear):
    pass


class VocabParallelEmbedding(nn.Embedding):
    pass


class RotaryEmbedding(nn.Module):  # buffers only: vLLM warns about it on every reload
    def __init__(self):
        super().__init__()
        self.register_buffer("cos_sin_cache", torch.zeros(2))


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(), RMSNorm()
        self.self_attn = nn.Module()
        self.self_attn.qkv_proj, self.self_attn.o_proj = QKVParallelLinear(4, 12), RowParallelLinear(4, 4)
        self.self_attn.rotary_emb = RotaryEmbedding()


class EngineModel(nn.Module):
    """The shape of vLLM's Llama: fused qkv_proj, per `packed_modules_mapping`."""

    packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"]}

    def __init__(self, layers: int = 2):
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = VocabParallelEmbedding(10, 4)
        self.model.layers = nn.ModuleList(Layer() for _ in range(layers))
        self.model.norm = RMSNorm()


LORA_PUSH = [f"model.layers.{i}.self_attn.{m}.weight"
             for i in range(2) for m in ("q_proj", "k_proj", "v_proj", "o_proj")]


def test_omitted_layers_are_what_the_push_leaves_out():
    model = EngineModel()
    expected = Counter({"RMSNorm": 5, "VocabParallelEmbedding": 1, "RotaryEmbedding": 2})
    assert omitted_layers(model, LORA_PUSH) == expected
    # one part of a fused layer is enough for it to count as pushed
    only_v = [f"model.layers.{i}.self_attn.{m}.weight" for i in range(2) for m in ("v_proj", "o_proj")]
    assert omitted_layers(model, only_v) == omitted_layers(model, LORA_PUSH)
    # a full push (every weight) leaves out only the buffers; an empty push every layer with tensors
    full = [name.replace("qkv_proj", "q_proj") for name, _ in model.named_parameters()]
    assert omitted_layers(model, full) == Counter({"RotaryEmbedding": 2})
    assert omitted_layers(model, []) == Counter({"RMSNorm": 5, "VocabParallelEmbedding": 1, "QKVParallelLinear": 2,
                                                 "RowParallelLinear": 2, "RotaryEmbedding": 2})


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def reload_log():
    """What vLLM's two reload loggers (layerwise, inplace) let through, at WARNING whatever level
    vLLM's root logger was configured with (TRL's import sets VLLM_LOGGING_LEVEL=ERROR)."""
    logger, inplace, handler = logging.getLogger(RELOAD_LOGGER), logging.getLogger(INPLACE_LOGGER), Records()
    levels = logger.level, inplace.level
    for each in (logger, inplace):
        each.addHandler(handler)
        each.setLevel(logging.WARNING)
    yield logger, handler
    for each, level in zip((logger, inplace), levels):
        each.removeHandler(handler)
        each.setLevel(level)


def test_filter_drops_only_the_expected_warnings(reload_log):
    logger, seen = reload_log
    quiet = OmittedLayerFilter(Counter({"RMSNorm": 2}))
    logger.addFilter(quiet)
    try:
        for layer in ("RMSNorm", "RMSNorm", "QKVParallelLinear", "RMSNorm"):
            logger.warning(FAILED_TO_LOAD, layer)
        logger.warning("%s: Excessive loading", "RMSNorm")
    finally:
        logger.removeFilter(quiet)
    # two norms were expected; a third norm and a pushed linear that got nothing stay loud
    assert seen.messages == ["QKVParallelLinear: Failed to load weights", "RMSNorm: Failed to load weights",
                             "RMSNorm: Excessive loading"]
    assert quiet.dropped == 2


def test_filter_drops_the_not_loaded_parameters_only_when_all_were_left_out(reload_log):
    _, seen = reload_log
    logger = logging.getLogger(INPLACE_LOGGER)
    quiet = OmittedLayerFilter(Counter(), {"model.norm.weight", "model.embed_tokens.weight"})
    logger.addFilter(quiet)
    try:
        logger.warning(NOT_LOADED, {"model.norm.weight", "model.embed_tokens.weight"})
        logger.warning(NOT_LOADED, {"model.norm.weight", "model.layers.0.self_attn.o_proj.weight"})
    finally:
        logger.removeFilter(quiet)
    # a pushed parameter that got nothing is reported, alone
    assert seen.messages == ["Following weights were not loaded from checkpoint: "
                             "['model.layers.0.self_attn.o_proj.weight']"]
    assert quiet.dropped == 1


def test_omitted_parameters_are_the_parameters_of_the_omitted_layers():
    model = EngineModel()
    # the norms and the embedding, and the biases of the pushed linears (LoRA leaves them as they are)
    assert omitted_parameters(model, LORA_PUSH) == {
        "model.embed_tokens.weight", "model.norm.weight",
        *(f"model.layers.{i}.{norm}.weight" for i in range(2) for norm in ("input_layernorm", "post_attention_layernorm")),
        *(f"model.layers.{i}.self_attn.{m}.bias" for i in range(2) for m in ("qkv_proj", "o_proj"))}
    full = [name.replace("qkv_proj", "q_proj") for name, _ in model.named_parameters()]
    assert omitted_parameters(model, full) == set()


class FakeWorker:
    """Warns as vLLM 0.32's reload does: once per layer that got no weight (layerwise), then the names of
    the parameters that got none (inplace)."""

    def __init__(self, model, not_taken=()):
        self.model, self.not_taken = model, set(not_taken)

    def get_model(self):
        return self.model

    def reload_weights(self, weights_path, is_checkpoint_format):
        from safetensors.torch import load_file

        names = set(load_file(f"{weights_path}/model.safetensors")) - self.not_taken
        modules = {n.rsplit(".", 1)[0].replace("q_proj", "qkv_proj") for n in names}
        for name, layer in self.model.named_modules():
            tensors = [*layer.parameters(recurse=False), *layer.buffers(recurse=False)]
            if tensors and name not in modules:
                logging.getLogger(RELOAD_LOGGER).warning(FAILED_TO_LOAD, type(layer).__name__)
        loaded = {n.replace("q_proj", "qkv_proj") for n in names}
        not_loaded = {name for name, _ in self.model.named_parameters() if name not in loaded}
        if not_loaded:
            logging.getLogger(INPLACE_LOGGER).warning(NOT_LOADED, not_loaded)


def test_reload_quietly_keeps_real_failures_loud(reload_log, tmp_path):
    from safetensors.torch import save_file

    _, seen = reload_log
    pushed = [n for n in LORA_PUSH if "k_proj" not in n and "v_proj" not in n]
    save_file({n: torch.zeros(2) for n in pushed}, str(tmp_path / "model.safetensors"))
    model = EngineModel()
    # 5 norms, the embedding and 2 rotary caches, and the 6 parameters of those, all left out on purpose
    assert reload_quietly(FakeWorker(model), str(tmp_path), pushed) == 9
    assert seen.messages == []
    # the engine did not take layer 1's o_proj although it was pushed: that one is reported, twice
    assert reload_quietly(FakeWorker(model, {"model.layers.1.self_attn.o_proj.weight"}), str(tmp_path), pushed) == 8
    assert seen.messages == ["RowParallelLinear: Failed to load weights",
                             "Following weights were not loaded from checkpoint: "
                             "['model.layers.1.self_attn.o_proj.weight']"]
    assert logging.getLogger(RELOAD_LOGGER).filters == logging.getLogger(INPLACE_LOGGER).filters == []


@pytest.mark.vllm
def test_merged_push_into_vllm_is_quiet(vllm_merged_engine, tiny_policy_factory, reload_log, tmp_path):
    """The real engine: a LoRA push reloads only the linears; without the filter vLLM warns about the
    norms and the embedding, with it nothing is left."""
    from safetensors.torch import save_file

    from pipeline.rollout.weights import merged_weights

    _, seen = reload_log
    policy = tiny_policy_factory(scale=0.1)
    vllm_merged_engine.update_weights(policy)
    assert not [m for m in seen.messages if "Failed to load weights" in m or "not loaded" in m], seen.messages
    save_file(merged_weights(policy, vllm_merged_engine.dtype), str(tmp_path / "model.safetensors"))
    vllm_merged_engine._llm.collective_rpc("reload_weights", kwargs={"weights_path": str(tmp_path),
                                                                     "is_checkpoint_format": True})
    loud = [m for m in seen.messages if "Failed to load weights" in m]
    assert loud and {m.split(":")[0] for m in loud} <= {"RMSNorm", "VocabParallelEmbedding", "ParallelLMHead",
                                                         "RotaryEmbedding"}, loud
    not_loaded = [m for m in seen.messages if m.startswith("Following weights were not loaded")]
    assert not_loaded and all("norm" in m or "embed" in m or "lm_head" in m for m in not_loaded), not_loaded
    vllm_merged_engine.update_weights(tiny_policy_factory(scale=0.0))
