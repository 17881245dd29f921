"""Every recipe flag is named after the glossary, and an old spelling still works for one release.

The glossary (`kzoo.vocabulary`) names model arguments; a recipe flag that
sets one takes the same name (`--hidden-dim` sets `hidden_dim`). Flags renamed
to it keep their old spelling for one release (`runner.add_deprecated_alias`):
the same dest, hidden from `--help`, one line on stderr naming the new flag,
and a run folder recorded under the old name still resumes
(`run_folder.RENAMED_FLAGS`, tested in tests/test_run_folder.py).
"""

import argparse

import pytest
from test_cli import RECIPES, _parser_of

from kzoo import vocabulary
from kzoo.training import run_folder, runner

#: Flag names that look like a glossary concept but are not a model argument, and why.
NOT_TERMS = {
    "image_size": "a data option: the one square size images are resized to (load_data's "
                  "image_size); the model's input_shape follows from it and the data's channels",
    "sample_length": "how long the samples generated after training are, not a model's "
                     "sequence length",
}


def visible_flags(parser):
    return [a for a in parser._actions
            if a.option_strings and a.dest != "help" and a.help != argparse.SUPPRESS]


def aliases(parser):
    return [a for a in parser._actions if isinstance(a, runner._DeprecatedFlag)]


PARSERS = {}


def parser_of(recipe):
    if recipe not in PARSERS:
        PARSERS[recipe] = _parser_of(recipe)
    return PARSERS[recipe]


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_flag_is_named_after_the_glossary(recipe):
    dests = [a.dest for a in visible_flags(parser_of(recipe))]
    found = {k: v for k, v in vocabulary.off_glossary(dests).items() if k not in NOT_TERMS}
    assert found == {}


def test_the_exceptions_are_still_needed():
    # An exception no recipe has any more, or that the glossary allows now, goes.
    dests = {a.dest for r in RECIPES for a in visible_flags(parser_of(r))}
    for name in NOT_TERMS:
        assert name in dests and name in vocabulary.off_glossary([name]), name


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_deprecated_spelling_is_hidden_and_resumes(recipe, capsys):
    parser = parser_of(recipe)
    for alias in aliases(parser):
        old = alias.option_strings[0]
        # run.json recorded the old spelling's dest: the run folder maps it to the new one.
        assert run_folder.RENAMED_FLAGS[old[2:].replace("-", "_")] == alias.dest
        assert old not in parser.format_help()
        assert alias.new_option in parser.format_help()


# A table, one row per renamed spelling: its rows look alike on purpose.
@pytest.mark.parametrize("recipe, old, new, value", [
    ("lm", "--d-model", "--hidden-dim", "32"),
    ("lm", "--d-ff", "--intermediate-dim", "64"),
    ("lm", "--layers", "--num-layers", "1"),
    ("transformer", "--d-model", "--hidden-dim", "32"),
    ("transformer", "--d-ff", "--intermediate-dim", "64"),
    ("transformer", "--beam-width", "--num-beams", "2"),
    ("vit", "--mlp-dim", "--intermediate-dim", "64"),
    ("vit", "--layers", "--num-layers", "1"),
    ("clip", "--embed-dim", "--embedding-dim", "8"),
    ("clip", "--width", "--hidden-dim", "16"),
    ("clip", "--layers", "--num-layers", "1"),
    ("rnn", "--layers", "--num-layers", "2"),
    ("seq2seq", "--beam-width", "--num-beams", "2"),
])
def test_old_spelling_sets_the_new_flag_and_says_so_in_one_line(recipe, old, new, value,
                                                                  capsys):
    parser = parser_of(recipe)
    capsys.readouterr()
    via_new = vars(parser.parse_args([new, value]))
    assert capsys.readouterr().err == ""
    via_old = vars(parser.parse_args([old, value]))
    assert via_old == via_new
    assert via_new[new[2:].replace("-", "_")] != parser.get_default(new[2:].replace("-", "_"))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and old in err[0] and f"use {new} instead" in err[0], err
    # A bad value is refused under the spelling given, as for any flag.
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([old, "0"])
    assert exc.value.code == 2 and f"argument {old}: expected a positive integer" in \
        capsys.readouterr().err


def test_an_alias_of_a_flag_the_parser_lacks_is_refused():
    parser = runner.make_parser("")
    with pytest.raises(ValueError, match="expected a flag of the parser that takes a value"):
        runner.add_deprecated_alias(parser, "--d-model", "--hidden-dim")
    with pytest.raises(ValueError, match="takes a value"):
        runner.add_deprecated_alias(parser, "--fast", "--smoke")
