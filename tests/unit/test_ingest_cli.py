"""The ingest command line's parsing, with no service: control values, the routing of
``automation ingest FILE...`` to ``ingest add``, and step summaries."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tasks.automation.operations import RETRY_KINDS
from tasks.ingest import control
from worker.cli import command_hint, ingest, main, retry


@pytest.mark.parametrize(
    ("raw", "value"), [("3", 3), (" 12 ", 12), ("default", "default"), ("DEFAULT", "default")]
)
def test_a_control_value_is_a_number_of_at_least_one_or_default(raw: str, value: object) -> None:
    assert control.parse_limit("rate", raw) == value


@pytest.mark.parametrize("raw", ["0", "-1", "fast", "2.5", ""])
def test_any_other_control_value_is_refused_naming_the_control(raw: str) -> None:
    with pytest.raises(control.ControlError, match=f"^rate: {raw!r} is not a number"):
        control.parse_limit("rate", raw)


def test_concurrency_pairs_become_a_mapping_of_step_to_limit() -> None:
    assert control.parse_concurrency(["analysis=2", "images = default"]) == {
        "analysis": 2,
        "images": "default",
    }


@pytest.mark.parametrize("pair", ["analysis", "=2", "analysis:2"])
def test_a_concurrency_value_that_is_not_step_equals_n_is_refused(pair: str) -> None:
    with pytest.raises(control.ControlError, match="is not STEP=N"):
        control.parse_concurrency([pair])


def test_the_summary_of_the_images_step_lists_what_was_made() -> None:
    output = {
        "cover": {"path": "media/1/cover.jpg", "source": "embedded"},
        "thumbnails": {"256": {}, "64": {}},
        "card": {"path": "media/1/card.png"},
        "attempt": 1,
    }

    assert control.step_summary("images", output) == {
        "cover": "embedded",
        "thumbnails": [64, 256],
        "waveform": None,
        "card": "media/1/card.png",
    }


def test_the_summary_of_an_unknown_step_keeps_its_plain_values() -> None:
    assert control.step_summary("later", {"track_id": 4, "big": [1, 2], "attempt": 1}) == {
        "track_id": 4
    }


@pytest.mark.parametrize(
    ("name", "hint"),
    [("stauts", "status"), ("pasue", "pause"), ("stauts.wav", None), ("./stauts", None)],
)
def test_a_missing_file_that_looks_like_a_mistyped_command_gets_a_hint(
    name: str, hint: str | None
) -> None:
    assert command_hint(name, list(ingest.commands)) == hint


def test_a_first_word_that_is_no_subcommand_is_parsed_as_ingest_add() -> None:
    # Refused by `add`'s own option parsing, before anything is reached.
    outcome = CliRunner().invoke(main, ["ingest", "--user", "someone", "a.wav"])

    assert outcome.exit_code == 2
    assert "ingest add [OPTIONS] FILE..." in outcome.output
    assert "Invalid value for '--user'" in outcome.output


def test_help_and_the_subcommands_stay_the_groups() -> None:
    outcome = CliRunner().invoke(main, ["ingest", "--help"])

    assert outcome.exit_code == 0
    assert "Usage: main ingest [OPTIONS] FILE... | COMMAND [ARGS]..." in outcome.output
    assert "retry-failed" in outcome.output


def test_a_mistyped_subcommand_is_refused_in_one_line_with_the_likely_command() -> None:
    outcome = CliRunner().invoke(main, ["ingest", "stauts"])

    assert outcome.exit_code == 1
    assert outcome.output.splitlines() == [
        "Error: no such file 'stauts'; did you mean `automation ingest status`?"
    ]


def test_the_retry_command_offers_every_retry_kind() -> None:
    kind = next(param for param in retry.params if param.name == "kind")

    assert tuple(kind.type.choices) == RETRY_KINDS  # type: ignore[attr-defined]
