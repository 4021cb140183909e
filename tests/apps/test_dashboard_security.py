"""What the dashboard may read and fetch (apps/access.py) and how `twin dashboard` binds and stops.

The page's text boxes are read by the server's process: files only under the operator's
``--data-dir`` (resolved: no ``..`` or symlink leads out), URLs only under ``--allow-url``, no
file's contents quoted in an error, loopback unless ``--allow-remote``, and SIGTERM stops the
server. Mostly unit checks of the policy; one AppTest run and one process check."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from dashboard_testlib import ROOT

from apps.access import NOT_SHOWN, Access
from twin.units import InputError, SpecError


@pytest.fixture
def data(tmp_path):
    """A data directory with one file, a secret beside it, and links that lead out of it."""
    d = tmp_path / "data"
    d.mkdir()
    (d / "jobs.csv").write_text("id,arrival,duration,gpus,workload\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("PASSWORD=hunter2\n")
    (d / "link").symlink_to(secret)
    (d / "up").symlink_to(tmp_path)
    return d, secret


def test_files_only_under_the_data_directories(data, monkeypatch):
    d, secret = data
    policy = Access.from_options([str(d)], [])
    assert policy.path(str(d / "jobs.csv"), "job file path") == d / "jobs.csv"
    monkeypatch.chdir(d)
    assert policy.path("jobs.csv", "job file path") == d / "jobs.csv"  # relative to the server
    for text in (
        "/etc/shadow",
        "/proc/self/environ",
        str(secret),
        str(d / ".." / "secret.txt"),  # `..` resolved before the check
        "../secret.txt",
        str(d / "link"),  # a symlink to a file outside
        str(d / "up" / "secret.txt"),  # a symlinked directory outside
    ):
        with pytest.raises(SpecError) as exc:
            policy.path(text, "telemetry")
        assert "--data-dir" in str(exc.value) and str(d) in str(exc.value), text


def test_default_data_directory_is_the_working_directory_and_named_files_are_allowed(
    data, monkeypatch
):
    d, secret = data
    monkeypatch.chdir(d)
    policy = Access.from_options([], [], named=[str(secret), "superfactory"])
    assert policy.data_dirs == (d.resolve(),)
    assert policy.path(str(secret), "telemetry") == secret.resolve()  # named on the CLI
    assert policy.facility("superfactory") == "superfactory"  # a shipped name
    with pytest.raises(SpecError, match="--data-dir"):
        policy.facility("/etc/passwd")
    with pytest.raises(SpecError, match="--data-dir"):
        policy.check_sources("superfactory", "/etc/shadow", "")


def test_urls_only_under_an_allowed_prefix():
    none = Access.from_options(["."], [])
    with pytest.raises(SpecError, match="allowed: none"):
        none.url("http://169.254.169.254/latest/meta-data/", "telemetry")
    policy = Access.from_options(["."], ["http://prom.lan:9090/"], named=["http://10.0.0.5:9090"])
    assert policy.source("http://prom.lan:9090", "telemetry") == "http://prom.lan:9090"
    assert policy.url("HTTP://PROM.lan:9090/api/v1", "t") == "HTTP://PROM.lan:9090/api/v1"
    assert policy.url("http://10.0.0.5:9090", "telemetry")  # the --telemetry URL itself
    for bad in (
        "http://prom.lan:9090@evil.example/",  # user-info trick: the host is evil.example
        "http://prom.lan:90901/",
        "https://prom.lan:9090/",  # another scheme
        "http://evil.example/?http://prom.lan:9090/",
    ):
        with pytest.raises(SpecError, match="--allow-url"):
            policy.url(bad, "telemetry")
    sub = Access.from_options(["."], ["http://h/prom"])
    assert sub.url("http://h/prom/api", "t")
    with pytest.raises(SpecError):
        sub.url("http://h/prometheus-admin", "t")  # a prefix ends at a path segment
    with pytest.raises(SpecError, match="--allow-url"):
        Access.from_options(["."], ["ftp://h/"])


def test_errors_never_quote_the_file():
    first_line = "root:$y$j9T$secret-hash:19000:0:99999:7:::"
    hidden = Access.hide_contents(InputError("replay input", first_line, "a CSV header"), "/x")
    assert first_line not in str(hidden) and NOT_SHOWN in str(hidden)
    cell = SpecError("/d/j.csv: row 3 (ssh-key-1) field gpus", "AAAAB3Nza", "an integer")
    shown = str(Access.hide_contents(cell, "/d/j.csv"))
    assert "AAAAB3Nza" not in shown and "ssh-key-1" not in shown
    assert "/d/j.csv: row 3 field gpus" in shown and "an integer" in shown
    kept = Access.hide_contents(SpecError("--telemetry", "/d/x.db", "a store"), "/d/x.db")
    assert "/d/x.db" in str(kept)
    assert "<empty file>" in str(Access.hide_contents(SpecError("f", "<empty file>", "x"), "f"))


def test_page_refuses_paths_outside_and_never_quotes_a_file(app, tmp_path):
    """AppTest: the telemetry box with /etc/passwd is refused before the file is opened; a file
    inside the data directory that is not telemetry is named, its first line not shown."""
    app.query_params["page"] = "live"  # the simulated fleet: nothing to simulate first
    app.run()
    app.text_input(key="telemetry").set_value("/etc/passwd").run()
    assert not app.exception
    errors = " | ".join(e.value for e in app.error)
    assert "--data-dir" in errors and "root:" not in errors, errors
    notes = tmp_path / "notes.txt"
    notes.write_text("AWS_SECRET_ACCESS_KEY=abc123 and more\n")
    app.text_input(key="telemetry").set_value(str(notes)).run()
    assert not app.exception
    errors = " | ".join(e.value for e in app.error)
    assert str(notes) in errors and "AWS_SECRET" not in errors, errors


def test_remote_address_needs_allow_remote_and_warns(capsys):
    from twin.cli import build_parser
    from twin.cli import main as twin_main
    from twin.cli.dashboard import check_address, streamlit_command

    assert twin_main(["dashboard", "--address", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    args = build_parser().parse_args(
        ["dashboard", "--address", "0.0.0.0", "--allow-remote", "--data-dir", "/srv/t"]
    )
    check_address(args)
    err = capsys.readouterr().err
    assert "NO authentication" in err and "/srv/t" in err
    cmd = streamlit_command(args)
    assert cmd[cmd.index("--data-dir") + 1] == "/srv/t" and "--allow-url" not in cmd
    for loopback in ("127.0.0.1", "127.0.1.1", "::1", "localhost"):
        check_address(build_parser().parse_args(["dashboard", "--address", loopback]))
    assert capsys.readouterr().err == ""


def test_sigterm_stops_the_server_even_one_that_ignores_it(tmp_path):
    """`twin dashboard` passes SIGTERM on to its server and waits; a server that does not stop
    is killed after the grace period, so nothing keeps listening (before: exec, no waiting)."""
    pid_file = tmp_path / "server.pid"
    stubborn = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    )
    script = textwrap.dedent(f"""
        import sys
        from twin.cli.dashboard import supervise
        sys.exit(supervise([sys.executable, "-c", {stubborn!r}], None, grace_s=1.0))
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    sup = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT)
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        assert sup.poll() is None and time.monotonic() < deadline, "supervisor did not start"
        time.sleep(0.05)
    server = int(pid_file.read_text())
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 128 + signal.SIGTERM
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(server, 0)  # gone (killed after the grace period and reaped)
