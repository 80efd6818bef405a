"""`rl.micro_batch_tokens`: micro-batches filled to a token budget compute less padding and
leave the update unchanged (the loss is normalised over the mini-batch, docs/algorithms.md §4)."""

import itertools

import pytest
import torch

from pipeline.config import ConfigError, load_config
from pipeline.core.forward import collate
from pipeline.algorithms.advantages import Advantages
from pipeline.learner.batch import RolloutBatch
from pipeline.learner.learner import Learner
from pipeline.learner.micro_batches import computed_positions, token_budget_split

# three groups of four; completion lengths 1..12 spread across the groups
PROMPTS = [[10, 11, 12, 13]] * 4 + [[20, 21]] * 4 + [[30, 31, 32]] * 4
LENGTHS = [12, 1, 7, 3, 2, 11, 5, 9, 8, 4, 10, 6]
COMPLETIONS = [[100 + (7 * i + j) % 300 for j in range(n)] for i, n in enumerate(LENGTHS)]
ADVANTAGES = [1.0, -0.5, 0.25, -0.75, 0.5, -1.0, 1.5, -0.25, 0.75, -1.5, 0.0, 0.5]


def _config(*overrides):
    # Adam's step is lr * m / (sqrt(v) + eps): for gradients near eps a rounding difference of the
    # regrouped sums moves a parameter by up to ~lr * 1e-3 per step, so lr is the demo's 2e-4
    base = ["rl.prompts_per_step=3", "rl.group_size=4", "rl.mini_batch_size=12", "rl.micro_batch_size=4",
            "rl.lr=2e-4", "rl.bf16_autocast=false", "rollout.max_tokens=12", "algorithm.kl_coef=0"]
    return load_config(None, base + list(overrides))


def _update(model_dir, *overrides):
    """Parameters, stats and logp_old after one update of a fresh learner on the fixed batch."""
    torch.manual_seed(0)
    learner = Learner(_config(*overrides), str(model_dir), torch.device("cpu"), 10)
    seqs = collate(PROMPTS, COMPLETIONS, pad_id=2)
    with torch.no_grad():
        logp_engine = learner._forward(seqs)[0].logp.float()
    batch = RolloutBatch(seqs=seqs, loss_mask=seqs.completion_mask.clone(), logp_engine=logp_engine,
                         rewards=torch.zeros(len(PROMPTS)), group_size=4)
    scores = learner.score(batch)
    stats = learner.update(batch, scores, Advantages(torch.tensor(ADVANTAGES)), torch.Generator().manual_seed(0))
    return [p.detach().clone() for p in learner.params], stats, scores


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ["algorithm.preset=grpo"],
    ["algorithm.preset=dapo"],
    ["algorithm.preset=dr_grpo"],
    ["algorithm.preset=gspo"],
    ["algorithm.preset=grpo", "algorithm.kl_coef=0.1", "algorithm.entropy_coef=0.01"],
    ["algorithm.preset=grpo", "rl.ppo_epochs=2", "rl.mini_batch_size=4"],  # off-policy: scored logp_old
], ids=["grpo", "dapo", "dr_grpo", "gspo", "kl+entropy", "two-epochs"])
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_token_budget_and_packing_leave_the_update_unchanged(tiny_fp32_model_dir, overrides, layout):
    """Against padded passes of `micro_batch_size` rows: a token budget, padded or packed
    (`rl.pack_sequences`), changes the passes and nothing else."""
    fixed, fixed_stats, fixed_scores = _update(tiny_fp32_model_dir, *overrides, "rl.pack_sequences=false")
    budget, budget_stats, budget_scores = _update(tiny_fp32_model_dir, *overrides, "rl.micro_batch_tokens=40",
                                                  f"rl.pack_sequences={layout == 'packed'}")
    # 1e-6 per optimiser step: Adam's normalised step turns a rounding difference in a gradient
    # near zero into a parameter difference of up to ~lr * 1e-2 (the packed attention sums in
    # another order than the padded one)
    rl = _config(*overrides).rl
    steps = rl.ppo_epochs * len(LENGTHS) // rl.mini_batch_size
    for a, b in zip(fixed, budget):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * steps)
    assert any(p.abs().max() > 1e-4 for p in budget[1::2])  # the LoRA B matrices moved off zero
    assert budget_stats["train/grad_norm"] == pytest.approx(fixed_stats["train/grad_norm"], rel=1e-5)
    mask = torch.tensor([[t < n for t in range(max(LENGTHS))] for n in LENGTHS])
    for name in ("logp_old", "logp_ref"):
        if getattr(fixed_scores, name) is not None:
            torch.testing.assert_close(getattr(fixed_scores, name) * mask, getattr(budget_scores, name) * mask,
                                       rtol=0, atol=1e-5)
    assert budget_stats["perf/padding_frac"] < fixed_stats["perf/padding_frac"]


