"""The devcontainer and VS Code tasks (issue 19, as Microsoft's Azure Functions samples ship
them) name only things this repository has: make targets, the sandbox commands, the ports."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][a-z-]*):", text, flags=re.MULTILINE))


def test_the_devcontainer_installs_with_make_and_forwards_the_sandbox_ports() -> None:
    config = json.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text(encoding="utf-8"))

    assert config["postCreateCommand"] == "make install"
    assert "install" in _make_targets()
    assert {7071, 7101, 7102} <= set(config["forwardPorts"])  # sandbox up's default ports


def test_every_task_runs_a_make_target_or_a_sandbox_command_that_exists() -> None:
    tasks = json.loads((ROOT / ".vscode" / "tasks.json").read_text(encoding="utf-8"))["tasks"]
    targets = _make_targets()
    main = (ROOT / "sandbox" / "__main__.py").read_text(encoding="utf-8")

    for task in tasks:
        command = task["command"]
        if command.startswith("make "):
            assert set(command.split()[1:]) <= targets, command
        elif "-m sandbox " in command:
            assert f'"{command.split()[-1]}"' in main, command
        else:
            assert task["type"] == "func", command
