"""The node's tables written once: the error codes the server answers and the client reads
back, and the serve settings that are at once flags, ``DAWAIT_*`` variables and config."""

from __future__ import annotations

import argparse

import pytest

from dawait.core._errors import DawaitError, NotStartedError, StoreError
from dawait.node import _api_models as m
from dawait.node._client import ApiError, _error
from dawait.node._error_codes import ERROR_CODES, ErrorCode, error_class, error_code
from dawait.node._settings import ServeSettings, add_serve_flags, settings_from_flags


def _body(code: str) -> bytes:
    return m.ErrorBody(error=code, message="why").model_dump_json().encode()


@pytest.mark.parametrize("row", ERROR_CODES, ids=lambda row: row.error.__name__)
def test_an_error_goes_out_as_its_code_and_comes_back_as_the_codes_class(row: ErrorCode) -> None:
    sent = error_code(row.error("why"))
    assert sent == row
    received = _error(sent.status, _body(sent.code))
    assert type(received) is error_class(sent.code)
    assert str(received) == "why"


def test_a_store_failure_reads_back_as_not_started() -> None:
    sent = error_code(StoreError("disk"))
    assert sent is not None
    assert (sent.code, sent.status) == ("unavailable", 503)
    assert isinstance(_error(sent.status, _body(sent.code)), NotStartedError)


def test_a_code_without_a_class_is_an_api_error_and_an_error_without_a_code_has_none() -> None:
    received = _error(401, _body("unauthorized"))
    assert isinstance(received, ApiError)
    assert (received.status, received.error) == (401, "unauthorized")
    assert isinstance(_error(503, _body("http_error")), NotStartedError)
    assert error_code(DawaitError("plain")) is None


def _serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_flags(parser)
    return parser.parse_args(list(argv))


def test_every_setting_but_max_body_is_a_flag_named_after_it() -> None:
    parser = argparse.ArgumentParser()
    add_serve_flags(parser)
    flags = {a.dest: a.option_strings for a in parser._actions if a.dest != "help"}
    assert flags == {
        name: ["--" + name.replace("_", "-")]
        for name in ServeSettings.model_fields
        if name != "max_body"
    }


def test_a_flag_beats_its_variable_which_beats_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DAWAIT_GRACE_PERIOD", raising=False)
    monkeypatch.delenv("DAWAIT_OPEN_METRICS", raising=False)
    monkeypatch.setenv("DAWAIT_PORT", "9000")
    monkeypatch.setenv("DAWAIT_HOST", "0.0.0.0")
    monkeypatch.setenv("DAWAIT_MAX_BODY", "2048")
    settings = settings_from_flags(_serve_args("--app", "m:app", "--port", "7", "--open-metrics"))
    assert (settings.port, settings.host, settings.max_body) == (7, "0.0.0.0", 2048)
    assert settings.open_metrics is True
    assert settings.grace_period == 30.0
    monkeypatch.setenv("DAWAIT_OPEN_METRICS", "true")
    assert settings_from_flags(_serve_args("--app", "m:app")).open_metrics is True


def test_a_bad_flag_value_names_the_field() -> None:
    with pytest.raises(ValueError, match="lease_ttl"):
        settings_from_flags(_serve_args("--app", "m:app", "--lease-ttl", "0"))
