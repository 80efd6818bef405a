"""The `rlvr` command line: the preflight before any model loads, --dry-run, --print-config, --help,
hints in the stage's terms, and every example command of the README and the stages' docstrings."""

from __future__ import annotations

import ast
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

import rewards
from pipeline.config import Config, load_config
from pipeline.data.problems import load_problems_for
from pipeline.data.subsets import split_holdout
from pipeline.eval.evaluation import load_eval_problems
from pipeline.supervised.sft import with_solutions
from stages import cli, evaluate, export, preflight, rl, sft
from stages.catalog import CHAIN, COMMANDS, STAGES
from stages.common import first_sentence

REPO = Path(__file__).resolve().parents[1]
ROWS = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i), "solution": f"{i} + {i} = {2 * i}. \\boxed{{{2 * i}}}",
         "level": 1} for i in range(6)]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working directory with train/test files; returns (folder, the overrides naming them)."""
    monkeypatch.chdir(tmp_path)
    train, test = _jsonl(tmp_path / "train.jsonl", ROWS), _jsonl(tmp_path / "test.jsonl", ROWS)
    return tmp_path, [f"output_dir={tmp_path / 'run'}", f"data.train={train}", f"data.test={test}",
                      f"eval.dataset={test}"]


@pytest.fixture
def no_training(forbid):
    """Stage mains that fail the test if reached: the preflight must stop the run first."""
    forbid("the stage started although a check should have failed", (sft, "run_sft"), (rl, "Trainer"),
           (evaluate, "run_eval"), (export, "export_model"))


def _fails(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    message = str(info.value.code)
    assert info.value.code not in (0, None) and "\n" not in message and "Traceback" not in message
    return message


# ---- checks before any model loads ------------------------------------------------------------


def test_adapter_folder_without_adapter_config(workdir, no_training):
    tmp_path, overrides = workdir
    (tmp_path / "sft_out").mkdir()
    (tmp_path / "sft_out" / "adapter").mkdir()
    (tmp_path / "sft_out" / "adapter" / "adapter_config.json").write_text("{}")
    message = _fails(["sft", *overrides, f"model.adapter={tmp_path / 'sft_out'}"])
    assert message.startswith("rlvr sft: model.adapter: ") and "no adapter_config.json" in message
    assert f"found: {tmp_path / 'sft_out' / 'adapter'}" in message
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "config.json").write_text("{}")
    message = _fails(["sft", *overrides, f"model.adapter={tmp_path / 'full'}"])
    assert "is a full model folder" in message and f"model.name={tmp_path / 'full'}" in message
    assert "checkpoint folder not found" in _fails(["rl", *overrides, "model.adapter=nowhere/adapter"])


def test_model_name_is_checked_without_loading(workdir, no_training):
    tmp_path, overrides = workdir
    assert "model.name: GGUF file not found" in _fails(["sft", *overrides, "model.name=nowhere.gguf"])
    (tmp_path / "empty").mkdir()
    assert "is a folder without config.json" in _fails(["sft", *overrides, f"model.name={tmp_path / 'empty'}"])


@pytest.mark.parametrize("inside", [False, True])
def test_output_dir_that_is_a_file(workdir, no_training, inside):
    tmp_path, overrides = workdir
    (tmp_path / "taken").write_text("a file")
    output = tmp_path / "taken" / "run" if inside else tmp_path / "taken"
    message = _fails(["sft", *overrides, f"output_dir={output}"])
    assert f"output_dir: {tmp_path / 'taken'} is a file, not a folder" in message


@pytest.mark.parametrize("stage, taken, folder", [
    ("rl", "rl", True), ("rl", "rl/final", True), ("rl", "rl/final/adapter", True), ("sft", "sft", True),
    ("dpo", "dpo/adapter", True), ("eval", "eval", True), ("export", "export/model", True),
    ("run", "reward_model", True), ("rl", "rl/metrics.json", False), ("run", "manifest.json", False),
])
def test_a_file_where_a_stage_writes_a_folder(workdir, no_training, stage, taken, folder):
    """A file where the stage writes a folder (or a folder where it writes a file): one line naming the
    path before anything runs, not a FileExistsError."""
    tmp_path, overrides = workdir
    path = tmp_path / "run" / taken
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a file") if folder else path.mkdir()
    args = [stage, *overrides, "--overwrite"] + (["--checkpoint", str(tmp_path)] if stage == "export" else [])
    for dry_run in ([], ["--dry-run"]):
        message = _fails(args + dry_run)
        assert f"output_dir: {path} is a {'file' if folder else 'folder'}, but `rlvr {stage}` writes" in message


def test_sft_on_data_without_worked_solutions(workdir, no_training):
    tmp_path, overrides = workdir
    bare = _jsonl(tmp_path / "bare.jsonl", [{k: v for k, v in row.items() if k != "solution"} for row in ROWS])
    message = _fails(["sft", *overrides, f"data.train={bare}"])
    assert "data.train" in message and "0 of 6 problems have a worked solution" in message
    assert "`solution` column" in message and "data.columns.solution" in message


def test_data_errors_name_the_key(workdir, no_training):
    tmp_path, overrides = workdir
    (tmp_path / "datasets").mkdir()
    _jsonl(tmp_path / "datasets" / "train.jsonl", ROWS)
    message = _fails(["sft", *overrides, "data.train=datasets/train"])
    assert message == ("rlvr sft: data.train: data file not found: datasets/train "
                       "(did you mean datasets/train.jsonl?)")
    assert _fails(["rl", *overrides, "data.test=datasets/tset.jsonl"]).startswith("rlvr rl: data.test: ")
    assert _fails(["eval", *overrides, "eval.dataset=nope.jsonl"]).startswith("rlvr eval: eval.dataset: ")
    assert _fails(["dpo", *overrides, "dpo.pairs=pairs.jsonl"]).startswith("rlvr dpo: dpo.pairs: ")


def _adapter(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    return folder


def test_checkpoint_not_found_lists_only_checkpoints_of_the_same_run(workdir, no_training):
    """The hint lists adapters and stage-written models of the output_dir the path points into (closest
    first), never base models or folders elsewhere; a path outside any run gets no hint."""
    tmp_path, overrides = workdir
    run = tmp_path / "run"
    _adapter(run / "rl" / "final" / "adapter"), _adapter(run / "sft" / "adapter")
    (run / "reward_model" / "model").mkdir(parents=True)
    (run / "reward_model" / "model" / "config.json").write_text("{}")
    (tmp_path / "models" / "base").mkdir(parents=True)
    (tmp_path / "models" / "base" / "config.json").write_text("{}")
    _adapter(tmp_path / "other_run" / "sft" / "adapter")
    message = _fails(["eval", *overrides, "--compare", "base", "rl=run/rl/final/adaptr", "--dry-run"])
    assert message.endswith("checkpoint 'rl': checkpoint folder not found: run/rl/final/adaptr "
                            "(found: run/rl/final/adapter, run/sft/adapter)")
    for missing in ("/nonexistent", "nowhere/adapter", str(tmp_path / "elsewhere" / "adapter")):
        message = _fails(["eval", *overrides, "--compare", "base", f"x={missing}", "--dry-run"])
        assert message.endswith(f"checkpoint folder not found: {missing}"), message
        message = _fails(["rl", *overrides, f"model.adapter={missing}", "--dry-run"])
        assert message.endswith(f"model.adapter: checkpoint folder not found: {missing}"), message


def test_lora_rank_over_the_engine_limit_where_sync_auto_resolves_to_adapter(workdir, no_training):
    """`rollout.sync: auto` is adapter on a GPU: decided in the preflight, naming both keys."""
    pytest.importorskip("vllm")
    tmp_path, overrides = workdir
    message = _fails(["rl", *overrides, "device=cuda", "rollout.engine=vllm", "lora.rank=32", "--dry-run"])
    assert "lora.rank=32 exceeds rollout.max_lora_rank=16" in message and "(rollout.sync=auto: adapter on cuda)" in message
    assert "lora.rank=32" in _fails(["run", *overrides, "device=cuda", "rollout.engine=vllm", "lora.rank=32", "--dry-run"])
    # an adapter's own rank: the one RL starts from, the ones eval serves
    wide = _adapter(tmp_path / "wide")
    (wide / "adapter_config.json").write_text(json.dumps({"r": 32}))
    gpu = ["device=cuda", "rollout.engine=vllm", "--dry-run"]
    message = _fails(["rl", *overrides, f"model.adapter={wide}", *gpu])
    assert message.endswith(f"model.adapter: {wide} is a LoRA adapter of rank 32, above rollout.max_lora_rank=16, the "
                            "largest rank vLLM accepts with adapter sync (rollout.sync=auto); raise "
                            "rollout.max_lora_rank to at least 32")
    assert f"checkpoint 'x': {wide} is a LoRA adapter of rank 32" in _fails(
        ["eval", *overrides, "--compare", "base", f"x={wide}", *gpu])
    cli.main(["eval", *overrides, "--compare", "base", f"x={wide}", "rollout.max_lora_rank=32", *gpu])


@pytest.mark.parametrize("stage, terms, message", [
    ("rl", "[{name: accuracy, params: {extract: boxd}}]",
     "reward.terms[0] (accuracy): unknown extract mode 'boxd'; valid: boxed, answer_tag, last_number"),
    ("eval", "[{name: accuracy, params: {correct: abc}}]", "reward.terms[0] (accuracy): could not convert"),
    ("rl", "[{name: accuracy}, {name: format, params: {answer: box}}]",
     "reward.terms[1] (format): unknown answer style 'box'"),
    ("rl", "[{name: soft_overlong, params: {cache: 4096}}]",
     "reward.terms[0] (soft_overlong): soft_overlong needs 1 <= cache <= max_tokens (256), got 4096"),
    ("rl", "[{name: code, params: {float_tolerance: -1, allow_unsandboxed: true}}]",
     "reward.terms[0] (code): float_tolerance must be >= 0"),
    ("rl", "[{name: reward_model, params: {path: nowhere}}]",
     "reward.terms[0] (reward_model): reward_model: 'nowhere' is not a reward model folder"),
    ("rl", "[{name: code, params: {allow_unsandboxed: true}}]",
     "reward 'code' needs column(s) 'tests', which this data does not have"),
])
def test_reward_parameter_values_and_columns_are_checked_before_a_model_loads(workdir, no_training, stage,
                                                                              terms, message):
    """The factories build in the preflight (as RL builds them), so a bad value or a missing column fails there."""
    _, overrides = workdir
    assert message in _fails([stage, *overrides, f"reward.terms={terms}", "--dry-run"])
    assert message in _fails([stage, *overrides, f"reward.terms={terms}"])


def test_a_reward_model_the_chain_trains_first_is_not_required_before_the_run(workdir, capsys):
    tmp_path, overrides = workdir
    terms = f"reward.terms=[{{name: reward_model, params: {{path: {tmp_path / 'run' / 'reward_model' / 'model'}}}}}]"
    cli.main(["run", *overrides, terms, "--dry-run"])
    assert "dry run: every check passed" in capsys.readouterr().out
    assert "not a reward model folder" in _fails(["rl", *overrides, terms, "--dry-run"])


def test_unreachable_hub_dataset_fails_in_the_preflight(workdir, no_training, monkeypatch):
    import huggingface_hub

    def unreachable(self, repo, timeout=None, **_):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", unreachable)
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    _, overrides = workdir
    message = _fails(["sft", *overrides, "data.train=openai/gsm8k:main"])
    assert message.startswith("rlvr sft: data.train: cannot reach the Hugging Face hub for 'openai/gsm8k:main'")


@pytest.mark.parametrize("stage, override, hint", [
    ("rl", "beta=0.04", "'algorithm.kl_coef'"),
    ("dpo", "beta=0.2", "'dpo.beta'"),
    ("sft", "learning_rate=1e-5", "'sft.lr'"),
    ("reward-model", "learning_rate=1e-5", "'reward_model.lr'"),
    ("rl", "num_generations=4", "'rl.group_size'"),
    ("eval", "temperature=0.7", "'eval.temperature'"),
])
def test_unknown_key_hint_is_in_the_stage_terms(workdir, stage, override, hint):
    _, overrides = workdir
    message = _fails([stage, *overrides, override])
    assert f"unknown key {override.split('=')[0]!r} (did you mean {hint}?)" in message


# ---- --dry-run, --print-config, --help ----------------------------------------------------------


@pytest.mark.parametrize("stage", ["prepare-model", "sft", "reward-model", "dpo", "rl", "eval", "run"])
def test_dry_run_checks_and_writes_nothing(workdir, no_training, stage, capsys):
    tmp_path, overrides = workdir
    cli.main([stage, *overrides, "--dry-run"])
    out = capsys.readouterr().out
    assert f"rlvr {stage}: dry run: every check passed" in out and "model.name: smollm2-135m-instruct" in out
    assert not (tmp_path / "run").exists()
    if stage in ("sft", "run"):
        assert "6 problems, 6 used for SFT" in out
    if stage in ("eval", "run"):
        assert "eval.dataset" in out


def test_print_config_is_the_resolved_yaml_of_the_stage(workdir, capsys):
    _, overrides = workdir
    cli.main(["rl", *overrides, "algorithm.preset=dapo", "rl.lr=3e-6", "--print-config"])
    text = capsys.readouterr().out
    data = yaml.safe_load(text)
    assert set(data) == {"output_dir", "seed", "device", *STAGES["rl"].sections}
    config = Config.model_validate(data)
    assert config.algorithm.policy_loss.eps_high == 0.28 and config.rl.lr == 3e-6  # preset applied, override kept
    lines = [line for line in text.splitlines()[1:]]
    keys = [i for i, line in enumerate(lines) if not line.lstrip().startswith("#")]
    assert keys and all(lines[i - 1].lstrip().startswith("# ") for i in keys)
    cli.main(["sft", *overrides, "--print-config"])
    assert "algorithm" not in yaml.safe_load(capsys.readouterr().out)


def test_stage_help_lists_keys_defaults_and_writes(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["rl", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert re.search(r"rl\.group_size = 8 +G: completions sampled per prompt", out)
    assert re.search(r"algorithm\.kl_coef = 0\.04 ", out) and "rollout.max_tokens = 256" in out
    # the policy loss's settings key by key, as they are overridden (algorithm.policy_loss.eps=0.1)
    assert re.search(r"algorithm\.policy_loss\.type = ppo_clip +Selects this loss", out)
    assert re.search(r"algorithm\.policy_loss\.eps = 0\.2 +Clip range", out)
    assert "writes (under output_dir):" in out and "rl/metrics.json" in out
    with pytest.raises(SystemExit):
        cli.main(["sft", "--help"])
    out = capsys.readouterr().out
    assert "sft.lr = 0.0002" in out and "algorithm." not in out and "sft/adapter/" in out


@pytest.mark.parametrize("stage", list(COMMANDS))
def test_stage_help_shows_each_keys_first_sentence_whole(stage, capsys):
    """No key's help stops mid-sentence: its docstring's first sentence is there in full (wrapped)."""
    with pytest.raises(SystemExit):
        cli.main([stage, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    sections = [Config.model_fields[name].annotation for name in COMMANDS[stage].sections if "." not in name]
    for section in sections:
        for name, field in section.model_fields.items():
            if isinstance(getattr(section(), name, None), BaseModel):
                continue  # a nested section (the policy loss's settings) is listed key by key
            sentence = first_sentence(field.description)
            assert sentence and " ".join(sentence.split()) in out, f"{name}: {sentence}"
            assert sentence.endswith((".", ")", "`")) or sentence == " ".join(field.description.split()), sentence


def test_the_readme_names_what_run_runs():
    """The README's `rlvr run` line lists the catalog's chain, and says which listed stages it leaves out."""
    line = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("rlvr run configs/"))
    comment = line.split("#", 1)[1]
    assert ", ".join(CHAIN) in comment and "above" not in comment
    assert all(f"not {name}" in comment for name in COMMANDS if name not in (*CHAIN, "run"))


def test_rlvr_help_and_run_help_agree_on_the_chain(capsys):
    cli.main(["--help"])
    top = capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    run_help = capsys.readouterr().out
    chain = ", ".join(CHAIN)
    assert f"run            the whole chain: {chain}" in top and f"the whole chain: {chain}" in run_help
    assert all(f"  {name} " in top for name in COMMANDS)


# ---- every example command works as written ---------------------------------------------------------


def _example_commands() -> list[str]:
    """Every `rlvr` command of the README and the stages' docstrings: lines that start with one, and
    inline code spans naming a stage (`rlvr run configs/demo.yaml` in a sentence)."""
    readme = (REPO / "README.md").read_text()
    texts = [readme]
    texts += [ast.get_docstring(ast.parse(path.read_text())) or "" for path in sorted((REPO / "stages").glob("*.py"))]
    commands = [line.strip().split(" #")[0].strip() for text in texts for line in text.splitlines()
                if line.strip().startswith("rlvr ")]
    commands += [span for span in re.findall(r"`(rlvr [^`]+)`", readme) if span.split()[1] in COMMANDS]
    return list(dict.fromkeys(commands))


def _create_inputs(argv: list[str], root: Path) -> None:
    """Stand-ins for a prior stage's outputs the command names (runs/...): pairs files, adapter folders;
    `rlvr export` without --checkpoint reads RL's final adapter."""
    if argv[0] == "export" and "--checkpoint" not in argv:
        argv = [*argv, "runs/demo/rl/final/adapter"]
    for token in argv:
        value = token.split("=", 1)[-1]
        if not value.startswith("runs/"):
            continue
        path = root / value
        if path.suffix in (".jsonl", ".json"):
            path.parent.mkdir(parents=True, exist_ok=True)
            _jsonl(path, [{"prompt": "1+1?", "chosen": "\\boxed{2}", "rejected": "\\boxed{3}"}])
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "adapter_config.json").write_text("{}")


