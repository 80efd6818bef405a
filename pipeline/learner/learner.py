"""The learner: a LoRA policy (or full fine-tuning) updated with the configured policy loss.

Its part of one RL step (docs/design.md, "One RL step"), data flowing one way:
1. `score(batch) -> PolicyScores`: without gradients, the learner's own `logp_old`
   (docs/algorithms.md §9: the engine's log-probs differ slightly; both sides read the rollout's
   sampling distribution, temperature and top-k / top-p included, see pipeline/core/forward.py), `logp_ref` of the reference
   policy when KL is used (§5: the model with its adapter disabled when RL starts from a fresh
   adapter, else a frozen copy), and `V_old` for PPO. When the update is on-policy (one epoch,
   one mini-batch, no critic) `logp_old` is the first forward's detached log-probs: no extra pass.
   Rows an older policy version sampled (asynchronous RL, docs/design.md) take the behaviour
   policy's `logp_old` instead: the learner under that version's adapter (`keep_version`) or,
   without LoRA, the engine's log-probs (`behaviour_logp`).
2. `update(batch, scores, advantages) -> stats`: `ppo_epochs` x mini-batches of whole groups, each
   one optimiser step with gradient accumulation over micro-batches (`rl.micro_batch_size` rows,
   or `rl.micro_batch_tokens` computed positions: `token_budget_split`) normalised over the whole
   mini-batch (§4), clipping, AdamW. The loss is the policy loss (pipeline/algorithms/policy_losses.py)
   plus the KL, entropy and value terms the config asks for. Rows that cannot change the loss
   are not computed (§13): with no KL, entropy or value term every loss term is a multiple of
   the advantage, so a row with A = 0 adds exactly zero gradient; the normalisers still count
   it, so the update is the same as computing it.
Every forward computes a group's shared prompt once (`shared_prompt_forward`).

As one of W data-parallel ranks (`rank`, `world_size`; pipeline/cluster/learner_group.py) it scores
and computes its share of whole groups (`shard_groups`), normalises by the whole mini-batch, and
sums gradients over the ranks before each step (pipeline/learner/data_parallel.py): every rank takes the
one-process step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from pipeline.algorithms.advantages import Advantages
from pipeline.learner.batch import PolicyScores, RolloutBatch
from pipeline.config import Config
from pipeline.core.allocator import keep_freed_memory
from pipeline.core.checkpoint import save_checkpoint
from pipeline.core.forward import SequenceBatch, distinct_prompts, pad_columns, shared_prompt_forward
from pipeline.core.packing import packed_forward
from pipeline.algorithms.correction import correction_weights, mismatch_stats
from pipeline.algorithms.losses import value_loss
from pipeline.core.models import load_policy
from pipeline.core.optim import autocast, build_optimizer, build_scheduler, clip_and_step
from pipeline.algorithms.policy_losses import policy_loss
from pipeline.algorithms.regularisers import entropy_bonus, kl_penalty
from pipeline.learner.data_parallel import all_reduce_gradients, gather_objects, shard_groups
from pipeline.learner.micro_batches import computed_positions, group_order, token_budget_split


def _mean_stats(parts: list[tuple[dict[str, float], float]]) -> dict[str, float]:
    """Weighted mean of per-micro-batch statistics (weights: unmasked token counts)."""
    total = sum(w for _, w in parts) or 1.0
    keys = {k for stats, _ in parts for k in stats}
    return {k: sum(s.get(k, 0.0) * w for s, w in parts) / total for k in sorted(keys)}


class Learner:
    def __init__(self, config: Config, model_path: str, device: torch.device, total_updates: int,
                 rank: int = 0, world_size: int = 1):
        """`rank` of `world_size` data-parallel ranks; above one rank torch.distributed's default
        process group must be initialised."""
        keep_freed_memory()  # also where the learner runs outside a stage (a Ray actor, a script)
        self.config = config
        self.rank, self.world_size = rank, world_size
        self.algo = config.algorithm
        self.rl = config.rl
        self.device = device
        self.model = load_policy(model_path, config.lora, config.model.adapter, config.model.dtype, device)
        self.reference = None
        if self.algo.needs_reference and (config.model.adapter or not config.lora.enabled):
            self.reference = self._frozen_start(model_path)
        self.value_head = None
        if self.algo.uses_critic:
            hidden = self.model.config.hidden_size
            self.value_head = torch.nn.Linear(hidden, 1).to(device)
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if self.value_head is not None:
            self.params += list(self.value_head.parameters())
        self.optimizer = build_optimizer(self.params, self.rl)
        self.scheduler = build_scheduler(self.optimizer, self.rl, total_updates)
        rollout = config.rollout
        greedy = rollout.temperature == 0  # the engines report log_softmax(logits), untruncated
        self.sampling = dict(temperature=rollout.temperature or 1.0,
                             top_k=-1 if greedy else rollout.top_k, top_p=1.0 if greedy else rollout.top_p)
        """The rollout's sampling distribution, which every forward reads (pipeline/core/forward.py)."""
        self.kept: dict[int, dict[str, Tensor]] = {}
        """Policy version -> its trainable tensors, the behaviour policies of stale rows (`keep_version`)."""

    @property
    def forward(self):
        """The layout of every pass: packed or padded completions (`rl.pack_sequences`)."""
        return packed_forward if self.rl.pack_sequences else shared_prompt_forward

    def _frozen_start(self, model_path: str) -> torch.nn.Module:
        """A frozen copy of the starting policy: the KL reference when disabling the adapter would
        not give it back (full fine-tuning, or RL starting from a trained adapter such as SFT's)."""
        config = self.config
        model = load_policy(model_path, config.lora.model_copy(update={"enabled": False}), config.model.adapter,
                            config.model.dtype, self.device)
        if config.model.adapter:
            model = model.merge_and_unload()
        return model.eval().requires_grad_(False)

    # ------------------------------------------------------------------ forward passes

    def _forward(self, seqs: SequenceBatch, *, entropy: bool = False):
        with autocast(self.device, self.rl.bf16_autocast, self.model):
            out = self.forward(self.model, seqs, with_entropy=entropy,
                                        entropy_grad=entropy and self.algo.entropy_coef > 0, **self.sampling)
            values = None
            if self.value_head is not None:
                values = self.value_head(out.hidden).squeeze(-1).float()
        return out, values

    @torch.no_grad()
    def _reference_logp(self, seqs: SequenceBatch) -> Tensor:
        if self.reference is not None:
            with autocast(self.device, self.rl.bf16_autocast, self.reference):
                return self.forward(self.reference, seqs, **self.sampling).logp
        with self.model.disable_adapter():
            return self._forward(seqs)[0].logp

    def _micro_batches(self, batch: RolloutBatch, index: Tensor) -> list[Tensor]:
        """The rows `index` of `batch` in forward/backward passes: `rl.micro_batch_size` rows each,
        or filled to `rl.micro_batch_tokens` computed positions (`token_budget_split`)."""
        if not len(index):
            return []
        if self.rl.micro_batch_tokens is None:
            return list(torch.split(index, self.rl.micro_batch_size))
        lengths = self._lengths(batch)
        parts = token_budget_split(*(x[index] for x in lengths), self.rl.micro_batch_tokens,
                                   pass_overhead=self.rl.pass_overhead_tokens, packed=self.rl.pack_sequences)
        return [index[part] for part in parts]

    @staticmethod
    def _lengths(batch: RolloutBatch) -> tuple[Tensor, Tensor, Tensor]:
        """[B] prompt lengths, completion lengths and prompt ids of `batch`'s rows: rows of one id
        share a prompt, which a pass computes once (`distinct_prompts`: a group's rows, and two
        groups drawn from one problem)."""
        seqs = batch.seqs
        return seqs.attention_mask[:, : seqs.prompt_width].sum(-1), seqs.completion_mask.sum(-1), distinct_prompts(seqs)[2]

    def padding_frac(self, batch: RolloutBatch, micro_batches: list[Tensor]) -> float:
        """Share of the positions these micro-batches compute that are padding (`computed_positions`)."""
        lengths = self._lengths(batch)
        counts = [computed_positions(*(x[micro] for x in lengths), self.rl.pack_sequences) for micro in micro_batches]
        computed = sum(c for c, _ in counts)
        return 1.0 - sum(r for _, r in counts) / computed if computed else 0.0

    def learned_rows(self, batch: RolloutBatch, advantages: Tensor, rows: Tensor) -> Tensor:
        """The rows of `rows` whose loss terms can be non-zero (all of them unless
        `rl.skip_zero_advantage` applies: `algorithm.advantage_only_loss`)."""
        if not (self.rl.skip_zero_advantage and self.algo.advantage_only_loss):
            return rows
        has_tokens = batch.loss_mask[rows].any(-1)
        advantages = advantages[rows]
        if advantages.dim() == 2:
            nonzero = ((advantages != 0) & batch.loss_mask[rows]).any(-1)
        else:
            nonzero = advantages != 0
        return rows[has_tokens & nonzero]

    def on_policy(self, batch_size: int) -> bool:
        """One epoch over one mini-batch and no critic: logp_old is the first forward's logp."""
        return self.rl.ppo_epochs == 1 and self.rl.mini_batch_size >= batch_size and self.value_head is None

    def share(self, rows: Tensor, group_size: int) -> Tensor:
        """This rank's whole groups of `rows` (all of them in one process)."""
        return shard_groups(rows, group_size, self.rank, self.world_size)

    @torch.no_grad()
    def score(self, batch: RolloutBatch) -> PolicyScores:
        """`logp_old`, `logp_ref` and `V_old` of `batch` ([B, T] each), those the algorithm needs.
        A data-parallel rank scores only its `share` of the rows; the others stay 0."""
        self.model.eval()
        B, T = batch.loss_mask.shape
        stale = batch.stale
        need_old = not self.on_policy(B) or bool(stale.any())
        old, ref, vals = torch.zeros(B, T), torch.zeros(B, T), torch.zeros(B, T)
        for idx in self._micro_batches(batch, self.share(torch.arange(B), batch.group_size)):
            seqs = batch.seqs.rows(idx).to(self.device)
            if need_old and not (stale[idx].all() and self.value_head is None):  # stale rows: behaviour_logp
                out, values = self._forward(seqs)
                old[idx] = pad_columns(out.logp.float().cpu(), T)
                if values is not None:
                    vals[idx] = pad_columns(values.cpu(), T)
            if self.algo.needs_reference:
                ref[idx] = pad_columns(self._reference_logp(seqs).float().cpu(), T)
        source = self.behaviour_logp(batch, old) if stale.any() else "learner"
        return PolicyScores(logp_old=old if need_old else None,
                            logp_ref=ref if self.algo.needs_reference else None,
                            values=vals if self.value_head is not None else None, logp_old_source=source)

    # ------------------------------------------------------------------ behaviour policies (asynchronous RL)

    @property
    def trains_adapter(self) -> bool:
        """The trained weights are a LoRA adapter (small enough to keep a few versions of)."""
        return self.config.lora.enabled or self.config.model.adapter is not None

    def keep_version(self, version: int, keep: int) -> None:
        """Remember the trainable tensors as policy `version` (the current one: call it at each step
        before its update, skipped or not), the behaviour policy of the rows that version samples,
        and forget the versions a batch trained at `version` cannot hold: those below
        `version - keep` (`rl.max_staleness`; docs/design.md, "Asynchronous RL"). Nothing is
        kept without LoRA."""
        if not self.trains_adapter or keep < 1:
            return
        self.kept[version] = {name: p.detach().clone() for name, p in self.model.named_parameters()
                              if p.requires_grad}
        for old in [v for v in self.kept if v < version - keep]:
            del self.kept[old]

    @contextmanager
    def weights_of(self, version: int) -> Iterator[None]:
        """The model with `version`'s kept trainable tensors swapped in; the current ones are back
        afterwards (the parameters' storage is exchanged, nothing is copied). KeyError names a
        version that is not kept."""
        if version not in self.kept:
            raise KeyError(f"policy version {version} is not kept (kept: {sorted(self.kept)})")
        params = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
        current = [p.data for _, p in params]
        for name, p in params:
            p.data = self.kept[version][name]
        try:
            yield
        finally:
            for (_, p), data in zip(params, current):
                p.data = data

    @torch.no_grad()
    def behaviour_logp(self, batch: RolloutBatch, logp_old: Tensor) -> str:
        """Write the behaviour policy's log-probs into `logp_old` ([B, T]) for this rank's stale rows
        (docs/algorithms.md §9): under LoRA the learner's forward with the adapter of the version
        that sampled them (`weights_of`), else the engine's own log-probs. Returns the source:
        `learner_adapter` or `engine`."""
        B, T = logp_old.shape
        mine = self.share(torch.arange(B), batch.group_size)
        mine = mine[batch.stale[mine]]
        if not self.trains_adapter:
            logp_old[mine] = batch.logp_engine[mine]
            return "engine"
        self.model.eval()
        for version in batch.versions[mine].unique().tolist():
            rows = mine[batch.versions[mine] == version]
            with self.weights_of(version):
                for idx in self._micro_batches(batch, rows):
                    out, _ = self._forward(batch.seqs.rows(idx).to(self.device))
                    logp_old[idx] = pad_columns(out.logp.float().cpu(), T)
        return "learner_adapter"

    # ------------------------------------------------------------------ the update

    def update(self, batch: RolloutBatch, scores: PolicyScores, advantages: Advantages,
               generator: torch.Generator) -> dict[str, float]:
        """`ppo_epochs` passes over shuffled mini-batches of whole groups; one optimiser step per
        mini-batch. Returns the update's statistics under their final metric names (over all ranks).
        Data-parallel ranks draw the same order from equal `generator` states."""
        self.model.train()
        B, T = batch.loss_mask.shape
        parts: list[tuple[dict[str, float], float]] = []
        norms: list[float] = []
        learned = 0
        computed: list[Tensor] = []
        for _ in range(self.rl.ppo_epochs):
            order = group_order(B, batch.group_size, generator)
            for mini in torch.split(order, self.rl.mini_batch_size):
                mask = batch.loss_mask[mini]
                norm = dict(num_tokens=int(mask.sum()), num_seqs=int(mask.any(-1).sum()),
                            max_len=self.config.rollout.max_tokens)
                rows = self.learned_rows(batch, advantages.advantages, self.share(mini, batch.group_size))
                learned += len(rows)
                micro_batches = self._micro_batches(batch, rows)
                computed += micro_batches
                for micro in micro_batches:
                    parts.append(self._accumulate(batch, scores, advantages, micro, norm))
                if len(rows) == 0:  # the step a zero loss would take (AdamW's moments still move)
                    for p in self.params:
                        p.grad = torch.zeros_like(p)
                if self.world_size > 1:  # every rank joins, rows or none
                    all_reduce_gradients(self.params)
                norms.append(clip_and_step(self.params, self.optimizer, self.scheduler, self.rl.max_grad_norm))
        if self.world_size > 1:
            ranks = gather_objects((parts, learned))
            parts, learned = [p for rank_parts, _ in ranks for p in rank_parts], sum(n for _, n in ranks)
        stats = _mean_stats([part for part in parts if part[1] > 0])
        stats["train/grad_norm"] = sum(norms) / len(norms)
        stats["train/learned_frac"] = learned / (B * self.rl.ppo_epochs)
        stats["train/lr"] = self.scheduler.get_last_lr()[0]
        stats["perf/padding_frac"] = self.padding_frac(batch, computed)
        return stats

    def _accumulate(self, batch: RolloutBatch, scores: PolicyScores, advantages: Advantages,
                    micro: Tensor, norm: dict[str, int]) -> tuple[dict[str, float], float]:
        """Forward and backward one micro-batch; returns its stats and token weight."""
        algo = self.algo
        seqs = batch.seqs.rows(micro).to(self.device)
        width = seqs.completion_mask.shape[1]
        mask = batch.loss_mask[micro][:, :width].to(self.device)

        def cut(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[micro][:, :width].to(self.device)

        out, values = self._forward(seqs, entropy=True)
        logp = out.logp
        logp_old = cut(scores.logp_old) if scores.logp_old is not None else logp.detach()
        logp_engine = cut(batch.logp_engine)
        adv = advantages.advantages[micro]
        adv = (adv[:, :width] if adv.dim() == 2 else adv).to(self.device)
        tis, stats = correction_weights(algo.correction, logp_old, logp_engine, mask)
        loss, pg_stats = policy_loss(algo.policy_loss, logp, logp_old, adv, mask, algo.loss_agg,
                                     tis_weights=tis, **norm)
        stats.update(pg_stats)
        if scores.logp_ref is not None:
            kl, kl_stats = kl_penalty(logp, cut(scores.logp_ref), mask, algo.kl_estimator, algo.loss_agg, **norm)
            stats.update(kl_stats)
            if algo.kl_loss_coef:
                loss = loss + algo.kl_loss_coef * kl
        entropy, entropy_stats = entropy_bonus(out.entropy, mask, algo.loss_agg, **norm)
        stats.update(entropy_stats)
        if algo.entropy_coef:
            loss = loss - algo.entropy_coef * entropy
        stats.update(mismatch_stats(logp_old, logp_engine, mask))
        if values is not None:
            vf, vf_stats = value_loss(values, cut(scores.values), cut(advantages.returns), mask,
                                      algo.value_clip, algo.loss_agg, **norm)
            loss = loss + algo.vf_coef * vf
            stats.update(vf_stats)
        loss.backward()
        stats["train/loss"] = loss.item()
        return stats, float(mask.sum())

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.value_head is not None:
            state["value_head"] = self.value_head.state_dict()
        return state

    def save_checkpoint(self, root: Path, step: int, state: dict, **options) -> Path:
        """`pipeline.core.checkpoint.save_checkpoint` of the weights, with this learner's state under
        `learner` beside the trainer's `state`; `options`: its keep, run_id, tokenizer."""
        return save_checkpoint(root, step, self.model, {"learner": self.state_dict(), **state}, **options)

    def load_state_dict(self, state: dict, weights_dir: str | None = None) -> None:
        """Restore optimiser, schedule, value head and (from `weights_dir`) the trained weights."""
        if weights_dir is not None:
            self._load_weights(weights_dir)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.value_head is not None:
            self.value_head.load_state_dict(state["value_head"])

    def close(self) -> None:
        """Nothing to release in this process (a LearnerGroup stops its ranks here)."""

    def _load_weights(self, folder: str) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        if self.config.lora.enabled or self.config.model.adapter is not None:
            set_peft_model_state_dict(self.model, load_file(f"{folder}/adapter_model.safetensors"))
        else:
            from transformers import AutoModelForCausalLM

            saved = AutoModelForCausalLM.from_pretrained(folder, dtype=self.model.dtype)
            self.model.load_state_dict(saved.state_dict())
