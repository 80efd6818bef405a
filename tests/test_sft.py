"""SFT: response-only loss mask, packing without cross-example attention, the loss goes down."""

import pytest
import torch

from pipeline.config import LoraConfig, SFTConfig
from pipeline.data.problems import Problem
from pipeline.core.models import load_policy, load_tokenizer
from pipeline.supervised.sft import SFTExample, build_examples, pack, sft_loss
from pipeline.data.subsets import split_holdout
from pipeline.supervised.fit import evaluate, fit, total_steps

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    torch.manual_seed(0)
    return load_policy(tiny_model_dir, LoraConfig(rank=8, alpha=16)), load_tokenizer(tiny_model_dir)


def test_examples_are_templated_prompt_and_solution_plus_eos(tiny):
    _, tokenizer = tiny
    problems = [Problem("What is 2+3?", "5", "2+3=5. \\boxed{5}"), Problem("No solution", "1")]
    (ex,) = build_examples(tokenizer, problems, "Be brief.", max_length=512)
    assert tokenizer.decode(ex.prompt).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert tokenizer.decode(ex.prompt).endswith("What is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    assert ex.response[-1] == tokenizer.eos_token_id and tokenizer.decode(ex.response[:-1]) == "2+3=5. \\boxed{5}"
    (cut,) = build_examples(tokenizer, problems[:1], "Be brief.", max_length=len(ex.prompt) + 3)
    assert cut.response == ex.response[:3]


def test_loss_counts_response_tokens_only(tiny):
    """Hand example: the summed loss is -sum log p over the 3 response tokens, nothing from the prompt."""
    model, _ = tiny
    ex = SFTExample(prompt=[10, 11, 12, 13], response=[20, 21, 2])
    loss = sft_loss(model, pad_id=2, device=CPU)
    with torch.no_grad():
        got, _ = loss.fn([ex, SFTExample([30], [31])])
        logp = torch.log_softmax(model(input_ids=torch.tensor([ex.prompt + ex.response])).logits[0].float(), -1)
        single = loss.fn([SFTExample([30], [31])])[0]
    expected = -(logp[3, 20] + logp[4, 21] + logp[5, 2])
    torch.testing.assert_close(got - single, expected, atol=1e-4, rtol=1e-4)
    assert loss.count(ex) == 3


def test_pack_layout_and_no_attention_across_examples(tiny):
    model, _ = tiny
    examples = [SFTExample([5, 6, 7], [8, 9]), SFTExample([10, 11], [12, 13, 14]), SFTExample([15] * 6, [16])]
    rows = pack(examples, max_length=10)
    assert [r.input_ids for r in rows] == [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [15] * 6 + [16]]
    assert rows[0].positions == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert rows[0].targets == [False] * 3 + [True] * 2 + [False] * 2 + [True] * 3
    with torch.no_grad():
        padded = sft_loss(model, 2, CPU).fn(examples)[0]
        packed = sft_loss(model, 2, CPU, packing=True, max_length=10).fn(examples)[0]
        # the same tokens with attention allowed across examples give another loss: the test can fail
        joined = sft_loss(model, 2, CPU).fn([SFTExample([5, 6, 7, 8, 9, 10, 11], [12, 13, 14])])[0]
        alone = sft_loss(model, 2, CPU).fn([examples[1]])[0]
    torch.testing.assert_close(packed, padded, atol=1e-3, rtol=1e-4)
    assert abs(float(joined - alone)) > 1e-3


def test_training_lowers_the_loss(tiny_model_dir):
    """Full fine-tuning: the tiny random model's LoRA alone cannot move its near-uniform logits far."""
    torch.manual_seed(0)
    model = load_policy(tiny_model_dir, LoraConfig(enabled=False))
    tokenizer = load_tokenizer(tiny_model_dir)
    problems = [Problem(f"What is {a}+{a}?", str(2 * a), f"{a}+{a}={2 * a}. \\boxed{{{2 * a}}}") for a in range(8)]
    examples = build_examples(tokenizer, problems, "", max_length=128)
    loss = sft_loss(model, tokenizer.pad_token_id, CPU)
    config = SFTConfig(lr=1e-2, bf16_autocast=False)
    before = evaluate(model, examples, loss, micro_batch_size=4, device=CPU)["loss"]
    history = fit(model, examples, loss, config, device=CPU, batch_size=4, micro_batch_size=2, epochs=1.5)
    after = evaluate(model, examples, loss, micro_batch_size=4, device=CPU)["loss"]
    assert len(history) == total_steps(8, 4, 1.5) == 3
    assert after < before - 1.0, (before, after)


def test_split_holdout_is_seeded_and_disjoint():
    train, held = split_holdout(list(range(100)), 0.1, seed=3)
    assert len(held) == 10 and not set(train) & set(held) and split_holdout(list(range(100)), 0.1, 3)[1] == held
    assert split_holdout([1, 2], 0.01, 0)[1] and split_holdout([1, 2], 0.99, 0)[0]


def test_sft_stage_end_to_end(tiny_model_dir, tmp_path):
    """`rlvr sft` on a small file with the HF engine: adapter, tokenizer, per-step and final metrics."""
    import json

    from datagen.synthetic import generate
    from stages.sft import main

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(p.to_row()) + "\n" for p in generate(12, seed=0, levels=[1])))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("device: cpu\n")
    main([str(recipe), f"output_dir={tmp_path / 'run'}", f"model.name={tiny_model_dir}", f"data.train={data}",
          "rollout.engine=hf", "rollout.max_tokens=4", "sft.batch_size=8", "sft.micro_batch_size=4",
          "sft.eval_fraction=0.25", "sft.packing=true", "sft.bf16_autocast=false"])
    out = tmp_path / "run" / "sft"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["train_examples"] == 9 and metrics["format_check_problems"] == 3
    assert {"train_loss_before", "eval_loss_after", "format_rate_before", "accuracy_rate_after"} <= set(metrics)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "adapter" / "tokenizer.json").is_file()