def test_split_covers_every_row_once_within_the_budget():
    prompt = torch.tensor([4] * 4 + [2] * 4 + [3] * 4)
    lengths, groups = torch.tensor(LENGTHS), torch.arange(12) // 4
    for budget in (1, 13, 30, 40, 80, 1000):
        parts = token_budget_split(prompt, lengths, groups, budget, pass_overhead=0)
        assert sorted(torch.cat(parts).tolist()) == list(range(12))
        for part in parts:
            cost, real = computed_positions(prompt[part], lengths[part], groups[part])
            assert real <= cost
            assert cost <= budget or len(part) == 1, (budget, part)
    assert len(token_budget_split(prompt, lengths, groups, 1, pass_overhead=0)) == 12

    def total(parts):
        return sum(computed_positions(prompt[p], lengths[p], groups[p])[0] for p in parts)

    everything = computed_positions(prompt, lengths, groups)[0]  # 3 * 4 + 12 * 12 = 156
    fixed = total(list(torch.arange(12).split(4)))  # one group per pass: 4+48 + 2+44 + 3+40 = 141
    assert (everything, fixed) == (156, 141)
    order = sorted(range(12), key=lambda i: (-int(lengths[i]), int(groups[i]), i))
    assert [p.tolist() for p in token_budget_split(prompt, lengths, groups, 1000, pass_overhead=10**9)] == [order]  # one pass
    # a budget of 100: the least positions + overhead x passes, then the fewest passes, as brute
    # force over the runs finds; a huge overhead gives the fewest passes, none the fewest positions
    runs = [[torch.tensor(order[a:b]) for a, b in zip((0,) + cuts, cuts + (12,))]
            for k in range(12) for cuts in itertools.combinations(range(1, 12), k)]
    fitting = [r for r in runs if all(computed_positions(prompt[p], lengths[p], groups[p])[0] <= 100 for p in r)]
    chosen = {}
    for overhead in (0, 4, 15, 10**9):
        parts = token_budget_split(prompt, lengths, groups, 100, pass_overhead=overhead)
        assert (total(parts) + overhead * len(parts), len(parts)) == min(
            (total(r) + overhead * len(r), len(r)) for r in fitting)
        chosen[overhead] = (len(parts), total(parts))
    assert chosen[10**9][0] == min(len(r) for r in fitting)
    assert chosen[0][1] == min(total(r) for r in fitting)
    assert chosen[0][0] > chosen[10**9][0] and chosen[0][1] < chosen[10**9][1]  # the trade is real here
    assert chosen[10**9][1] < fixed  # fewer positions than one group per pass (141)
    # longest first: the first micro-batch holds the longest completion
    assert int(lengths[token_budget_split(prompt, lengths, groups, 40, pass_overhead=0)[0]].max()) == 12


def test_computed_positions_follow_the_shared_prompt_forward():
    # one group: its prompt once (width 4), completions padded to 5
    assert computed_positions(torch.tensor([4, 4]), torch.tensor([5, 2]), torch.tensor([0, 0])) == (4 + 2 * 5, 4 + 7)
    # two groups sharing within: prompts left-padded to 4
    assert computed_positions(torch.tensor([4, 4, 2]), torch.tensor([1, 1, 3]), torch.tensor([0, 0, 1])) == (
        2 * 4 + 3 * 3, 6 + 5)
    # no prompt shared: each row computes its own prompt and completion
    assert computed_positions(torch.tensor([4, 2]), torch.tensor([1, 3]), torch.tensor([0, 1])) == (2 * (4 + 3), 10)