def _stand_in_cluster(argv: list[str], monkeypatch) -> None:
    """The machine a cluster example is written for: GPUs when it asks for some, a running Ray for
    `cluster.address=auto` (this one may have neither: stages/preflight/cluster.py `check_cluster`)."""
    if any(token.startswith("cluster.gpus_per_") for token in argv):
        monkeypatch.setattr(preflight.cluster.torch.cuda, "device_count", lambda: 64)
    if "cluster.address=auto" in argv:
        monkeypatch.setattr(preflight.cluster, "get_ray_address_from_environment", lambda address, temp_dir: "10.0.0.1:6379")


def test_the_readme_has_example_commands():
    commands = _example_commands()
    assert len(commands) >= 10 and any(c.startswith("rlvr eval") and "--compare" in c for c in commands)


@pytest.mark.parametrize("command", _example_commands())
def test_example_command_passes_dry_run(command, tmp_path, monkeypatch, capsys):
    for name in ("configs", "datasets"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(command)[1:]
    _create_inputs(argv, tmp_path)
    _stand_in_cluster(argv, monkeypatch)
    try:
        cli.main(argv + ([] if "--help" in argv else ["--dry-run"]))
    except SystemExit as exc:
        assert exc.code in (0, None), f"{command}: {exc.code}"
    out = capsys.readouterr().out
    assert "dry run: every check passed" in out or "usage" in out


def _doc_block(text: str, first_line: str) -> str:
    """The fenced code block of `text` whose first line is `first_line`."""
    return next(block for block in re.findall(r"```\w*\n(.*?)```", text, re.S) if block.startswith(first_line))


def test_the_documented_reward_file_example_works_from_another_folder(workdir, capsys):
    """docs/rewards.md's worked example as written: my_rewards.py next to the recipe, the recipe run from
    another working directory; the relative file path resolves from the recipe's folder."""
    tmp_path, overrides = workdir
    docs = (REPO / "docs" / "rewards.md").read_text()
    recipe = tmp_path / "recipes"
    recipe.mkdir()
    (recipe / "my_rewards.py").write_text(_doc_block(docs, "# my_rewards.py"))
    (recipe / "config.yaml").write_text(_doc_block(docs, "reward:\n  terms:\n    - {name: accuracy"))
    cli.main(["rl", str(recipe / "config.yaml"), *overrides, "--dry-run"])
    assert "dry run: every check passed" in capsys.readouterr().out
    config = load_config(recipe / "config.yaml")
    assert config.reward.terms[1].name == f"{recipe / 'my_rewards.py'}:len_penalty"
    with rewards.RewardScorer(config.reward.terms[1:]) as scorer:
        assert scorer(["x" * 1001, "short"]).components == {"len_penalty": [-1.0, 0.0]}
    # on the command line the path is the working directory's
    message = _fails(["rl", *overrides, "reward.terms=[{name: 'my_rewards.py:len_penalty'}]", "--dry-run"])
    assert "file 'my_rewards.py' not found" in message


def test_the_readmes_demo_numbers_are_what_the_code_selects():
    """The CPU-demo paragraph's SFT, preference and evaluation counts, recomputed from the shipped data
    by the stages' own selection code (no model)."""
    text = " ".join((REPO / "README.md").read_text().split())
    used, trained, held = map(int, re.search(r"SFT on (\d+) worked solutions of levels 1-2 "
                                             r"\(`sft.max_examples`; (\d+) trained on, (\d+) held out\)", text).groups())
    config = load_config(REPO / "configs" / "demo.yaml")
    data = config.data.model_copy(update={"train": str(REPO / config.data.train)})
    solved = with_solutions(load_problems_for(data, "train", seed=config.seed), config.sft.max_examples, config.seed)
    train, held_out = split_holdout(solved, config.sft.eval_fraction, config.seed)
    assert (used, trained, held) == (len(solved), len(train), len(held_out))
    assert f"({config.reward_model.num_problems} level 1-2 problems x {config.reward_model.samples_per_problem} " \
           f"samples" in text and f"at most {config.reward_model.pairs_per_problem} pairs a problem" in text
    eval_problems = load_eval_problems(str(REPO / config.eval.dataset), split=config.eval.split,
                                       levels=config.eval.levels, limit=config.eval.problems, seed=config.eval.seed)
    assert f"the same {len(eval_problems)} held-out level-1 problems, avg@{config.eval.n}" in text
    assert f"{config.rl.steps} steps x {config.rl.prompts_per_step} prompts x {config.rl.group_size} samples" in text
