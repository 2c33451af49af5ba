"""The CLI's error boundary: ``Error: message`` and a non-zero exit, tracebacks only with --debug."""

from __future__ import annotations

import pytest
import typer

from datasets.errors import ImageDecodeError
from pipeline.cli._app import app, run


def _app_raising(exc: Exception) -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root(debug: bool = typer.Option(False, "--debug")) -> None:
        pass

    @app.command()
    def boom() -> None:
        raise exc

    return app


def test_clearsight_error_prints_message_and_exits_2(capsys) -> None:
    code = run(_app_raising(ImageDecodeError("truncated PNG", source="a.png")), ["boom"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "Error: a.png: truncated PNG\n"


def test_debug_adds_traceback(capsys) -> None:
    code = run(_app_raising(ImageDecodeError("truncated PNG", source="a.png")), ["--debug", "boom"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback (most recent call last)" in err
    assert err.endswith("Error: a.png: truncated PNG\n")


def test_unexpected_error_is_reported_without_traceback(capsys) -> None:
    code = run(_app_raising(RuntimeError("disk on fire")), ["boom"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == "Error: unexpected RuntimeError: disk on fire (rerun with --debug for a traceback)\n"


def test_a_bad_setting_names_its_option_and_variable(capsys, monkeypatch) -> None:
    from pipeline.cli import app

    monkeypatch.setenv("CLEARSIGHT_RUNTIME", "tf")
    code = run(app, ["score", "nothing.png", "--model", "m", "--out", "rows.jsonl"])
    assert code == 2
    assert capsys.readouterr().err == (
        "Error: runtime (--runtime or CLEARSIGHT_RUNTIME): "
        "Input should be 'onnxruntime' or 'torch'; got 'tf'\n"
    )


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        (
            "CLEARSIGHT_MAX_IMAGE_BYTES",
            "-1",
            "Error: max_image_bytes (CLEARSIGHT_MAX_IMAGE_BYTES): Input should be",
        ),
        ("CLEARSIGHT_RUNTIME", "tf", "Error: runtime (--runtime or CLEARSIGHT_RUNTIME): Input should be"),
    ],
    ids=["no-such-option", "an-option"],
)
def test_a_setting_is_named_by_its_option_only_where_there_is_one(
    capsys, monkeypatch, variable: str, value: str, said: str
) -> None:
    from pipeline.cli import app

    monkeypatch.setenv(variable, value)
    assert run(app, ["score", "nothing.png", "--model", "m", "--out", "rows.jsonl"]) == 2
    assert capsys.readouterr().err.startswith(said)


def test_a_setting_is_named_by_an_option_only_where_the_command_run_has_it(
    capsys, monkeypatch, tmp_path
) -> None:
    """``score`` has ``--runtime``; ``decide`` reads the same settings and has none."""
    from pipeline.cli import app

    monkeypatch.setenv("CLEARSIGHT_RUNTIME", "tf")
    rows = tmp_path / "rows.jsonl"
    rows.write_text("")
    assert run(app, ["decide", "--verdicts", str(rows), "--out", str(tmp_path / "d.jsonl")]) == 2
    assert capsys.readouterr().err.startswith("Error: runtime (CLEARSIGHT_RUNTIME): Input should be")


def test_usage_error_exits_2(capsys) -> None:
    code = run(_app_raising(RuntimeError()), ["no-such-command"])
    assert code == 2
    assert "No such command" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["data", "synth", "--out", "x", "--seed", "abc"],
            "Invalid value for '--seed': 'abc' is not a whole number",
        ),
        (
            ["score", "a.png", "--model", "m", "--out", "r.jsonl", "--batch-size", "1.5"],
            "'1.5' is not a whole number",
        ),
        # the value as text: a terminal's control characters are shown, never sent
        (["data", "synth", "--out", "x", "--size", "6\x1b[2J4"], "'6\\x1b[2J4' is not a whole number"),
        (
            ["audit", "list", "--limit", "0"],
            "Invalid value for '--limit': '0' is out of range; accepted: 1 or more",
        ),
        (["score", "a.png", "--model", "m", "--out", "r.jsonl", "--workers", "65"], "'65' is out of range"),
    ],
    ids=["seed", "batch-size", "controls", "range", "workers"],
)
def test_an_option_given_no_number_names_the_value(capsys, argv: list[str], said: str) -> None:
    """typer's words named the option only: "Input should be a valid integer, unable to parse
    string as an integer"."""
    assert run(app, argv) == 2
    assert said in capsys.readouterr().err


def test_help_exits_0(capsys) -> None:
    from pipeline.cli import app

    assert run(app, ["--help"]) == 0
    assert "clearsight" in capsys.readouterr().out.lower()


def test_sigterm_exits_143_through_the_commands_clean_up() -> None:
    # timeout(1), systemctl stop, docker stop: killed outright, an export left its temporary file
    import os
    import signal

    cleaned: list[str] = []
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    @app.command()
    def work() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            cleaned.append("temporary file removed")

    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in a shell; a test runner may set one
    try:
        assert run(app, ["work"]) == 143
        assert cleaned == ["temporary file removed"]
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back after the command
    finally:
        signal.signal(signal.SIGTERM, before)


_STOPPED = """
import sys, time, typer
from pathlib import Path
from pipeline.cli._app import app, run
app = typer.Typer()
@app.callback()
def _root() -> None: pass
@app.command()
def work() -> None:
    try:
        Path(sys.argv[1]).write_text("started")
        time.sleep(30)
    finally:
        Path(sys.argv[1]).write_text("cleaned up")
sys.exit(run(app, ["work"]))
"""


def test_a_command_stopped_by_sigterm_cleans_up_and_exits_143(tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    mark = tmp_path / "mark"
    child = subprocess.Popen(
        [sys.executable, "-c", _STOPPED, str(mark)], env={**os.environ, "PYTHONPATH": os.getcwd()}
    )
    for _ in range(300):
        if mark.exists():
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    assert child.wait(30) == 143
    assert mark.read_text() == "cleaned up"


@pytest.mark.parametrize(("stop", "code"), [("term", 143), ("interrupt", 130)])
def test_a_step_run_inside_a_command_hands_a_stop_on(stop: str, code: int) -> None:
    # the demo runs its steps through run() too: the inner run read SIGTERM or Ctrl-C as a failed
    # step ("Error: step 1 failed with exit code 143", exit 2)
    import os
    import signal

    inner, outer = typer.Typer(), typer.Typer()

    @inner.callback()
    def _inner_root() -> None:
        pass

    @inner.command()
    def step() -> None:
        if stop == "term":
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt

    @outer.callback()
    def _outer_root() -> None:
        pass

    @outer.command()
    def demo() -> None:
        if run(inner, ["step"]) != 0:
            raise ImageDecodeError("step 1 failed")

    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert run(outer, ["demo"]) == code
    finally:
        signal.signal(signal.SIGTERM, before)


def test_ctrl_c_exits_130(capsys) -> None:
    code = run(_app_raising(KeyboardInterrupt()), ["boom"])
    assert code == 130
    assert capsys.readouterr().err.endswith("Interrupted.\n")


def test_help_shows_defaults_that_are_not_values(capsys, monkeypatch) -> None:
    from pipeline.cli import app

    monkeypatch.setenv("COLUMNS", "240")
    assert run(app, ["score", "--help"]) == 0
    out = capsys.readouterr().out
    assert (
        "[default: (OUT.decisions.jsonl, X.decisions.jsonl for X.jsonl unless X ends in .jsonl, .csv or "
        ".parquet)]"
    ) in out
    assert "[default: (CLEARSIGHT_RUNTIME or onnxruntime)]" in out


def test_flags_show_no_value_in_help(capsys) -> None:
    from pipeline.cli import app

    for command in (["data", "synth"], ["train"], ["score"], ["audit", "list"], []):
        assert run(app, [*command, "--help"]) == 0
        assert "<bool>" not in capsys.readouterr().out, command  # no flag takes a value


@pytest.mark.parametrize(
    ("value", "traceback", "warned"),
    [
        ("1", True, False),
        ("true", True, False),
        ("YES", True, False),
        ("on", True, False),
        ("0", False, False),
        ("false", False, False),
        ("no", False, False),
        # a bad value must not break the error path: said, and read as no
        ("maybe", False, True),
    ],
)
def test_the_debug_setting_shows_tracebacks_as_debug_does(
    capsys, monkeypatch, tmp_path, value: str, traceback: bool, warned: bool
) -> None:
    """CLEARSIGHT_DEBUG ("Show tracebacks for errors") was read by nothing; only --debug worked."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("CLEARSIGHT_DEBUG", value)
    code = run(_app_raising(ImageDecodeError("truncated PNG", source="a.png")), ["boom"])
    err = capsys.readouterr().err
    assert code == 2
    assert ("Traceback (most recent call last)" in err) == traceback
    assert (
        "Warning: CLEARSIGHT_DEBUG 'maybe' is neither yes nor no (accepted: 1, true, yes, on" in err
    ) == warned
    assert err.endswith("Error: a.png: truncated PNG\n")


def test_a_bad_debug_setting_that_is_the_error_reported_is_said_once(capsys, monkeypatch, tmp_path) -> None:
    from pipeline.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLEARSIGHT_DEBUG", "maybe")
    (tmp_path / "v.jsonl").write_text("")
    assert run(app, ["decide", "--verdicts", "v.jsonl", "--out", "d.jsonl"]) == 2
    assert capsys.readouterr().err == (
        "Error: debug (--debug or CLEARSIGHT_DEBUG): Input should be a valid boolean, unable to interpret "
        "input; got 'maybe'\n"
    )


def test_the_debug_setting_is_read_from_dot_env_and_reraises_an_unexpected_error(
    monkeypatch, tmp_path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLEARSIGHT_DEBUG", raising=False)
    (tmp_path / ".env").write_text("CLEARSIGHT_DEBUG=1\n")
    with pytest.raises(RuntimeError, match="disk on fire"):  # as with --debug: Python prints it whole
        run(_app_raising(RuntimeError("disk on fire")), ["boom"])


@pytest.mark.parametrize(
    ("installed", "printed"),
    [("1.2.3", "clearsight 1.2.3\n"), (None, "clearsight (version unknown: not installed; pip install -e .")],
    ids=["installed", "source-tree"],
)
def test_version_prints_the_installed_version_and_exits_0(
    capsys, monkeypatch, installed: str | None, printed: str
) -> None:
    import importlib.metadata

    from pipeline.cli import app

    def version(name: str) -> str:
        assert name == "clearsight"
        if installed is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert run(app, ["--version"]) == 0
    assert capsys.readouterr().out.startswith(printed)


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (ImageDecodeError("truncated PNG", source="a.png"), 2, "Error: a.png: truncated PNG\n"),
        (
            RuntimeError("disk on fire"),
            1,
            "Error: unexpected RuntimeError: disk on fire (rerun with --debug for a traceback)\n",
        ),
    ],
    ids=["clearsight-error", "unexpected"],
)
def test_a_dot_env_that_cannot_be_read_still_reports_the_error(
    capsys, monkeypatch, tmp_path, exc: Exception, code: int, message: str
) -> None:
    """A UTF-16 .env (PowerShell 5's ``echo CLEARSIGHT_DEBUG=1 > .env``) made the error path raise
    UnicodeDecodeError inside the handler: two tracebacks and exit 1, the real error unsaid."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLEARSIGHT_DEBUG", raising=False)
    (tmp_path / ".env").write_bytes("CLEARSIGHT_DEBUG=1\n".encode("utf-16"))
    assert run(_app_raising(exc), ["boom"]) == code
    err = capsys.readouterr().err
    assert err.startswith(
        "Warning: the debug setting (CLEARSIGHT_DEBUG, or .env) could not be read (UnicodeDecodeError: "
    )
    assert err.count("Warning") == 1 and "Traceback" not in err
    assert err.endswith(message)


def test_a_command_reading_a_dot_env_it_cannot_read_names_it(capsys, monkeypatch, tmp_path) -> None:
    """Every command that reads its settings failed on a UTF-16 .env as 'unexpected
    UnicodeDecodeError', exit 1, naming neither the file nor what would do."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLEARSIGHT_DEBUG", raising=False)
    (tmp_path / ".env").write_bytes("CLEARSIGHT_AUDIT_DB=sqlite:///x.db\n".encode("utf-16"))
    assert run(app, ["audit", "list"]) == 2
    err = capsys.readouterr().err
    assert err.endswith(
        "Error: the settings file '.env' in the working folder cannot be read (invalid start byte); save "
        "it as UTF-8 text, or remove it\n"
    )
    assert "Traceback" not in err and not (tmp_path / "x.db").exists()
