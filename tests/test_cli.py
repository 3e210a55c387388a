"""The `hearth` command: its subcommands take their modules' options."""

from __future__ import annotations

import pytest

from hearth.cli import main


@pytest.mark.parametrize(("command", "option"), [
    ("serve", "--quantization"), ("serve", "--api-key"), ("batch", "--input"), ("sweep", "--temperature"),
    ("fetch", "--models"), ("kernels", "--build"),
])
def test_each_subcommand_has_its_modules_options(capsys, command, option):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: hearth {command}") and option in out


def test_no_or_an_unknown_command_lists_the_commands(capsys):
    assert main([]) == 2
    assert main(["nope"]) == 2
    captured = capsys.readouterr()
    assert "unknown command 'nope'" in captured.err
    for command in ("serve", "batch", "sweep", "fetch", "kernels"):
        assert f"\n  {command} " in captured.out
