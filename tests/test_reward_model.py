"""Reward model: Bradley-Terry loss, last-token read under padding, learning easy pairs, serving."""

import json
import math
import random

import pytest
import torch

from pipeline.config import Config, LoraConfig
from pipeline.core.forward import collate
from pipeline.algorithms.preference_losses import bradley_terry_loss
from pipeline.core.reward_model import build_reward_model, last_token_index
from pipeline.data.preference import EncodedPair
from pipeline.eval.pass_at_k import held_out_accuracy
from stages.reward_model import run_reward_model

WORDS = ["apple", "river", "stone", "cloud", "green", "seven", "table", "light", "quiet", "north", "sugar", "piano"]


def easy_pairs(n: int, seed: int = 0) -> list[dict]:
    """Pairs whose chosen response carries a marker word ("correct") and rejected another ("wrong")."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        rows.append({"prompt": f"Question {i}: {rng.choice(WORDS)}?", "chosen": f"{body}. correct",
                     "rejected": f"{body}. wrong"})
    return rows


def write_pairs(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_bradley_terry_loss_hand_value():
    loss = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.5, 1.0]))
    expected = [math.log1p(math.exp(-1.5)), math.log1p(math.exp(1.0))]  # -log sigmoid(x) = log(1 + e^-x)
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_last_token_index_with_left_and_right_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [4, 2, 2, 4]


def test_reward_is_read_at_the_last_real_token_whatever_the_padding(tiny_model_dir):
    torch.manual_seed(0)
    rm = build_reward_model(tiny_model_dir, LoraConfig(rank=4, alpha=8)).eval()
    prompts, responses = [[5, 6, 7, 8, 9], [10]], [[11], [12, 13, 14, 15]]
    with torch.no_grad():
        batched = rm(collate(prompts, responses, pad_id=2))  # row 0 right-padded, row 1 left-padded
        alone = torch.cat([rm(collate([p], [r], pad_id=2)) for p, r in zip(prompts, responses)])
        shifted = rm(collate([prompts[0]], [[11, 16]], pad_id=2))
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)
    assert abs(float(shifted - alone[0])) > 1e-4  # another last token, another reward


def test_reward_model_learns_easy_pairs_and_serves_as_a_reward(tiny_model_dir, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", easy_pairs(64))
    config = Config.model_validate({
        "output_dir": str(tmp_path / "run"), "device": "cpu",
        "model": {"name": str(tiny_model_dir)}, "lora": {"rank": 8, "alpha": 16},
        "reward_model": {"pairs": pairs, "lr": 3e-3, "epochs": 1, "batch_size": 8, "eval_fraction": 0.25,
                         "max_length": 128, "bf16_autocast": False},
    })
    out = tmp_path / "run" / "reward_model"
    metrics = run_reward_model(config, out)
    assert metrics["eval_pairs"] == 16 and metrics["accuracy_before"] < 0.9
    assert metrics["pairwise_accuracy"] > 0.9, metrics
    # its standard error: one pair per prompt here, so the SE over pairs, sqrt(p (1 - p) / (n - 1))
    p = metrics["pairwise_accuracy"]
    assert p == pytest.approx(metrics["accuracy_after"]) and metrics["eval_prompts"] == 16
    assert metrics["pairwise_accuracy_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / 15))
    assert json.loads((out / "metrics.json").read_text())["pairwise_accuracy"] == metrics["pairwise_accuracy"]
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "reward_head.safetensors").is_file()

    import rewards
    import rewards.model  # noqa: F401  (registers `reward_model`)

    fn = rewards.get("reward_model", path=str(out), batch_size=3)
    held = easy_pairs(8, seed=1)  # unseen prompts and bodies
    scores = fn([r["chosen"] for r in held] + [r["rejected"] for r in held], prompt=[r["prompt"] for r in held] * 2)
    assert len(scores) == 16 and all(isinstance(s, float) for s in scores)
    assert sum(c > r for c, r in zip(scores[:8], scores[8:])) >= 7
    # prompts already rendered (as the RL trainer passes them) score the same as raw problems
    from pipeline.core.tokens import render_prompt
    from pipeline.core.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    rendered = [render_prompt(tokenizer, r["prompt"], config.data.system_prompt) for r in held[:2]]
    again = fn([r["chosen"] for r in held[:2]], prompt=rendered)
    assert again == pytest.approx(scores[:2], abs=1e-5)
    # combined with a rule-based reward by weight, as `reward.terms` does in the RL stage
    terms = [{"name": "format"}, {"name": "reward_model", "weight": 0.5, "params": {"path": str(out)}}]
    with rewards.RewardScorer(terms) as scorer:
        result = scorer(["so \\boxed{1}", held[0]["chosen"]], prompt=[held[0]["prompt"]] * 2)
    rm_part = result.components["reward_model"]
    assert result.total == pytest.approx([1.0 + 0.5 * rm_part[0], 0.5 * rm_part[1]])
    with pytest.raises(ValueError, match="'prompt' column"):
        fn(["x"])
    with pytest.raises(ValueError, match="not a reward model folder"):
        rewards.get("reward_model", path=str(tmp_path))


def test_held_out_accuracy_standard_error_is_clustered_by_prompt():
    """Two prompts with two pairs each, both right on one prompt and both wrong on the other:
    the pairs of a prompt move together, so the SE is that of 2 prompts (0.5), not of 4 pairs."""
    pairs = [EncodedPair([1, 2], [3], [4]), EncodedPair([1, 2], [5], [6]),
             EncodedPair([7], [3], [4]), EncodedPair([7], [5], [6])]
    result = held_out_accuracy([1.0, 1.0, 0.0, 0.0], pairs)
    assert result == {"pairwise_accuracy": 0.5, "pairwise_accuracy_stderr": pytest.approx(0.5),
                      "eval_pairs": 4, "eval_prompts": 2}
    # one pair per prompt: the SE over pairs, sqrt(p (1 - p) / (n - 1)) = sqrt(0.25 / 3)
    alone = [EncodedPair([i], [3], [4]) for i in range(4)]
    se = held_out_accuracy([1.0, 1.0, 0.0, 0.0], alone)["pairwise_accuracy_stderr"]
    assert se == pytest.approx(math.sqrt(0.25 / 3))
    assert held_out_accuracy([1.0, 0.0], pairs[:2])["pairwise_accuracy_stderr"] is None  # one prompt: no SE
    with pytest.raises(ValueError, match="3 outcomes for 4 pairs"):
        held_out_accuracy([1.0, 1.0, 0.0], pairs)
