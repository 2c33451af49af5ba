"""The register of trusted traders: read from the authority's CSV, every bad row named."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets.errors import InputError
from pipeline.trader_register import RegisterFile, read_trader_register


def test_a_register_is_read(tmp_path: Path) -> None:
    path = tmp_path / "register.csv"
    mine, other = "submitter:3f2a9c1b0d4e", "submitter:91c0e7d2aa10"
    path.write_bytes(
        (
            "\ufefftrader_id, aeo_tier ,name,submitters\n"
            f"T-42, AEOS ,Ore Traders,{mine} {other}\n"
            f"T-7,AEOF,,{other}\n"
            "T-8,AEOC,,\n"
        ).encode()
    )
    register = read_trader_register(path)
    assert dict(register.tiers) == {"T-42": "AEOS", "T-7": "AEOF", "T-8": "AEOC"}
    assert (register.tier_of("T-42"), register.tier_of("T-9"), register.tier_of(None)) == ("AEOS", None, None)
    # a key gets a trader's tier only where the register names it among the trader's submitters
    assert [register.tier_for(t, mine) for t in ("T-42", "T-7", "T-8", "T-9", None)] == [
        "AEOS", None, None, None, None
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trader,tier\nT-42,AEOS\n", "lacks the column(s) trader_id, aeo_tier; its header must name"),
        ("", "its header must name trader_id and aeo_tier (found: no header)"),
        ("trader_id,aeo_tier\nT-42,\n", "line 2: trader_id and aeo_tier must both be given (got 'T-42', '')"),
        ("trader_id,aeo_tier\n,AEOS\n", "line 2: trader_id and aeo_tier must both be given"),
        ("trader_id,aeo_tier\nT-42,AEOS\nT-42,AEOF\n", "line 3: trader 'T-42' is listed twice"),
        (f"trader_id,aeo_tier\n{'T' * 129},AEOS\n", "trader_id is at most 128 characters"),
        ("trader_id,aeo_tier\nT-42,AEOS_" + "X" * 30 + "\n", "aeo_tier at most 32"),
        ("trader_id,aeo_tier,submitters\nT-42,AEOS,s3cret-key\n", "1 value(s) that are not a key's name"),
        ("trader_id,aeo_tier,submitters,aeo_tier \nT-1,AEOC,,AEOF\n", "line 1: duplicate column 'aeo_tier'"),
        ("trader_id,aeo_tier,trader_id\nT-1,AEOF,T-2\n", "line 1: duplicate column 'trader_id'"),
        ("trader_id,aeo_tier,name,name\nT-1,AEOF,A,B\n", "line 1: duplicate column 'name'"),
    ],
    ids=[
        "no-columns", "empty", "no-tier", "no-trader", "twice", "long-id", "long-tier", "a-key-not-a-name",
        "tier-column-twice", "trader-column-twice", "other-column-twice",
    ],
)  # fmt: skip
def test_a_bad_register_is_refused_with_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "register.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match="trader register") as caught:
        read_trader_register(path)
    assert message in str(caught.value)


def test_a_quote_left_open_is_malformed_csv(tmp_path: Path) -> None:
    """A csv.Error, not an InputError: the service answered 500 to every submission after the edit.
    The field runs past the csv module's own limit (a module imported beside may raise it: set here)."""
    import csv

    path = tmp_path / "register.csv"
    before = csv.field_size_limit(128 * 1024)
    try:
        for text, line in [
            ('trader_id,aeo_tier\nT-42,"AEOS\n' + "x" * 140_000, 1),
            ('trader_id,aeo_tier,"notes\n' + "x" * 140_000, 0),  # in the header, read apart
        ]:
            path.write_text(text, encoding="utf-8")
            with pytest.raises(InputError, match=rf"after line {line}: malformed CSV \(field larger than"):
                read_trader_register(path)
    finally:
        csv.field_size_limit(before)


def test_a_missing_or_binary_register_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot read the trader register .*missing\.csv"):
        read_trader_register(tmp_path / "missing.csv")
    (tmp_path / "bin.csv").write_bytes(b"trader_id,aeo_tier\n\xff\xfe,AEOS\n")
    with pytest.raises(InputError, match="is not UTF-8 text: invalid start byte at byte 19"):
        read_trader_register(tmp_path / "bin.csv")


def test_the_traders_a_key_sends_for(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        "trader_id,aeo_tier,submitters\nT1,AEOF,submitter:aaaaaaaaaaaa submitter:bbbbbbbbbbbb\n"
        "T2,AEOS,submitter:bbbbbbbbbbbb submitter:cccccccccccc\nT3,AEOS,submitter:dddddddddddd\n"
    )
    register = read_trader_register(path)
    assert register.traders_of("submitter:bbbbbbbbbbbb") == {"T1", "T2"}  # a broker's key
    assert register.traders_of("submitter:aaaaaaaaaaaa") == {"T1"}
    assert register.traders_of("submitter:eeeeeeeeeeee") == frozenset()


def test_a_register_written_to_while_it_is_read_counts_for_nothing_until_it_settles(tmp_path: Path) -> None:
    """A part of a register reads as a whole one (a broker's key listed for one of its two traders
    alone makes that trader's keys its own): one read while the file changes is not taken."""
    path = tmp_path / "register.csv"
    path.write_text("trader_id,aeo_tier\nT-1,AEOS\n", encoding="utf-8")
    writing = []

    def check(register) -> None:  # noqa: ANN001 - runs between reading the file and looking at it again
        if writing:
            path.write_text(path.read_text() + writing.pop(), encoding="utf-8")

    watched = RegisterFile(path, check=check)
    assert watched.current().tiers == {"T-1": "AEOS"}
    writing.append("T-2,AEOF\n")
    path.write_text("trader_id,aeo_tier\nT-1,AEOS\n", encoding="utf-8")  # the same bytes, a new time
    path.touch()
    assert watched.current() is None  # changed while read
    assert watched.current().tiers == {"T-1": "AEOS", "T-2": "AEOF"}  # settled: read whole


def test_a_register_read_again_without_submitters_is_warned_about(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    path = tmp_path / "register.csv"
    path.write_text("trader_id,aeo_tier,submitters\nT-1,AEOS,submitter:0123456789ab\n", encoding="utf-8")
    watched = RegisterFile(path)
    assert "names no submitter keys" not in caplog.text
    path.write_text("trader_id,aeo_tier\nT-1,AEOS\nT-2,AEOS\n", encoding="utf-8")
    assert watched.current() is not None and "names no submitter keys" in caplog.text
    # on a clearsight logger: the service's JSON log and the CLI's "Warning:" lines take it (as
    # pipeline.trader_register it reached neither: plain text in the service's JSON log)
    (said,) = [r for r in caplog.records if "names no submitter keys" in r.getMessage()]
    assert said.name.startswith("clearsight.")
