"""Packed completions (`rl.pack_sequences`, pipeline/core/packing.py): the same log-probs, entropy,
hidden states and gradients as the padded layout, with no padding but the packed rows' tails."""

import random

import pytest
import torch

from pipeline.config import LoraConfig
from pipeline.core.forward import collate, completion_forward
from pipeline.core.models import load_policy
from pipeline.core.packing import first_fit_decreasing, pack, packed_forward, packed_positions, packed_rows

from hand_tensors import parameter_grads


def _groups(seed: int, n_groups: int, group_size: int, max_prompt: int = 9, max_completion: int = 12):
    """Random groups: each a prompt of its own length and `group_size` completions of random
    lengths (empty ones included), rows shuffled so groups interleave."""
    rng = random.Random(seed)
    rows = []
    for g in range(n_groups):
        prompt = [rng.randrange(3, 400) for _ in range(rng.randint(1, max_prompt))]
        rows += [(prompt, [rng.randrange(3, 400) for _ in range(rng.randint(0, max_completion))])
                 for _ in range(group_size)]
    rng.shuffle(rows)
    return [p for p, _ in rows], [c for _, c in rows]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_packed_forward_equals_the_padded_forward_with_gradients(tiny_fp32_model_dir, seed):
    torch.manual_seed(seed)
    model = load_policy(tiny_fp32_model_dir, LoraConfig(rank=4), dtype="float32")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)  # an adapter that changes every state, prompts' included
    prompts, completions = _groups(seed, n_groups=3 + seed, group_size=3)
    batch = collate(prompts, completions, pad_id=2)
    assert pack(batch).row_prompts.shape[1] > 1  # some row continues two groups' prompts
    results = []
    for forward in (completion_forward, packed_forward):
        out = forward(model, batch, temperature=0.7, with_entropy=True, top_k=50)
        results.append((out, parameter_grads(model, ((out.logp + out.entropy) * batch.completion_mask).sum())))
    (padded, padded_grads), (packed, packed_grads) = results
    mask = batch.completion_mask
    torch.testing.assert_close(packed.logp[mask], padded.logp[mask], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed.entropy[mask], padded.entropy[mask], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed.hidden[mask], padded.hidden[mask], atol=1e-5, rtol=1e-4)
    assert (packed.logp[~mask] == 0).all()
    assert padded_grads.keys() == packed_grads.keys() and any("lora_A" in n for n in padded_grads)
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-5, rtol=1e-3, msg=name)


def test_pack_lays_a_groups_completions_end_to_end_after_its_prompt():
    prompts = [[10, 11, 12], [20], [10, 11, 12], [20]]
    completions = [[30, 31], [40, 41, 42], [50], []]
    packed = pack(collate(prompts, completions, pad_id=2))
    # distinct prompts in unique's order: [20] (left-padded) is prompt 0, [10 11 12] prompt 1
    assert packed.prompt_ids.tolist() == [[2, 2, 20], [10, 11, 12]]
    # width 3, the longest completion: rows 1 (+ the empty row 3) and rows 0 + 2
    assert packed.input_ids.tolist() == [[40, 41, 42], [30, 31, 50]]
    assert packed.row_prompts.tolist() == [[0], [1]]
    assert packed.position_ids.tolist() == [[1, 2, 3], [3, 4, 3]]  # on from each prompt's length
    mask = packed.attention_mask[:, 0]
    assert mask[1, 2].tolist() == [True, True, True, False, False, True]  # row 2's token: its prompt, itself
    assert mask[1, 1].tolist() == [True, True, True, True, True, False]
    assert mask[0, 0].tolist() == [False, False, True, True, False, False]  # not the prompt's padding
    # each completion token, and the state before it: d < 2 the last of prompt d, else 2 + r * 3 + w
    assert packed.token.tolist() == [0, 1, 2, 3, 4, 5]
    assert packed.state.tolist() == [0, 2, 3, 1, 5, 1]
    assert packed.row.tolist() == [1, 1, 1, 0, 0, 2] and packed.column.tolist() == [0, 1, 2, 0, 1, 0]
    assert packed.computed == 2 * 3 + 2 * 3 == packed_positions(torch.tensor([3, 1, 3, 1]), torch.tensor([2, 3, 1, 0]),
                                                                torch.tensor([1, 0, 1, 0]))