def test_micro_batch_tokens_must_be_positive():
    with pytest.raises((ConfigError, ValueError), match="micro_batch_tokens"):
        _config("rl.micro_batch_tokens=0")


@pytest.mark.parametrize("budget", [1, 20, 40, 60, 1000])
def test_packed_split_counts_what_pack_computes_within_the_budget(budget):
    from pipeline.core.packing import pack

    prompt = torch.tensor([4] * 4 + [2] * 4 + [3] * 4)
    lengths, groups = torch.tensor(LENGTHS), torch.arange(12) // 4
    seqs = collate(PROMPTS, COMPLETIONS, pad_id=2)
    parts = token_budget_split(prompt, lengths, groups, budget, pass_overhead=0, packed=True)
    assert sorted(torch.cat(parts).tolist()) == list(range(12))
    for part in parts:
        cost, real = computed_positions(prompt[part], lengths[part], groups[part], packed=True)
        distinct = groups[part].unique()
        assert cost == pack(seqs.rows(part)).computed
        assert real == int(prompt[distinct * 4].sum() + lengths[part].sum())
        assert cost <= budget or len(part) == 1  # over the budget: one completion alone
    alone = [int(prompt[i] + max(1, lengths[i])) for i in range(12)]  # a completion's pass on its own
    if budget < min(alone):
        assert len(parts) == 12
    assert len(token_budget_split(prompt, lengths, groups, 1000, pass_overhead=0, packed=True)) == 1


@pytest.mark.parametrize("seed", range(20))
def test_packed_passes_keep_the_budget_where_every_completion_fits(seed):
    """The budget caps every packed pass whenever each completion with its prompt fits it alone
    (a new user's case: budget 50 once computed 290 positions when passes took whole packed rows)."""
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 40, (1,), generator=g))
    groups = torch.randint(0, 6, (n,), generator=g).sort().values
    prompt_of = torch.randint(1, 20, (6,), generator=g)
    prompts, lengths = prompt_of[groups], torch.randint(0, 30, (n,), generator=g)
    budget = int((prompts + lengths.clamp(min=1)).max()) + int(torch.randint(0, 80, (1,), generator=g))
    parts = token_budget_split(prompts, lengths, groups, budget, pass_overhead=0, packed=True)
    assert sorted(torch.cat(parts).tolist()) == list(range(n))
    assert all(computed_positions(prompts[p], lengths[p], groups[p], packed=True)[0] <= budget for p in parts)


@pytest.mark.parametrize("pack_sequences", [False, True])
def test_groups_of_one_problem_count_their_prompt_once(tiny_model_dir, pack_sequences):
    """Two groups drawn from the same problem share one prompt, which a pass computes once: the
    learner counts the positions its forward computes (a new user's case counted 16 for 13)."""
    from pipeline.core.forward import shared_prompt_forward
    from pipeline.core.packing import pack

    learner = Learner(_config(f"rl.pack_sequences={pack_sequences}"), str(tiny_model_dir), torch.device("cpu"), 10)
    prompts = [[10, 11, 12, 13]] * 8
    batch = RolloutBatch(seqs=collate(prompts, COMPLETIONS[:8], pad_id=2), loss_mask=torch.ones(8, 12, dtype=torch.bool),
                         logp_engine=torch.zeros(8, 12), rewards=torch.zeros(8), group_size=4)
    computed, real = computed_positions(*learner._lengths(batch), pack_sequences)
    assert real == 4 + sum(LENGTHS[:8])
    if pack_sequences:
        assert computed == pack(batch.seqs).computed
    else:  # one prompt of 4, eight completions of the longest (12)
        assert computed == 4 + 8 * 12
        assert shared_prompt_forward is learner.forward
