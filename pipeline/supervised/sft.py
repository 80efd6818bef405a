"""Supervised fine-tuning on worked solutions: the policy the reward model and DPO start from (§10).
The stage (`stages/sft.py`) runs these pieces in order.

An example is (prompt, response): the problem rendered with the chat template and system
prompt, and the worked solution followed by EOS. The loss is the token-mean negative
log-likelihood of the response tokens only (§4 `token-mean`, normalised over the optimiser
step); prompt tokens are context, never targets.

Packing (`sft.packing`): the examples of a micro-batch are concatenated into as few rows of at
most `sft.max_length` tokens as fit (fewer padding tokens to compute). Attention never crosses
examples: position ids restart at 0 at each example and the model is called without a 2-D
attention mask, from which transformers builds a block-diagonal causal mask. Tail padding is
its own segment and holds no targets. `sft.batch_size` counts examples either way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import rewards
from pipeline.config import Config
from pipeline.core.forward import collate, completion_forward
from pipeline.core.logprobs import token_logprobs
from pipeline.core.tokens import fit_response, prompt_ids, response_ids
from pipeline.data.problems import Problem
from pipeline.data.subsets import seeded_subset
from pipeline.rollout.base import SamplingSettings
from pipeline.supervised.fit import UnitLoss

log = logging.getLogger(__name__)

FORMAT_CHECK_PROBLEMS = 16
"""Held-out problems generated on (greedily) to measure the format and accuracy rates."""


@dataclass
class SFTExample:
    prompt: list[int]
    response: list[int]


def build_examples(tokenizer: Any, problems: Sequence[Problem], system_prompt: str,
                   max_length: int) -> list[SFTExample]:
    """(prompt, solution + EOS) token ids per problem with a worked solution, cut to `max_length`."""
    examples = []
    for problem in problems:
        if not problem.solution.strip():
            continue
        prompt = prompt_ids(tokenizer, problem.problem, system_prompt)
        response = fit_response(prompt, response_ids(tokenizer, problem.solution), max_length)
        if response is not None:
            examples.append(SFTExample(prompt, response))
    skipped = len(problems) - len(examples)
    if skipped:
        log.warning("SFT: skipped %d of %d problems without a worked solution or whose prompt fills "
                    "sft.max_length=%d", skipped, len(problems), max_length)
    return examples


@dataclass
class PackedRow:
    input_ids: list[int]
    positions: list[int]
    """Restart at 0 at each example: the segment boundaries."""
    targets: list[bool]
    """True where the token is a response token (a loss target, predicted from the one before)."""


def pack(examples: Sequence[SFTExample], max_length: int) -> list[PackedRow]:
    """Concatenate examples, in order, into rows of at most `max_length` tokens."""
    rows: list[PackedRow] = []
    for ex in examples:
        n = len(ex.prompt) + len(ex.response)
        if not rows or len(rows[-1].input_ids) + n > max_length:
            rows.append(PackedRow([], [], []))
        row = rows[-1]
        row.input_ids += ex.prompt + ex.response
        row.positions += list(range(n))
        row.targets += [False] * len(ex.prompt) + [True] * len(ex.response)
    return rows


def packed_logprobs(model: torch.nn.Module, input_ids: Tensor, positions: Tensor, targets: Tensor) -> Tensor:
    """log p of each target token [N] in packed rows; attention stays inside each segment.

    No 2-D attention mask is passed: transformers derives the block-diagonal causal mask from
    the position ids (a new segment wherever they do not increase by one). The LM head runs on
    the N predicting states only.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(input_ids=input_ids, position_ids=positions, use_cache=False).last_hidden_state
    predict = targets[:, 1:]
    logits = base.get_output_embeddings()(hidden[:, :-1][predict])
    return token_logprobs(logits, input_ids[:, 1:][predict])


def _packed_tensors(rows: list[PackedRow], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.arange(width).repeat(len(rows), 1)
    tgt = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        ids[i, :n] = torch.tensor(row.input_ids)
        pos[i, :n] = torch.tensor(row.positions)
        pos[i, n:] = torch.arange(width - n)  # padding: a segment of its own, no targets
        tgt[i, :n] = torch.tensor(row.targets)
    return ids, pos, tgt


def sft_loss(model: torch.nn.Module, pad_id: int, device: torch.device, *, packing: bool = False,
             max_length: int = 512) -> UnitLoss:
    """Summed response-token NLL of a micro-batch of `SFTExample`s; one unit per response token."""

    def padded(items: list[SFTExample]) -> tuple[Tensor, dict[str, float]]:
        batch = collate([e.prompt for e in items], [e.response for e in items], pad_id).to(device)
        logp = completion_forward(model, batch).logp
        return -torch.where(batch.completion_mask, logp, 0.0).sum(), {}

    def packed(items: list[SFTExample]) -> tuple[Tensor, dict[str, float]]:
        ids, pos, tgt = _packed_tensors(pack(items, max_length), pad_id)
        return -packed_logprobs(model, ids.to(device), pos.to(device), tgt.to(device)).sum(), {}

    return UnitLoss(packed if packing else padded, lambda e: len(e.response))


def with_solutions(problems: Sequence[Problem], limit: int | None, seed: int) -> list[Problem]:
    """The problems that have a worked solution; a seeded random `limit` of them, in file order."""
    return seeded_subset([p for p in problems if p.solution.strip()], limit, seed)


def generation_check(engine: Any, tokenizer: Any, problems: Sequence[Problem], config: Config) -> dict[str, float]:
    """Greedy completions on `problems`: the mean format reward (with `reward.terms`' format params)
    and the rate of correct answers."""
    prompts = [prompt_ids(tokenizer, p.problem, config.data.system_prompt) for p in problems]
    settings = SamplingSettings(n=1, temperature=0.0, top_p=1.0, top_k=-1,
                                max_tokens=config.rollout.max_tokens, stop=list(config.rollout.stop))
    texts = [group[0].text for group in engine.generate(prompts, settings)]
    answers = [p.answer for p in problems]
    extract = config.reward.answer_extraction
    result = {}
    for key, fn in (("format_rate", rewards.get("format", **config.reward.params_of("format"))),
                    ("accuracy_rate", rewards.get("accuracy", extract=extract, timeout=config.reward.timeout))):
        try:
            scores = fn(texts, answer=answers)
        finally:
            getattr(fn, "close", lambda: None)()
        result[key] = sum(scores) / len(scores)
    return result
