"""evaluate_problems and EvalReport (docs/algorithms.md §11): a stub engine with canned completions,
checked by hand, and one end-to-end run of the tiny model through real vLLM."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.eval import evaluation
from pipeline.data.problems import Problem
from pipeline.eval.evaluation import EvalReport, compare_markdown, evaluate_problems, load_eval_problems
from pipeline.rollout import Completion


class CharTokenizer:
    """No chat template: prompts are the plain text, one id per character."""

    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [ord(ch) % 256 for ch in text]}


class StubEngine:
    """Returns canned (text, length, truncated) completions per problem, in prompt order."""

    def __init__(self, canned: list[list[tuple[str, int, bool]]]):
        self.canned = canned
        self.calls = []

    def generate(self, prompts, sampling):
        self.calls.append((prompts, sampling))
        assert len(prompts) == len(self.canned)
        return [
            [Completion(prompt, list(range(length)), [0.0] * length, text, "length" if cut else "stop")
             for text, length, cut in group[: sampling.n]]
            for prompt, group in zip(prompts, self.canned)
        ]


PROBLEMS = [
    Problem("What is one half?", "1/2", level=1, source="a"),
    Problem("What is 3 + 4?", "7", level=2, source="a"),
    Problem("What is 1 + 2?", "3", level=1, source="b"),
]
CANNED = [
    # 2 correct; answers 0.5 | 2/3 | 2/3 | 1/2: a 2-2 tie that the class seen first (0.5) wins
    [("so \\boxed{0.5}", 10, False), ("\\boxed{2/3}", 10, False), ("\\boxed{2/3}", 10, False),
     ("\\boxed{\\frac{1}{2}}", 10, False)],
    # 1 correct; no answer (truncated), 7, 8, 8: the majority (8) is wrong
    [("I am still thinking", 40, True), ("\\boxed{7}", 10, False), ("\\boxed{8}", 10, False),
     ("\\boxed{8}", 10, False)],
    # 4 correct
    [("\\boxed{3}", 10, False)] * 4,
]


@pytest.fixture(scope="module")
def report() -> EvalReport:
    engine = StubEngine(CANNED)
    result = evaluate_problems(
        engine, CharTokenizer(), PROBLEMS, system_prompt="Solve.", n=4, temperature=0.7, top_p=0.9,
        max_tokens=64, max_prompt_tokens=200, k_list=(1, 2, 4, 8),
    )
    sampling = engine.calls[0][1]
    assert (sampling.n, sampling.temperature, sampling.top_p, sampling.max_tokens) == (4, 0.7, 0.9, 64)
    return result


def test_summary_by_hand(report):
    s = report.summary
    assert s["num_problems"] == 3 and s["n"] == 4
    assert s["avg@4"] == pytest.approx(7 / 12) and s["accuracy"] == s["avg@4"]
    assert s["pass@1"] == pytest.approx(7 / 12)
    # pass@2: c=2 -> 1 - 1/6, c=1 -> 1 - 3/6, c=4 -> 1
    assert s["pass@2"] == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)
    assert s["pass@4"] == pytest.approx(1.0)
    assert "pass@8" not in s and "maj@8" not in s  # k > n is skipped
    assert s["maj@1"] == pytest.approx(2 / 3)  # problem 1's first sample has no answer
    assert s["maj@2"] == pytest.approx(1.0)  # [None, 7] -> 7
    assert s["maj@4"] == pytest.approx(2 / 3)  # 8 beats 7 on problem 1
    assert s["truncation_rate"] == pytest.approx(1 / 12)
    assert s["no_answer_rate"] == pytest.approx(1 / 12)
    assert s["mean_length"] == pytest.approx((11 * 10 + 40) / 12)
    assert s["by_level"] == pytest.approx({"1": 6 / 8, "2": 1 / 4})
    assert list(s["by_level"]) == ["1", "2"]
    assert s["by_source"] == pytest.approx({"a": 3 / 8, "b": 1.0})


def test_samples_are_recorded(report):
    assert len(report.samples) == 12
    first = report.samples[0]
    assert first == {"problem": 0, "text": "so \\boxed{0.5}", "answer": "0.5", "length": 10,
                     "finish_reason": "stop", "truncated": False, "correct": True}
    assert [s["correct"] for s in report.samples[4:8]] == [False, True, False, False]
    assert report.samples[4]["answer"] is None and report.samples[4]["finish_reason"] == "length"
    assert [p["correct"] for p in report.problems] == [2, 1, 4]


def test_report_round_trip_and_markdown(report, tmp_path):
    path = tmp_path / "report.json"
    report.to_json(path)
    assert json.loads(path.read_text())["summary"]["n"] == 4
    assert EvalReport.from_json(path) == report
    md = report.to_markdown()
    for text in ("| avg@4 | 0.583 |", "| pass@2 | 0.778 |", "| maj@4 | 0.667 |", "| truncation_rate | 0.083 |",
                 "| level | avg@4 |", "| 2 | 0.250 |", "| b | 1.000 |"):
        assert text in md


def test_greedy_when_one_sample():
    engine = StubEngine(CANNED)
    result = evaluate_problems(engine, CharTokenizer(), PROBLEMS, system_prompt="", n=1, temperature=0.7,
                               top_p=0.9, max_tokens=64, max_prompt_tokens=200, k_list=(1, 4))
    assert engine.calls[0][1].temperature == 0.0
    assert result.summary["avg@1"] == pytest.approx(2 / 3)
    assert [k for k in result.summary if k.startswith(("pass@", "maj@"))] == ["pass@1", "maj@1"]


@pytest.mark.parametrize("n, k_list", [(4, (1, 4)), (2, (1, 2, 8))])
def test_greedy_with_several_samples_decodes_once_and_reports_n_1(caplog, n, k_list):
    # Issue 14: pass@4 / maj@4 were reported from four identical greedy samples.
    engine = StubEngine(CANNED)
    with caplog.at_level("WARNING", logger="pipeline.eval.evaluation"):
        result = evaluate_problems(engine, CharTokenizer(), PROBLEMS, system_prompt="", n=n, temperature=0.0,
                                   top_p=0.9, max_tokens=64, max_prompt_tokens=200, k_list=k_list)
    assert [(call[1].n, call[1].temperature) for call in engine.calls] == [(1, 0.0)]
    assert result.summary["n"] == 1 and len(result.samples) == 3
    assert [k for k in result.summary if k.startswith(("avg@", "pass@", "maj@"))] == ["avg@1", "pass@1", "maj@1"]
    assert any("temperature 0" in r.message and "n=1" in r.message for r in caplog.records)


def test_compare_markdown(report):
    other = dict(report.summary, **{"avg@4": 0.25})
    md = compare_markdown({"base": report.summary, "rl": other})
    assert md.splitlines()[0] == "| metric | base | rl |"
    assert "| avg@4 | 0.583 | 0.250 |" in md and "| level 2 | 0.250 | 0.250 |" in md


def test_dataset_presets(monkeypatch):
    seen = {}

    def load_problems(spec, **kw):
        seen.clear()
        seen.update(spec=spec, **kw)
        return []

    monkeypatch.setattr(evaluation, "load_problems", load_problems)
    load_eval_problems("aime24", limit=5, seed=1)
    assert seen == {"spec": "HuggingFaceH4/aime_2024", "split": "train", "preset": "aime", "columns": {},
                    "levels": None, "limit": 5, "seed": 1}
    load_eval_problems("gsm8k")
    assert (seen["spec"], seen["split"], seen["preset"]) == ("openai/gsm8k:main", "test", "gsm8k")
    load_eval_problems("my/hub-set", split="validation", levels=[3])
    assert seen == {"spec": "my/hub-set", "split": "validation", "levels": [3], "limit": None, "seed": 0}


def test_unknown_local_file_is_a_clear_error():
    from pipeline.data.problems import DataError

    with pytest.raises(DataError, match="not found"):
        load_eval_problems("no/such/file.jsonl")


def _se(values):
    """Hand SE over problems: sample standard deviation (ddof 1) over sqrt(m)."""
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def test_standard_errors_over_problems_by_hand(report):
    errors = report.summary["stderr"]
    # per problem (counts 2, 1, 4 of n = 4): avg@4 0.5, 0.25, 1; pass@2 5/6, 1/2, 1; maj@4 1, 0, 1
    assert errors["avg@4"] == pytest.approx(_se([0.5, 0.25, 1.0])) and errors["accuracy"] == errors["avg@4"]
    assert errors["pass@1"] == pytest.approx(_se([0.5, 0.25, 1.0]))
    assert errors["pass@2"] == pytest.approx(_se([5 / 6, 1 / 2, 1.0]))
    assert errors["pass@4"] == 0.0
    assert errors["maj@4"] == pytest.approx(_se([1.0, 0.0, 1.0]))
    assert errors["maj@1"] == pytest.approx(_se([0.0, 0.0, 1.0]))
    # level 1 holds problems 0 and 2; level 2 only one problem: no SE (None, valid JSON)
    assert errors["by_level"] == {"1": pytest.approx(_se([0.5, 1.0])), "2": None}
    assert [p["scores"]["maj@4"] for p in report.problems] == [1.0, 0.0, 1.0]
    assert [p["scores"]["pass@2"] for p in report.problems] == pytest.approx([5 / 6, 1 / 2, 1.0])
    md = report.to_markdown()
    assert "| metric | value | stderr |" in md and f"| avg@4 | 0.583 | {_se([0.5, 0.25, 1.0]):.3f} |" in md
    assert "| level | avg@4 | stderr |" in md and "| 1 | 0.750 | 0.250 |" in md and "| 2 | 0.250 | None |" in md


def _report(per_problem_avg: list[float], texts: list[str] | None = None) -> EvalReport:
    """A report whose problems carry the given avg@4 and maj@4 (= avg rounded) per problem."""
    texts = texts or [f"p{i}" for i in range(len(per_problem_avg))]
    problems = [{"problem": t, "gold": "1", "scores": {"avg@4": v, "maj@4": float(round(v))}}
                for t, v in zip(texts, per_problem_avg)]
    mean = sum(per_problem_avg) / len(per_problem_avg)
    return EvalReport({"n": 4, "avg@4": mean, "stderr": {"avg@4": _se(per_problem_avg)}}, [], problems)


def test_paired_differences_on_a_hand_made_set():
    base = _report([0.0, 0.25, 1.0, 0.5, 0.75])
    rl = _report([0.25, 0.5, 1.0, 0.75, 0.75])  # differences 0.25, 0.25, 0, 0.25, 0
    paired = evaluation.paired_differences({"sft": base, "rl": rl, "same": base}, "sft")
    assert set(paired) == {"rl", "same"}
    entry = paired["rl"]
    assert (entry["reference"], entry["problems"]) == ("sft", 5)
    d = entry["metrics"]["avg@4"]
    se = _se([0.25, 0.25, 0.0, 0.25, 0.0])
    assert d["diff"] == pytest.approx(0.15) and d["stderr"] == pytest.approx(se)
    assert d["low"] == pytest.approx(0.15 - 1.96 * se, abs=1e-4)
    assert d["high"] == pytest.approx(0.15 + 1.96 * se, abs=1e-4)
    assert paired["same"]["metrics"]["avg@4"] == {"diff": 0.0, "stderr": 0.0, "low": 0.0, "high": 0.0}
    assert set(entry["metrics"]) == {"avg@4", "maj@4"}

    summaries = {"sft": base.summary, "rl": {**rl.summary, evaluation.PAIRED: entry}}
    md = compare_markdown(summaries)
    assert "Difference from sft, paired over the same 5 problems" in md
    assert f"| avg@4 | +0.150 [{0.15 - 1.96 * se:+.3f}, {0.15 + 1.96 * se:+.3f}] |" in md
    assert f"| avg@4 stderr | {_se([0.0, 0.25, 1.0, 0.5, 0.75]):.3f} | {_se([0.25, 0.5, 1.0, 0.75, 0.75]):.3f} |" in md

    with pytest.raises(ValueError, match="different problems"):
        evaluation.paired_differences({"a": base, "b": _report([0.0] * 5, ["q0", "q1", "q2", "q3", "q4"])}, "a")


def test_chain_table_shows_errors_and_the_paired_difference():
    from stages.run import accuracy_table

    paired = {"reference": "sft", "problems": 96,
              "metrics": {"avg@4": {"diff": 0.107, "stderr": 0.03, "low": 0.048, "high": 0.166}}}
    summaries = {
        "base": {"n": 4, "avg@4": 0.0, "maj@4": 0.0, "mean_length": 94.0, "stderr": {"avg@4": 0.0, "maj@4": 0.0}},
        "sft": {"n": 4, "avg@4": 0.562, "maj@4": 0.656, "mean_length": 25.0, "stderr": {"avg@4": 0.04, "maj@4": 0.05}},
        "rl": {"n": 4, "avg@4": 0.669, "maj@4": 0.698, "mean_length": 21.0, "stderr": {"avg@4": 0.038, "maj@4": 0.047},
               evaluation.PAIRED: paired},
    }
    lines = accuracy_table(summaries).splitlines()
    assert lines[0] == "| stage | avg@4 | maj@4 | mean length | avg@4 - sft [95% CI] |"
    assert lines[3] == "| sft | 0.562 ± 0.040 | 0.656 ± 0.050 | 25 | reference |"
    assert lines[4] == "| rl | 0.669 ± 0.038 | 0.698 ± 0.047 | 21 | +0.107 [+0.048, +0.166] |"


@pytest.mark.vllm
def test_tiny_model_through_vllm(vllm_merged_engine, tiny_model_dir, tmp_path):
    from pipeline.core.models import load_tokenizer

    problems = [Problem(f"What is {i} + {i}?", str(2 * i), level=1 + i % 3, source="toy") for i in range(10)]
    result = evaluate_problems(vllm_merged_engine, load_tokenizer(tiny_model_dir), problems,
                               system_prompt="Be brief.", n=2, temperature=1.0, top_p=1.0, max_tokens=16,
                               k_list=(1, 2))
    result.to_json(tmp_path / "report.json")
    loaded = EvalReport.from_json(tmp_path / "report.json")
    assert len(loaded.samples) == 20 and sorted({s["problem"] for s in loaded.samples}) == list(range(10))
    for key in ("avg@2", "pass@1", "pass@2", "maj@2", "truncation_rate"):
        assert 0.0 <= loaded.summary[key] <= 1.0 and not math.isnan(loaded.summary[key])
    assert all(0 < s["length"] <= 16 for s in loaded.samples)
    assert set(loaded.summary["by_level"]) == {"1", "2", "3"}
