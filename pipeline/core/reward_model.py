"""The Bradley-Terry reward model's architecture (docs/algorithms.md §10): the policy plus a scalar head.

`r(x, y)` is a linear head on the last-layer hidden state of the last non-padding token of
prompt + response + EOS. Training is `pipeline.supervised.reward_model`; the `reward_model`
reward term (rewards/model.py) loads and scores with this module.

A saved reward model is a folder: `adapter/` (peft `save_pretrained`; `model/` after full
fine-tuning, `pipeline.core.models.save_weights`), `reward_head.safetensors`, `reward_model.json`
(base model, system prompt, max length) and the tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from pipeline.config import LoraConfig
from pipeline.core.forward import SequenceBatch, collate, hidden_states
from pipeline.core.models import load_policy, load_tokenizer, save_weights
from pipeline.core.tokens import fit_response, prompt_ids, response_ids

HEAD_FILE = "reward_head.safetensors"
META_FILE = "reward_model.json"


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index of the last non-padding position of each row [B], for left or right padding."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return torch.where(attention_mask.bool(), positions, -1).max(-1).values.clamp(min=0)


class RewardModel(torch.nn.Module):
    """A (peft) causal LM body with a scalar head read at the last non-padding token."""

    def __init__(self, body: torch.nn.Module, head: torch.nn.Linear | None = None, seed: int = 0):
        super().__init__()
        self.body = body
        if head is None:
            hidden = body.config.hidden_size
            head = torch.nn.Linear(hidden, 1)
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                head.weight.copy_(torch.randn(1, hidden, generator=generator) / hidden**0.5)
                head.bias.zero_()
        self.head = head.to(next(body.parameters()).device)

    def forward(self, batch: SequenceBatch) -> Tensor:
        """Rewards [B] float32."""
        states = hidden_states(self.body, batch)
        last = last_token_index(batch.attention_mask)
        read = states[torch.arange(len(batch), device=states.device), last]
        return self.head(read.float()).squeeze(-1).float()


def build_reward_model(model_path: str | Path, lora: LoraConfig, adapter: str | Path | None = None,
                       dtype: str = "float32", device: torch.device | str = "cpu", seed: int = 0) -> RewardModel:
    """The policy architecture (from `adapter` if given, e.g. the SFT one) with a fresh head."""
    return RewardModel(load_policy(model_path, lora, adapter=adapter, dtype=dtype, device=device), seed=seed)


def save_reward_model(rm: RewardModel, tokenizer: Any, out_dir: str | Path, *, base_model: str | Path,
                      system_prompt: str, max_length: int) -> Path:
    """Write the reward model folder (see the module docstring)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    body_dir = save_weights(rm.body, out).name
    save_file({k: v.detach().float().cpu().contiguous() for k, v in rm.head.state_dict().items()}, out / HEAD_FILE)
    tokenizer.save_pretrained(out)
    meta = {"base_model": str(Path(base_model).resolve()), "body": body_dir,
            "hidden_size": rm.body.config.hidden_size, "system_prompt": system_prompt, "max_length": max_length}
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return out


def load_reward_model(path: str | Path, device: torch.device | str = "cpu",
                      dtype: str = "float32") -> tuple[RewardModel, Any, dict[str, Any]]:
    """(reward model in eval mode, tokenizer, metadata) from a folder `save_reward_model` wrote."""
    path = Path(path)
    if not (path / META_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a reward model folder (no {META_FILE}); "
                                "train one with `rlvr reward-model`")
    meta = json.loads((path / META_FILE).read_text())
    if meta["body"] == "adapter":
        body = load_policy(meta["base_model"], LoraConfig(), adapter=path / "adapter", dtype=dtype, device=device)
    else:
        body = load_policy(path / "model", LoraConfig(enabled=False), dtype=dtype, device=device)
    head = torch.nn.Linear(meta["hidden_size"], 1)
    head.load_state_dict(load_file(path / HEAD_FILE))
    rm = RewardModel(body, head).eval()
    rm.requires_grad_(False)
    return rm, load_tokenizer(path), meta


@torch.no_grad()
def score(rm: RewardModel, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], *,
          system_prompt: str, max_length: int, batch_size: int = 8,
          device: torch.device | str = "cpu") -> list[float]:
    """Rewards of (prompt, response) pairs, `batch_size` at a time; prompts raw or rendered."""
    encoded = []
    for prompt, response in zip(prompts, responses, strict=True):
        p = prompt_ids(tokenizer, prompt, system_prompt)[-(max_length - 1):]
        encoded.append((p, fit_response(p, response_ids(tokenizer, response), max_length)))
    out: list[float] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        batch = collate([p for p, _ in chunk], [r for _, r in chunk], tokenizer.pad_token_id)
        out += rm(batch.to(torch.device(device))).tolist()
    return out
