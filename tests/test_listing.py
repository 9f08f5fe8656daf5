"""``python -m pipeline list …`` reads the registries; ``--version`` names the package and its toolchain."""

from __future__ import annotations

import pytest

from pipeline.__main__ import main
from pipeline.listing import LISTS, TOOLS, list_command


@pytest.mark.parametrize("what", [w for w in LISTS if w != "models"])
def test_every_registry_lists_its_names_and_a_pattern_filters_them(what, capsys):
    every = list_command(what)
    names = [line.split()[0] for line in every]
    assert names and len(set(names)) == len(names)
    first = names[0]
    assert [line.split()[0] for line in list_command(what, first)] == [first]
    assert main(["list", what, "*"]) == 0 and capsys.readouterr().out.splitlines() == every


def test_models_without_a_pattern_are_the_zoo_and_a_hint():
    from pipeline.models import ZOO

    lines = list_command("models")
    assert [line.split()[0] for line in lines[:-1]] == list(ZOO) and "give a pattern" in lines[-1]


def test_no_match_says_so(capsys):
    assert main(["list", "targets", "*nosuch*"]) == 0
    assert capsys.readouterr().out.strip() == "no targets match '*nosuch*'"


def test_version_names_the_package_and_each_tool(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and out.startswith("edge-pipeline ")
    assert [line.split()[0] for line in out.splitlines()[1:]] == list(TOOLS)
