"""The README's two commands are the ones CI and users run."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    lines = (REPO / "README.md").read_text().splitlines()
    return [line.strip() for line in lines if line.startswith("    python3 -m venv")]


def test_readme_starts_with_the_two_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    main_job, tests = commands
    assert "segkit run --model unet --loss bce_dice" in main_job
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_word_for_word() -> None:
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in [line.strip() for line in ci]


def test_docs_linked_from_the_readme_exist() -> None:
    import re

    for target in re.findall(r"\]\(([^)#]+)\)", (REPO / "README.md").read_text()):
        assert (REPO / target).exists(), target
