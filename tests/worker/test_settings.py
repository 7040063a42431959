"""The option table's two validation paths: the plain one every run takes, and pydantic for
anything else. Wherever the plain path answers, pydantic (built from the same table) must give
the same settings; wherever it declines, pydantic decides and words the error."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskfleet.errors import TaskfleetError
from taskfleet.worker.settings import (
    WorkerSettings,
    _pydantic_model,
    _validate_plain,
    build_parser,
    options,
    resolve_settings,
)

NAMES = list(options())

# Values of the shapes the sources give: strings from the command line and the environment,
# numbers, booleans and None from YAML; some plain, some not.
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=10**6),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.from_regex(r"-?[0-9]{1,20}(\.[0-9]{0,20})?", fullmatch=True),
    st.sampled_from(["", " 3", "+3", "1e3", "inf", "t", "yes", "aws", "GCP", "azure", "x.json"]),
    st.text(max_size=5),
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=2))
def test_the_plain_path_agrees_with_pydantic_wherever_it_answers(merged: dict[str, Any]) -> None:
    plain = _validate_plain(merged)
    if plain is None:
        return
    model = _pydantic_model().model_validate(merged)
    for name in NAMES:
        assert _same(getattr(plain, name), getattr(model, name)), (name, merged)


@pytest.mark.parametrize(
    ("cli", "env"),
    [
        ({"task_file": "tasks.json", "num_simultaneous_tasks": "8", "max_runtime": "2.5"}, {}),
        ({"queue": "sqlite:///q.db", "verbose": True, "retry_on_exit": False}, {}),
        ({}, {"TASKFLEET_LEASE_SECONDS": "30", "TASKFLEET_IS_SPOT": "yes"}),
        ({"provider": "aws", "price": "0.25", "max_attempts": "5"}, {}),
    ],
)
def test_the_options_of_an_ordinary_run_take_the_plain_path(
    cli: dict[str, Any], env: dict[str, str]
) -> None:
    merged = {**{k.removeprefix("TASKFLEET_").lower(): v for k, v in env.items()}, **cli}
    merged = {k: (True if v == "yes" else v) for k, v in merged.items()}
    assert _validate_plain(merged) is not None
    assert resolve_settings(cli, environ=env) == _validate_plain(merged)


@pytest.mark.parametrize(
    ("cli", "expected"),
    [
        ({"max_runtime": "1e3"}, {"max_runtime": 1000.0}),
        ({"num_simultaneous_tasks": " 4"}, {"num_simultaneous_tasks": 4}),
        ({"max_attempts": 2.0}, {"max_attempts": 2}),
    ],
)
def test_values_of_other_shapes_are_still_accepted(
    cli: dict[str, Any], expected: dict[str, Any]
) -> None:
    settings = resolve_settings(cli, environ={})
    for name, value in expected.items():
        assert _same(getattr(settings, name), value)


def test_errors_are_pydantic_s_naming_their_source() -> None:
    with pytest.raises(TaskfleetError) as info:
        resolve_settings({"num_simultaneous_tasks": "0"}, environ={"TASKFLEET_PROVIDER": "azure"})
    message = str(info.value)
    assert message.startswith("invalid worker options: ")
    assert "--num-simultaneous-tasks: Input should be greater than or equal to 1 (got '0')" in (
        message
    )
    assert "TASKFLEET_PROVIDER: Input should be 'aws', 'gcp', 'AWS' or 'GCP' (got 'azure')" in (
        message
    )
    with pytest.raises(TaskfleetError, match="backoff_cap must be at least backoff_base"):
        resolve_settings({"backoff_base": "5", "backoff_cap": "2"}, environ={})


def test_the_table_gives_every_flag_and_the_defaults() -> None:
    parser = build_parser("worker")
    flags = {flag for action in parser._actions for flag in action.option_strings}
    for field in dataclasses.fields(WorkerSettings):
        assert "--" + field.name.replace("_", "-") in flags
    defaults = resolve_settings({}, environ={})
    assert defaults.max_runtime == 3600.0 and defaults.event_log_file == "events.jsonl"
    assert defaults.num_simultaneous_tasks >= 1 and defaults.retry_on_exit is True


def test_an_ordinary_run_s_options_do_not_import_pydantic_or_yaml() -> None:
    code = (
        "import sys\n"
        "from taskfleet.worker.settings import resolve_settings\n"
        "resolve_settings({'task_file': 't.json', 'num_simultaneous_tasks': '2'}, environ={})\n"
        "print(sorted({'pydantic', 'yaml'} & sys.modules.keys()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
