"""The preflight's data errors name the config keys behind them (stages/preflight/data.py `load_stage_problems`)."""

from __future__ import annotations

import json

import pytest

from pipeline.config import DataError, load_config
from stages.preflight.data import check_rl_data, check_sft_data

ROWS = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i), "solution": f"\\boxed{{{2 * i}}}", "level": 1}
        for i in range(4)]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def files(tmp_path):
    """A train file in a custom layout (`question`), a test file in ours (`problem`)."""
    custom = [{"question": row["problem"], **{k: v for k, v in row.items() if k != "problem"}} for row in ROWS]
    return _jsonl(tmp_path / "train.jsonl", custom), _jsonl(tmp_path / "test.jsonl", ROWS)


@pytest.mark.parametrize("mapping", ["data.columns={problem: question}", "data.preset=gsm8k"])
def test_a_column_mapping_for_data_train_also_applies_to_data_test(files, mapping):
    train, test = files
    config = load_config(None, [f"data.train={train}", f"data.test={test}", mapping])
    with pytest.raises(DataError) as info:
        check_rl_data(config)
    message = str(info.value)
    assert message.startswith(f"data.test: {test}") and mapping.split("=")[0] in message
    assert "apply to data.test too: set data.test to a held-out file in the same layout as data.train" in message


@pytest.mark.parametrize("overrides, key", [
    (["rl.levels=[5]"], "the filter is rl.levels=[5]"),
    (["data.levels=[5]"], "the filter is data.levels=[5]"),
    (["data.sources=[nowhere]"], "the filter is data.sources=['nowhere']"),
])
def test_an_empty_filter_names_its_key(tmp_path, overrides, key):
    data = _jsonl(tmp_path / "train.jsonl", ROWS)
    config = load_config(None, [f"data.train={data}", f"data.test={data}", *overrides])
    with pytest.raises(DataError, match="no problems left after filtering") as info:
        (check_sft_data if overrides[0].startswith("data.") else check_rl_data)(config)
    assert key in str(info.value)
