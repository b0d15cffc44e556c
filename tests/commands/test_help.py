"""Every command's --help speaks to users: what it does and a first example, no developer markup."""

import argparse

import pytest

from dreampropeller.cli import build_parser, main


def _all_parsers(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, (*path, name))


PARSERS = list(_all_parsers(build_parser()))


def test_top_level_help_says_what_the_tool_does_and_gives_a_first_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "text-to-3D" in text
    assert 'dreampropeller generate "a red cube" --out runs/red-cube' in text
    assert "dreampropeller eval runs/red-cube" in text
    assert "``" not in text and "commands``" not in text  # no developer docstring


@pytest.mark.parametrize("path", [p for p, _ in PARSERS if p], ids=lambda p: " ".join(p))
def test_every_command_has_a_description_and_an_example(path):
    parser = dict(PARSERS)[path]
    help_text = parser.format_help()
    assert parser.description and len(parser.description.split()) >= 10, path
    assert "examples:" in help_text, path
    assert f"dreampropeller {' '.join(path)}" in help_text.split("examples:")[1], path
    assert "``" not in help_text, path
    for line in parser.description.splitlines():
        assert len(line) <= 110, (path, line)


@pytest.mark.parametrize("path", [p for p, _ in PARSERS], ids=lambda p: " ".join(p) or "dreampropeller")
def test_every_option_says_what_it_does(path):
    parser = dict(PARSERS)[path]
    silent = [
        a.option_strings or a.dest
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction) and not a.help
    ]
    assert silent == []
