"""The command line's vocabulary (issue 22, item 3): every subcommand's parser walked, one definition and one
meaning per flag, one spelling per concept; a mistyped flag answered by its subcommand; a missing argument in one
line; an --out that holds a run refused before torch loads; the exit codes documented."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import alexnet
from alexnet.cli import build_parser, main

SRC = Path(alexnet.__file__).resolve().parents[1]
ROOT = SRC.parent

# The flags `alexnet.cli.flags` defines once: wherever one appears, that definition made it (never by hand).
SHARED = {
    "--weights": "add_weights_flags",
    "--prototxt": "add_weights_flags",
    "--mean": "add_weights_flags",
    "--labels": "add_weights_flags",
    "--trust-pickle": "add_weights_flags",
    "--device": "add_runtime_flags",
    "--precision": "add_runtime_flags",
    "--workers": "add_workers_flag",
    "--progress": "add_progress_flag",
    "--topk": "add_topk_flag",
    "--keep": "add_keep_flag",
    "--json": "add_json_flag",
    "--data": "add_data_arg",
    "--data-dir": "add_data_dir_alias",
}
# Spellings a concept had besides its own: each may live on only as a hidden alias of the one spelling.
OLD_SPELLINGS = {
    "-k": "--topk",
    "--top": "--top-misclassified",
    "--keep-checkpoints": "--keep",
    "--data-dir": "DATA / --data",
    "--allow-pickle": "--trust-pickle",
    "--no-progress": "--progress none",
}
LONG_RUNNING = {"predict", "neighbors", "evaluate", "features", "stats", "prepare", "train", "finetune", "demo",
                "ablate", "report"}  # fmt: skip


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every leaf subcommand's parser by its name (``plot filters``)."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix} {name}".strip()
                leaves = _commands(sub, full)
                out.update(leaves or {full: sub})
    return out


def _signature(a: argparse.Action) -> tuple:
    """What a flag means to a parser: where it lands, its type, its choices, how many values, its kind."""
    return (a.dest, getattr(a.type, "__name__", a.type), tuple(a.choices or ()), a.nargs, a.const, type(a).__name__)


COMMANDS = _commands(build_parser())


def test_the_walk_reaches_every_command():
    assert set(COMMANDS) == {
        "models", "predict", "convert", "export", "serve", "evaluate", "features", "neighbors", "plot filters",
        "plot curves", "plot confusion", "report", "stats", "prepare", "train", "finetune", "demo", "ablate", "info",
    }  # fmt: skip


def test_one_flag_one_meaning_and_one_definition():
    """Across every subcommand: a flag has one dest, type, set of choices, arity and kind; a shared flag is made by
    its one definition in cli/flags.py; a positional DATA is the one data argument."""
    seen: dict[str, tuple[str, tuple]] = {}
    problems = []
    for cmd, p in COMMANDS.items():
        for a in p._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            data_positional = not a.option_strings and (a.metavar == "DATA" or a.dest in ("data", "source"))
            if data_positional and (a.dest, getattr(a, "definition", None)) != ("data", "add_data_arg"):
                problems.append(f"{cmd}: positional {a.dest} is not add_data_arg's DATA")
            for flag in a.option_strings:
                sig = _signature(a)
                first = seen.setdefault(flag, (cmd, sig))
                if first[1] != sig:
                    problems.append(f"{flag}: {first[0]} {first[1]} but {cmd} {sig}")
                want = SHARED.get(flag)
                if want is not None and getattr(a, "definition", None) != want:
                    problems.append(f"{cmd} {flag}: declared by hand, not by flags.{want}")
    assert not problems, "\n".join(problems)


def test_one_spelling_per_concept():
    """An old spelling is at most a hidden alias; no visible action has two spellings (but --x/--no-x)."""
    problems = []
    for cmd, p in COMMANDS.items():
        for a in p._actions:
            visible = a.help != argparse.SUPPRESS
            for flag in a.option_strings:
                if flag in OLD_SPELLINGS and visible:
                    problems.append(f"{cmd}: {flag} is shown; the spelling is {OLD_SPELLINGS[flag]}")
            longs = [f for f in a.option_strings if f not in ("-h", "--help")]
            if visible and not isinstance(a, argparse.BooleanOptionalAction) and len(longs) > 1:
                problems.append(f"{cmd}: {' and '.join(longs)} spell one flag two ways")
    assert not problems, "\n".join(problems)


def test_long_commands_show_progress_and_every_command_speaks_json():
    flags = {cmd: {f for a in p._actions for f in a.option_strings} for cmd, p in COMMANDS.items()}
    assert [c for c in LONG_RUNNING if "--progress" not in flags[c]] == []
    assert [c for c in COMMANDS if "--json" not in flags[c] and c != "serve"] == []


def test_a_mistyped_flag_shows_its_commands_usage_and_the_nearest_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", "x.jpg", "--topk2", "3"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("usage: alexnet predict ")
    assert err.splitlines()[-1] == "alexnet predict: error: unrecognized arguments: --topk2 3 (did you mean --topk?)"
    with pytest.raises(SystemExit):
        main(["plot", "filters", "--weights", "w.safetensors", "--size", "600x500"])
    err = capsys.readouterr().err
    assert err.startswith("usage: alexnet plot filters ")
    assert err.splitlines()[-1] == (
        "alexnet plot filters: error: unrecognized arguments: --size 600x500 (did you mean --figure-size?)"
    )
    with pytest.raises(SystemExit):
        main(["neighbors", "q.jpg", "--index", "i.safetensors", "--bogus"])
    assert capsys.readouterr().err.splitlines()[-1] == "alexnet neighbors: error: unrecognized arguments: --bogus"


def test_a_missing_required_argument_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["features", "data"])
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        "alexnet features: error: the following arguments are required: --weights, --out "
        "(see alexnet features --help)\n"
    )


def test_old_spellings_still_work_as_hidden_aliases():
    parser = build_parser()
    assert parser.parse_args(["neighbors", "q.jpg", "--index", "i", "-k", "3"]).topk == 3
    assert parser.parse_args(["report", "run", "--top", "5"]).top_misclassified == 5
    assert parser.parse_args(["ablate", "d", "--keep-checkpoints"]).keep == "all"
    assert parser.parse_args(["demo", "--data-dir", "f"]).data_dir == "f"
    assert parser.parse_args(["predict", "x.jpg", "--allow-pickle"]).trust_pickle is True
    assert parser.parse_args(["evaluate", "d", "--weights", "w", "--no-progress"]).progress == "none"
    assert "progress" not in vars(parser.parse_args(["train", "d"]))  # a config key: absent unless typed


def _run_without_torch(args: list[str]) -> tuple[int, str, bool]:
    """Run the command in a fresh interpreter: (exit code, stderr, whether torch was imported)."""
    code = (
        "import sys, io, contextlib\n"
        "from alexnet.cli import main\n"
        "err = io.StringIO()\n"
        "with contextlib.redirect_stderr(err):\n"
        f"    rc = main({args!r})\n"
        "print(rc, 'torch' in sys.modules)\n"
        "print(err.getvalue(), end='')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    first, _, rest = r.stdout.partition("\n")
    rc, torch_loaded = first.split()
    return int(rc), rest.strip(), torch_loaded == "True"


def test_an_out_that_holds_a_run_is_refused_before_torch_loads(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"epochs": 3}))
    (run / "metrics.csv").write_text("epoch,lr\n1,0.01\n")
    rc, err, torch_loaded = _run_without_torch(["train", str(tmp_path), "--out", str(run)])
    assert (rc, torch_loaded) == (1, False)
    assert err == (
        f"alexnet train: error: {run} holds a run, epoch 1 of 3: continue it with --resume {run}, or choose "
        f"another --out, or pass --overwrite to start it afresh"
    )
    rc, err, torch_loaded = _run_without_torch(["features", str(tmp_path), "--weights", "w", "--out", str(run)])
    assert (rc, torch_loaded) == (1, False)
    assert err == f"alexnet features: error: {run}: is a folder; name the file to write, e.g. {run / 'out'}"


def test_exit_codes_are_documented():
    for doc in ("README.md", "docs/ARCHITECTURE.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert "## Exit codes" in text or "### Exit codes" in text, doc
        section = text.split("xit codes", 1)[1][:1500]
        for code in ("`0`", "`1`", "`2`", "`130`", "`143`"):
            assert code in section, (doc, code)
