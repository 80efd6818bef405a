"""DPO: the loss by hand, and training on easy pairs beats the reference's pairwise accuracy."""

import json
import math

import torch

from pipeline.config import Config
from pipeline.algorithms.preference_losses import dpo_loss
from stages.dpo import run_dpo
from tests.test_reward_model import easy_pairs, write_pairs


def test_dpo_loss_hand_value():
    # pair 0: Delta = (-10 - -12) - (-11 - -11.5) = 2 - 0.5 = 1.5; pair 1: Delta = (-5 - -4) - (-5 - -5) = -1
    loss, delta = dpo_loss(torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -4.0]),
                           torch.tensor([-11.0, -5.0]), torch.tensor([-11.5, -5.0]), beta=0.1)
    torch.testing.assert_close(delta, torch.tensor([1.5, -1.0]))
    expected = [math.log1p(math.exp(-0.15)), math.log1p(math.exp(0.1))]  # -log sigmoid(beta * Delta)
    torch.testing.assert_close(loss, torch.tensor(expected))


def _config(tmp_path, tiny_model_dir, **sections) -> Config:
    pairs = write_pairs(tmp_path / "pairs.jsonl", easy_pairs(32))
    return Config.model_validate({
        "output_dir": str(tmp_path / "run"), "device": "cpu",
        "model": {"name": str(tiny_model_dir)}, "lora": {"rank": 8, "alpha": 16},
        "dpo": {"pairs": pairs, "lr": 1e-2, "beta": 0.5, "epochs": 1, "batch_size": 8, "eval_fraction": 0.25,
                "max_length": 128, "bf16_autocast": False}, **sections,
    })


def test_dpo_beats_the_reference_on_easy_pairs(tiny_model_dir, tmp_path):
    config = _config(tmp_path, tiny_model_dir)
    out = tmp_path / "run" / "dpo"
    metrics = run_dpo(config, out)
    # a fresh adapter is the reference: every Delta is 0 before training (ties count half)
    assert metrics["accuracy_before"] == 0.5 and metrics["margin_before"] == 0.0
    assert metrics["pairwise_accuracy"] > 0.9 > metrics["reference_pairwise_accuracy"], metrics
    assert metrics["beats_reference"] and metrics["reward_margin"] > 0
    assert metrics["chosen_reward"] > metrics["rejected_reward"]
    assert json.loads((out / "metrics.json").read_text())["eval_pairs"] == 8
    # the held-out accuracy comes with its SE (one pair per prompt here: over pairs, sqrt(p (1 - p) / (n - 1)))
    p = metrics["pairwise_accuracy"]
    assert p == metrics["accuracy_after"] and metrics["eval_prompts"] == 8
    assert math.isclose(metrics["pairwise_accuracy_stderr"], math.sqrt(p * (1 - p) / 7), abs_tol=1e-9)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_the_reference_is_the_starting_adapter_not_the_base_model(tiny_model_dir, tiny_policy_factory, tmp_path):
    """Starting from an SFT-like adapter, DPO's reference is that adapter: Delta is 0 before training."""
    start = tiny_policy_factory(scale=0.5)
    start.save_pretrained(tmp_path / "sft")
    config = _config(tmp_path, tiny_model_dir, model={"name": str(tiny_model_dir), "adapter": str(tmp_path / "sft")})
    config = config.model_copy(update={"dpo": config.dpo.model_copy(update={"epochs": 0.25})})
    metrics = run_dpo(config, tmp_path / "run" / "dpo")
    assert metrics["accuracy_before"] == 0.5 and metrics["margin_before"] == 0.0
    # and the base model (adapter disabled) would have been a different reference
    from pipeline.supervised.dpo import sequence_logps
    from pipeline.core.forward import collate

    batch = collate([[1, 2, 3]], [[4, 5, 6]], pad_id=0)
    with torch.no_grad():
        tuned = sequence_logps(start, batch)
        with start.disable_adapter():
            base = sequence_logps(start, batch)
    assert not torch.allclose(tuned, base, atol=1e-3)


def test_full_fine_tuning_dpo_saves_a_model_folder(tiny_model_dir, tmp_path):
    config = _config(tmp_path, tiny_model_dir, lora={"enabled": False})
    config = config.model_copy(update={"dpo": config.dpo.model_copy(update={"lr": 1e-3})})
    metrics = run_dpo(config, tmp_path / "run" / "dpo")
    assert metrics["accuracy_before"] == 0.5 and metrics["output"].endswith("model")
    assert (tmp_path / "run" / "dpo" / "model" / "config.json").is_file()
    assert metrics["pairwise_accuracy"] > 0.5 and metrics["margin_after"] > 0