@pytest.mark.parametrize("seed", range(5))
def test_first_fit_decreasing_places_every_item_once_within_the_width(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 20) for _ in range(rng.randint(1, 30))]
    width = max(lengths) + rng.randint(0, 10)
    bins = first_fit_decreasing(lengths, width)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= width for b in bins)
    assert len(bins) <= 2 * -(-sum(lengths) // width)  # first fit: no two bins at most half full


def test_packed_rows_fill_the_longest_completions_width_across_groups():
    lengths = torch.tensor([5, 1, 4, 2, 3, 3, 6])
    assert packed_rows(lengths) == [[6], [0, 1], [2, 3], [4, 5]]  # every row full
    # one group's rows (lengths 5, 3) and another's (2): the 3 and the 2 share a row
    assert packed_rows(torch.tensor([5, 3, 2])) == [[0], [1, 2]]


@pytest.mark.parametrize("seed", range(5))
def test_packed_rows_widen_to_the_fewest_positions(seed):
    """Completions of similar lengths, one longer: rows of the longest one's width would hold one
    completion each; a row width up to twice that is chosen when it computes fewer positions."""
    lengths = [20, 21, 22, 20, 34]
    assert [sorted(lengths[i] for i in row) for row in packed_rows(torch.tensor(lengths))] == [[22, 34], [20, 20, 21]]
    rng = random.Random(seed)
    lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, 40))]
    rows = packed_rows(torch.tensor(lengths))
    width = max(sum(lengths[i] for i in row) for row in rows)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert max(lengths) <= width <= 2 * max(lengths)
    narrow = first_fit_decreasing(lengths, max(lengths))  # rows of the longest one's width
    assert len(rows) * width <= len(narrow) * max(lengths)


def test_empty_completions_add_no_prompt_to_a_row():
    """A row holding an empty completion of another group reads no keys of that group's prompt."""
    prompts = [[10, 11, 12], [20], [30, 31]]
    packed = pack(collate(prompts, [[40, 41, 42, 43, 44], [], []], pad_id=2))
    assert packed.row_prompts.shape == (1, 1)  # one row, continuing only [10, 11, 12]
    assert packed.token.tolist() == [0, 1, 2, 3, 4] and packed.row.tolist() == [0] * 5


def test_packing_refuses_attention_that_would_ignore_its_mask(tiny_fp32_model_dir):
    """Eager attention adds a 4D mask to the scores: a boolean mask would let completions see each
    other. Packing runs on sdpa only and says so."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_fp32_model_dir, attn_implementation="eager")
    batch = collate([[10, 11], [20]], [[30, 31], [40]], pad_id=2)
    with pytest.raises(ValueError, match="sdpa"):
        packed_forward(model, batch)


def test_a_packed_row_continues_each_completions_own_prompt():
    """A row holding two groups' completions reads both prompts side by side (K = 2 slots of P
    keys); each token sees its own prompt's keys and its own completion's past only."""
    prompts = [[10, 11, 12], [20], [10, 11, 12]]
    completions = [[30, 31, 32], [40], [50, 51]]
    packed = pack(collate(prompts, completions, pad_id=2))
    # distinct prompts: 0 = [20] (left-padded), 1 = [10, 11, 12]; rows: [row 0], [row 2, row 1]
    assert packed.input_ids.tolist() == [[30, 31, 32], [50, 51, 40]]
    assert packed.row_prompts.tolist() == [[1, 1], [0, 1]]
    assert packed.position_ids.tolist() == [[3, 4, 5], [3, 4, 1]]
    mask = packed.attention_mask[:, 0]  # keys: slot 0's 3, slot 1's 3, the row's 3
    assert mask[1, 2].tolist() == [False, False, True, False, False, False, False, False, True]  # [20] and itself
    assert mask[1, 1].tolist() == [False, False, False, True, True, True, True, True, False]
    assert mask[0, 0].tolist() == [True, True, True, False, False, False, True, False, False]
    assert packed.state.tolist() == [1, 2, 3, 1, 5, 0]
    assert packed.row.tolist() == [0, 0, 0, 2, 2, 1] and packed.column.tolist() == [0, 1, 2, 0, 1, 0]
    assert packed.computed == 2 * 3 + 2 * 3 == packed_positions(torch.tensor([3, 1, 3]), torch.tensor([3, 1, 2]),
                                                                torch.tensor([1, 0, 1]))


