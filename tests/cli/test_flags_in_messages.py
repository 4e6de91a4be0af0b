"""Every flag an error message suggests exists on the command that printed it (issues 12.7, 21).

Library errors name the library parameter (``UserError(..., param="mc_samples")``); the CLI shows
it as the running command's flag. Two checks: each command's own module is scanned for the flags
its messages spell, and each command is made to fail in the ways a user meets, with every flag of
every message looked up among that command's options.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import typer

from uncert_cli.cli.flags import all_flags, render_for_command
from uncert_cli.cli.main import app, main
from uncert_cli.errors import UserError
from uncert_cli.models import MLP

CLI = Path(__file__).resolve().parents[2] / "src" / "uncert_cli" / "cli"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# A flag of another command may be named inside a quoted command line: `uncert fit CKPT --arch ...`
# or 'uncert fit CHECKPOINT --data SPEC'.
OTHER_COMMAND = re.compile(r"([`'])uncert [^`']*\1")


def flags_in(text: str) -> set[str]:
    return set(FLAG.findall(OTHER_COMMAND.sub("", text)))


def command(name: str):
    return typer.main.get_command(app).commands[name]


COMMANDS = sorted(typer.main.get_command(app).commands)


def test_user_error_speaks_of_the_parameter_and_the_cli_of_the_flag():
    error = UserError("{param} must be at least 1, got 0; lower {batch_size}", param="mc_samples",
                      mentions=("batch_size",))
    assert str(error) == "mc_samples must be at least 1, got 0; lower batch_size"
    assert error.param == "mc_samples"
    shown = render_for_command(error, command("fit"))
    assert shown == "--mc-samples must be at least 1, got 0; lower --batch-size"
    # A command without the option gets the parameter's name, never an invented flag.
    assert render_for_command(error, command("report")) == str(error)


def test_library_errors_reach_the_cli_as_flags(run_cli, digits_checkpoint, tmp_path):
    r = run_cli("fit", digits_checkpoint, "--data", "digits", "--method", "diag", "--rank", "3", "-o", tmp_path / "f.h5")
    assert r.code == 2 and "--rank applies to --method lowrank" in r.err
    from uncert_cli.data import iter_batches, load_dataset

    with pytest.raises(UserError, match="^batch_size must be a whole number") as info:
        next(iter_batches(load_dataset("iris"), 0))
    assert "--" not in str(info.value)  # a Python caller is not told about flags


def test_output_folder_messages_name_no_flag(tmp_path):
    # Shared by fit, prune, toy and tune (which has no -o): the message must not suggest "-o".
    from uncert_cli.atomic import check_output_path

    with pytest.raises(UserError) as info:
        check_output_path(tmp_path / "missing" / "f.h5")
    for name in ("fit", "tune", "toy"):
        shown = render_for_command(info.value, command(name))
        assert " -o" not in shown and not flags_in(shown) - all_flags(command(name)), shown


def _user_error_texts(path: Path) -> list[str]:
    """The string parts of every ``UserError(...)`` message in ``path``."""
    texts = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "UserError" and node.args:
            parts = [n.value for n in ast.walk(node.args[0]) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            texts.append(" ".join(parts))
    return texts


def test_placeholders_are_not_interpolated_by_f_strings():
    # f"... {param}" would put a local variable (or raise NameError) where the flag belongs: in an
    # f-string the placeholder must be written {{param}}.
    wrong = []
    for path in CLI.parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "UserError" and node.args:
                for part in ast.walk(node.args[0]):
                    if isinstance(part, ast.FormattedValue) and getattr(part.value, "id", None) == "param":
                        wrong.append(f"{path.name}:{node.lineno}")
    assert not wrong


@pytest.mark.parametrize("name", [n for n in COMMANDS if (CLI / f"{n}.py").exists()])
def test_each_command_module_names_only_its_own_flags(name):
    texts = _user_error_texts(CLI / f"{name}.py")
    wrong = {flag for text in texts for flag in flags_in(text)} - all_flags(command(name))
    assert not wrong, f"uncert {name}'s messages name {sorted(wrong)}, which it does not have"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, digits_checkpoint) -> Path:
    out = tmp_path_factory.mktemp("fit") / "digits.h5"
    assert main(["fit", str(digits_checkpoint), "--data", "digits", "--limit", "64", "-o", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_checkpoint, fitted) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    state_dict = folder / "weights.pt"
    torch.save(MLP(64, [16], 10).state_dict(), state_dict)
    wide_labels = folder / "labels12.npz"
    np.savez(wide_labels, x=np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32), y=np.full(20, 12))
    no_arch = folder / "no_arch.h5"
    no_arch.write_bytes(fitted.read_bytes())
    with h5py.File(no_arch, "r+") as f:  # a file written without an architecture to rebuild
        meta = json.loads(f["model"].attrs["meta"])
        f["model"].attrs["meta"] = json.dumps({**meta, "arch": ""})
    return {"ckpt": digits_checkpoint, "factors": fitted, "state_dict": state_dict, "labels12": wide_labels,
            "no_arch": no_arch, "missing": folder / "missing" / "x"}


# (command, arguments) that fail with a message; "{name}" is replaced by files[name].
FAILURES = [
    ("info", ["{state_dict}"]),
    ("info", ["{missing}.safetensors"]),
    ("fit", ["{ckpt}", "--data", "digits", "--max-memory", "1KiB", "-o", "{missing}.h5"]),
    ("fit", ["{ckpt}", "--data", "digits", "-o", "{missing}.h5"]),
    ("fit", ["{ckpt}", "--data", "digits", "--method", "diag", "--rank", "2"]),
    ("fit", ["{ckpt}", "--data", "digits", "--method", "lowrank", "--rank", "99999"]),
    ("fit", ["{ckpt}", "--data", "digits", "--method", "lowrank", "--fisher", "mc", "--limit", "8"]),
    ("fit", ["{ckpt}", "--data", "digits", "--subset", "nope"]),
    ("fit", ["{ckpt}", "--data", "{labels12}"]),
    ("fit", ["{ckpt}", "--data", "digits", "--max-memory", ""]),
    ("fit", ["{state_dict}", "--data", "digits"]),
    ("fit", ["{ckpt}", "--data", "digits", "--layers", "fc1", "--subset", "fc2"]),
    ("report", ["{missing}.h5"]),
    ("report", ["{factors}", "--device", "cuda"]),
    # report and prune -o need no class (they answer from the stored weights); running the network does
    ("ood", ["{no_arch}", "--data", "digits", "--limit", "8"]),
    ("prune", ["{no_arch}", "--evaluate", "--data", "digits", "--limit", "8"]),
    ("tune", ["{no_arch}", "--objective", "val-nll", "--data", "digits", "--split", "val", "--limit", "8"]),
    ("ood", ["{factors}", "--predictive", "nope", "--data", "digits"]),
    ("ood", ["{factors}", "--data", "digits", "--resize", "0,3", "--against", "digits"]),
    ("ood", ["{factors}", "--data", "digits", "--prior-mode", "nope", "--against", "digits", "--limit", "32"]),
    ("attack", ["{factors}", "--data", "digits", "--target", "99"]),
    ("attack", ["{factors}", "--data", "digits", "--step-sizes", "x"]),
    ("attack", ["{factors}", "--data", "digits", "--mode", "sideways"]),
    ("attack", ["{factors}", "--data", "digits", "--predictive", "probit"]),
    ("prune", ["{factors}"]),
    ("prune", ["{factors}", "-o", "x.safetensors"]),
    ("prune", ["{factors}", "--fraction", "0.5", "-o", "x.pt"]),
    ("prune", ["{factors}", "--evaluate", "--fractions", "2"]),
    ("track", ["{missing}.safetensors"]),
    ("track", ["{ckpt}", "{state_dict}", "--data", "digits"]),
    ("tune", ["{missing}.h5"]),
    ("tune", ["{factors}", "--objective", "val-nll", "--data", "{labels12}"]),
    ("tune", ["{factors}", "--objective", "val-nll", "--data", "cifar10", "--data-root", "{missing}"]),
    ("ood", ["{factors}", "--data", "digits", "--against", "kmnist", "--data-root", "{missing}"]),
    ("toy", ["--methods", "nope"]),
    ("toy", ["{missing}.safetensors"]),
]


@pytest.mark.parametrize("name,args", FAILURES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(FAILURES)])
def test_messages_name_only_flags_of_their_command(run_cli, files, tmp_path, monkeypatch, name, args):
    monkeypatch.chdir(tmp_path)
    argv = [re.sub(r"\{(\w+)\}", lambda m: str(files[m.group(1)]), a) for a in args]
    r = run_cli(name, *argv)
    assert r.code == 2, (r.code, r.err)
    wrong = flags_in(r.err) - all_flags(command(name))
    assert not wrong, f"uncert {name} suggests {sorted(wrong)}, which it does not have: {r.err}"


def test_allocation_failures_name_the_commands_size_options():
    from uncert_cli.cli.flags import is_out_of_memory, out_of_memory_message

    with pytest.raises(RuntimeError) as info:
        torch.empty(2**50)  # 4 PiB of float32: the allocator refuses at once
    assert is_out_of_memory(info.value) and not is_out_of_memory(RuntimeError("mat1 and mat2 shapes"))
    message = out_of_memory_message(info.value, command("ood"))
    assert message.startswith("out of memory (") and "lower --batch-size, --samples" in message
    assert not flags_in(message) - all_flags(command("ood"))
    assert "--batch-size" not in out_of_memory_message(MemoryError(), command("report"))
