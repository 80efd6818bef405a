"""Bradley-Terry reward model (docs/algorithms.md §10): the SFT architecture plus a scalar head.

`r(x, y)` is a linear head on the last-layer hidden state of the last non-padding token of
prompt + response + EOS; training minimises `-log sigmoid(r(x, y_w) - r(x, y_l))` over
(chosen `y_w`, rejected `y_l`) pairs.

A saved reward model is a folder: `adapter/` (peft `save_pretrained`; `model/` after full
fine-tuning), `reward_head.safetensors`, `reward_model.json` (base model, system prompt,
max length) and the tokenizer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor

from pipeline.config import Config, LoraConfig
from pipeline.core.forward import SequenceBatch, collate, hidden_states
from pipeline.core.models import load_policy, load_tokenizer
from pipeline.core.optim import autocast
from pipeline.data.preference import EncodedPair, held_out_accuracy, pair_batch, preference_data
from pipeline.data.prompts import prompt_ids
from pipeline.supervised.sequences import fit_response, response_ids
from pipeline.supervised.fit import UnitLoss, evaluate, finish_stage, start_stage, train_and_measure

HEAD_FILE = "reward_head.safetensors"
META_FILE = "reward_model.json"


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index of the last non-padding position of each row [B], for left or right padding."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return torch.where(attention_mask.bool(), positions, -1).max(-1).values.clamp(min=0)


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """Per-pair §10 loss `-log sigmoid(r_w - r_l)` [B] (computed stably with logsigmoid)."""
    return -F.logsigmoid(r_chosen - r_rejected)


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


def _chosen_rejected(rm: RewardModel, pairs: Sequence[EncodedPair], pad_id: int,
                     device: torch.device) -> tuple[Tensor, Tensor]:
    """Rewards of the chosen and of the rejected responses [B] each."""
    rewards = rm(pair_batch(pairs, pad_id).to(device))
    return rewards[: len(pairs)], rewards[len(pairs):]


def reward_loss(rm: RewardModel, pad_id: int, device: torch.device) -> UnitLoss:
    """Summed Bradley-Terry loss of a micro-batch of `EncodedPair`s; one unit per pair.

    Statistics: `accuracy` (r_w > r_l) and `margin` (r_w - r_l), summed over pairs.
    """

    def fn(pairs: list[EncodedPair]) -> tuple[Tensor, dict[str, float]]:
        chosen, rejected = _chosen_rejected(rm, pairs, pad_id, device)
        margin = (chosen - rejected).detach()
        stats = {"accuracy": float((margin > 0).sum()), "margin": float(margin.sum())}
        return bradley_terry_loss(chosen, rejected).sum(), stats

    return UnitLoss(fn, lambda _: 1)


@torch.no_grad()
def pair_margins(rm: RewardModel, pairs: Sequence[EncodedPair], pad_id: int, device: torch.device, *,
                 batch_size: int = 8, bf16: bool | str = False) -> list[float]:
    """`r(x, y_w) - r(x, y_l)` of each pair (§10; > 0: ranked right), in eval mode, `batch_size` pairs at a time."""
    was_training = rm.training
    rm.eval()
    margins: list[float] = []
    try:
        with autocast(device, bf16):
            for start in range(0, len(pairs), batch_size):
                chosen, rejected = _chosen_rejected(rm, pairs[start:start + batch_size], pad_id, device)
                margins += (chosen - rejected).tolist()
    finally:
        rm.train(was_training)
    return margins


def save_reward_model(rm: RewardModel, tokenizer: Any, out_dir: str | Path, *, base_model: str | Path,
                      system_prompt: str, max_length: int) -> Path:
    """Write the reward model folder (see the module docstring)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    body_dir = "adapter" if hasattr(rm.body, "peft_config") else "model"
    rm.body.save_pretrained(out / body_dir)
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


def run_reward_model(config: Config, out: Path) -> dict[str, Any]:
    """Train per `config.reward_model`; writes the reward model folder `out` and its metrics.json."""
    start = time.perf_counter()
    setup = start_stage(config, out)
    cfg, device = config.reward_model, setup.device
    train, held, info = preference_data(config, cfg, setup, out)
    rm = build_reward_model(setup.model_path, config.lora, config.model.adapter, config.model.dtype, device, config.seed)
    loss = reward_loss(rm, setup.tokenizer.pad_token_id, device)
    kw = {"device": device, "micro_batch_size": cfg.batch_size}
    metrics = train_and_measure(rm, train, loss, cfg, out=out, batch_size=cfg.batch_size, epochs=cfg.epochs,
                                seed=config.seed, desc="reward-model",
                                measure=lambda: evaluate(rm, held, loss, bf16=cfg.bf16_autocast, **kw), **kw)
    save_reward_model(rm, setup.tokenizer, out, base_model=setup.model_path,
                      system_prompt=config.data.system_prompt, max_length=cfg.max_length)
    margins = pair_margins(rm, held, setup.tokenizer.pad_token_id, device, batch_size=cfg.batch_size,
                           bf16=cfg.bf16_autocast)
    accuracy = held_out_accuracy([float(m > 0) for m in margins], held)
    metrics = {**accuracy, **metrics, **info, "time_s": time.perf_counter() - start}
    return finish_stage(out, metrics)
