"""``TWIN_*`` environment defaults: read at parse time of the command that uses them only."""

from __future__ import annotations

import pytest

from twin.cli import build_parser, main


def test_a_bad_environment_value_breaks_only_its_own_command(monkeypatch, capsys):
    monkeypatch.setenv("TWIN_DASHBOARD_PORT", "abc")
    monkeypatch.setenv("TWIN_TRAIN_FRACTION", "most")
    args = build_parser().parse_args(["simulate", "--hours", "0.5"])  # unaffected
    assert args.hours == 0.5
    with pytest.raises(SystemExit) as exc:
        main(["dashboard"])
    assert exc.value.code == 2
    assert "argument --port: invalid int value: 'abc'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["calibrate", "--telemetry", "x.csv", "--facility", "h100-node"])
    assert "--train-fraction: invalid float value: 'most'" in capsys.readouterr().err


def test_environment_defaults_are_typed_and_per_command(monkeypatch):
    monkeypatch.setenv("TWIN_INTERVAL", "1")  # the sensor daemon's poll interval
    monkeypatch.setenv("TWIN_WATCH_INTERVAL", "30")
    monkeypatch.setenv("TWIN_DASHBOARD_PORT", "8600")
    watch = build_parser().parse_args(["watch"])
    assert watch.interval == 30.0 and watch.batch_seconds == 60.0
    assert build_parser().parse_args(["dashboard"]).port == 8600
    assert build_parser().parse_args(["calibrate"]).train_fraction == 0.6
