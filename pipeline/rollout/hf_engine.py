"""Rollouts from transformers `generate` on the learner's own module (fallback, test reference).

Prompts are left-padded into batches. The sampling transform (temperature, top-k, top-p) runs
in our own logits processor, so the log-prob recorded for each token is that of the exact
distribution `generate` then samples from (see `pipeline.rollout.base`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.rollout.base import Completion, EagerSubmit, SamplingSettings
from pipeline.rollout.weights import WeightsPayload, is_lora
from pipeline.rollout.sync_check import learner_logprobs


class _SampleRecorder:
    """A logits processor: applies the sampling transform, then, one step later (once the
    token is chosen), records that token's log-prob under the transformed distribution."""

    def __init__(self, sampling: SamplingSettings) -> None:
        from transformers import (LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                                  TopPLogitsWarper)

        self.warpers = LogitsProcessorList()
        if not sampling.greedy:
            if sampling.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_k > 0:
                self.warpers.append(TopKLogitsWarper(sampling.top_k))
            if sampling.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(sampling.top_p))
        self.pending: Tensor | None = None
        self.steps: list[Tensor] = []

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        self._collect(input_ids)
        scores = self.warpers(input_ids, scores)
        self.pending = scores.float().log_softmax(-1)
        return scores

    def _collect(self, input_ids: Tensor) -> None:
        if self.pending is not None:
            self.steps.append(self.pending.gather(-1, input_ids[:, -1:]).squeeze(-1))
            self.pending = None

    def finish(self, sequences: Tensor) -> Tensor:
        """Log-probs [B, generated] once `generate` has returned `sequences`."""
        self._collect(sequences)
        return torch.stack(self.steps, 1).cpu()


class _FinishTracker:
    """A stopping criterion that remembers after how many new tokens each row ended
    (EOS or a stop string); 0 means it did not end."""

    def __init__(self, eos_ids: list[int], stop, prompt_width: int, rows: int) -> None:
        self.eos = torch.tensor(eos_ids)
        self.stop = stop
        self.prompt_width = prompt_width
        self.ended_at = torch.zeros(rows, dtype=torch.long)

    def __call__(self, input_ids: Tensor, scores, **kwargs) -> Tensor:
        done = torch.isin(input_ids[:, -1], self.eos.to(input_ids.device))
        if self.stop is not None:
            done |= self.stop(input_ids, scores)
        new = done.cpu() & (self.ended_at == 0)
        self.ended_at[new] = input_ids.shape[1] - self.prompt_width
        return done


class HFEngine(EagerSubmit):
    """`generate` on a given model; `update_weights` only points at the new module (no copy)."""

    def __init__(self, model, tokenizer, *, batch_size: int = 64) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.version = 0
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.owns_model = True
        """False once `update_weights` pointed it at the learner's own module."""
        self._awake_on: torch.device | None = None  # where the module lives while it sleeps on the CPU

    def update_weights(self, model, version: int | None = None) -> int:
        self.model = model
        self.owns_model = False
        self.version = self.version + 1 if version is None else version
        return self.version

    def sleep(self) -> None:
        """Free the GPU until `wake_up` (docs/design.md, "Scaling out", colocation): a module of the
        engine's own (a rollout worker's) moves to host memory; the learner's own module (after
        `update_weights`) stays, as it is the learner's to move; on the CPU there is nothing to free.
        `load_weights` works asleep (into the host copy)."""
        device = next(self.model.parameters()).device
        if self.owns_model and device.type != "cpu" and self._awake_on is None:
            self.model.to("cpu")
            self._awake_on = device
            torch.cuda.empty_cache()

    def wake_up(self) -> None:
        """Back on the device `sleep` took the module from (nothing when it did not move it)."""
        if self._awake_on is not None:
            self.model.to(self._awake_on)
            self._awake_on = None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype merged weights are cast to for `load_weights`."""
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def load_weights(self, payload: WeightsPayload) -> int:
        """Copy `payload` into this engine's own module (an engine in another process than the
        learner, e.g. a rollout worker); an adapter payload wraps the module in peft once.
        Returns the payload's version; raises ValueError for names the module does not have."""
        if payload.sync == "adapter":
            from peft import get_peft_model, set_peft_model_state_dict

            if not is_lora(self.model):
                self.model = get_peft_model(self.model, payload.adapter_config)
            result = set_peft_model_state_dict(self.model, payload.tensors)
        else:
            result = self.model.load_state_dict(payload.tensors, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"weights the engine's model does not have: {result.unexpected_keys[:3]}")
        self.version = payload.version
        return self.version

    def _eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return sorted(i for i in ids if i is not None)

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> list[list[Completion]]:
        rows = [list(p) for p in prompts for _ in range(sampling.n)]
        flat: list[Completion] = []
        for start in range(0, len(rows), self.batch_size):
            flat += self._generate_batch(rows[start:start + self.batch_size], sampling)
        return [flat[i * sampling.n:(i + 1) * sampling.n] for i in range(len(prompts))]

    def _generate_batch(self, prompts: list[list[int]], sampling: SamplingSettings) -> list[Completion]:
        from transformers import (GenerationConfig, LogitsProcessorList, StoppingCriteriaList,
                                  StopStringCriteria)

        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        recorder = _SampleRecorder(sampling)
        stop = StopStringCriteria(self.tokenizer, sampling.stop) if sampling.stop else None
        tracker = _FinishTracker(self._eos_ids(), stop, width, len(prompts))
        # The sampling transform lives in `recorder`: neutral values here override model defaults.
        neutral = {} if sampling.greedy else {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
        config = GenerationConfig(max_new_tokens=sampling.max_tokens, do_sample=not sampling.greedy,
                                  pad_token_id=self.pad_id, eos_token_id=self._eos_ids(), use_cache=True,
                                  **neutral)
        training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                sequences = self.model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                    logits_processor=LogitsProcessorList([recorder]),
                    stopping_criteria=StoppingCriteriaList([tracker]),
                )
        finally:
            self.model.train(training)
        logprobs = recorder.finish(sequences)
        generated = sequences[:, width:].cpu()
        out = []
        for row, prompt in enumerate(prompts):
            ended = int(tracker.ended_at[row])
            length = ended or generated.shape[1]
            tokens = generated[row, :length].tolist()
            out.append(Completion(prompt, tokens, logprobs[row, :length].tolist(),
                                  self.tokenizer.decode(tokens, skip_special_tokens=True),
                                  "stop" if ended else "length", self.version))
        return out

    def prompt_logprobs(self, prompt_ids: list[int], completion_ids: list[int],
                        temperature: float = 1.0) -> list[float]:
        return learner_logprobs(self.model, self.pad_id, prompt_ids, completion_ids, temperature)

    def close(self) -> None:
        self.model = None
