"""Reading verdict rows (``clearsight decide --verdicts``, ``score --resume``): what a file holds is
read as written, or refused by name."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from datasets.errors import DatasetFormatError
from pipeline.verdict_rows import read_verdicts

MODEL = "bulk_ore-lite0-0000000a"
HEADER = "path,shipment_id,cargo_type,score,threshold,hold_threshold,model_id"
CELLS = f"a.png,S1,bulk_ore,0.95,0.5,0.8,{MODEL}"
LINE = (
    '{"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "score": 0.95, "threshold": 0.5, '
    f'"hold_threshold": 0.8, "model_id": "{MODEL}"'
)


def _read(tmp_path: Path, name: str, text: str) -> list[object]:
    path = tmp_path / name
    path.write_text(text)
    return list(read_verdicts(path))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "v.jsonl",
            LINE + ', "declaration": {"cargo_type": "bulk_ore", "radiation_alarm": true, '
            '"radiation_alarm": false}}\n',
            "v.jsonl:1: key 'radiation_alarm' appears twice in one object",
        ),
        (
            "v.jsonl",
            "\n" + LINE + ', "score": 0.1}\n',
            "v.jsonl:2: key 'score' appears twice in one object",
        ),
        (
            "v.csv",
            f"{HEADER},score\n{CELLS},0.1\n",
            "v.csv:1: duplicate column 'score'",
        ),
        (
            "v.csv",
            f'{HEADER},declaration,declaration\n{CELLS},"{{""radiation_alarm"":true}}","{{}}"\n',
            "v.csv:1: duplicate column 'declaration'",
        ),
        (
            "v.csv",
            f'{HEADER},declaration\n{CELLS},"{{""radiation_alarm"":true,""radiation_alarm"":false}}"\n',
            "v.csv:2: column declaration: key 'radiation_alarm' appears twice in one object",
        ),
    ],
    ids=["jsonl-nested-key", "jsonl-row-key", "csv-column", "csv-nested-column", "csv-key-in-a-cell"],
)
def test_a_key_or_column_given_twice_is_refused_not_read_as_the_last(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    """The last of two keys or columns would win silently: a radiation alarm or a hold score given
    first, then overwritten, released the shipment."""
    with pytest.raises(DatasetFormatError) as info:
        _read(tmp_path, name, text)
    assert str(info.value) == f"{tmp_path}/{message}"


def test_a_parquet_file_with_a_column_twice_is_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "v.parquet"
    columns = {"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "score": 0.95}
    names = [*columns, "score"]
    pq.write_table(pa.Table.from_arrays([pa.array([v]) for v in [*columns.values(), 0.1]], names=names), path)
    with pytest.raises(DatasetFormatError, match=re.escape(f"{path}: duplicate column 'score'")):
        list(read_verdicts(path))


def _struct(*fields: tuple[str, Any]) -> Any:
    """A one-row Arrow struct array of ``fields`` (name, one-row array), a name given twice if so."""
    import pyarrow as pa

    return pa.StructArray.from_arrays(
        [array for _, array in fields], fields=[pa.field(name, array.type) for name, array in fields]
    )


@pytest.mark.parametrize(
    ("declaration", "said"),
    [
        (
            lambda pa: _struct(
                ("cargo_type", pa.array(["bulk_ore"])),
                ("radiation_alarm", pa.array([True])),
                ("radiation_alarm", pa.array([False])),
            ),
            "column 'declaration' names the field 'radiation_alarm' twice",
        ),
        (
            lambda pa: _struct(("extra", _struct(("x_a", pa.array(["1"])), ("x_a", pa.array(["2"]))))),
            "column 'declaration' names the field 'extra.x_a' twice",
        ),
        (
            lambda pa: pa.ListArray.from_arrays(
                pa.array([0, 1], pa.int32()), _struct(("a", pa.array([1])), ("a", pa.array([2])))
            ),
            "column 'declaration' names the field 'a' twice",
        ),
    ],
    ids=["flag-twice", "under-extra", "in-a-list"],
)
def test_a_parquet_struct_with_a_field_twice_is_refused(tmp_path: Path, declaration: Any, said: str) -> None:
    """A struct declaration column (not JSON text) naming a field twice failed as "unexpected
    ValueError" (pyarrow's to_pylist), naming neither the file nor the column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "v.parquet"
    columns = {"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "score": 0.95}
    arrays = [pa.array([v]) for v in columns.values()]
    pq.write_table(pa.Table.from_arrays([*arrays, declaration(pa)], names=[*columns, "declaration"]), path)
    with pytest.raises(DatasetFormatError) as info:
        list(read_verdicts(path))
    assert str(info.value) == f"{path}: {said}"


def test_a_parquet_struct_declaration_with_each_field_once_is_read(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "v.parquet"
    declaration = {"cargo_type": "bulk_ore", "radiation_alarm": True, "extra": {"x_a": "1"}}
    columns = {"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "score": 0.95}
    pq.write_table(pa.table({**{k: [v] for k, v in columns.items()}, "declaration": [declaration]}), path)
    (verdict,) = read_verdicts(path)
    assert verdict.declaration == declaration


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_rows_without_a_key_twice_are_read_as_written(tmp_path: Path, suffix: str) -> None:
    declaration = {"cargo_type": "bulk_ore", "radiation_alarm": True, "hs_code": "2601"}
    if suffix == ".jsonl":
        text = LINE + f', "declaration": {json.dumps(declaration)}}}\n'
    else:
        text = f'{HEADER},declaration\n{CELLS},"{json.dumps(declaration).replace(chr(34), chr(34) * 2)}"\n'
    (verdict,) = _read(tmp_path, f"v{suffix}", text)
    assert (verdict.score, verdict.declaration) == (0.95, declaration)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "v.jsonl",
            LINE + ', "signal_log_odds": {"one_class": -1.5, "patch_head": Infinity}}\n',
            "v.jsonl:1: not an image verdict row (signal_log_odds: Value error, "
            "signal_log_odds['patch_head'] = inf of image 'a.png' is not a finite number)",
        ),
        (
            "v.csv",
            f'{HEADER},signal_log_odds\n{CELLS},"{{""one_class"": -Infinity}}"\n',
            "v.csv:2: not an image verdict row (signal_log_odds: Value error, "
            "signal_log_odds['one_class'] = -inf of image 'a.png' is not a finite number)",
        ),
    ],
    ids=["jsonl-infinite-log-odds", "csv-infinite-log-odds"],
)
def test_log_odds_that_are_no_finite_number_are_refused(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    """A NaN is recorded as null, which the audit store cannot read back: the batch was not recorded,
    with a message saying a stored record was broken. No scorer wrote one (the predictor has always
    left a non-finite signal out): a row holding one was written otherwise, and is named."""
    with pytest.raises(DatasetFormatError) as info:
        _read(tmp_path, name, text)
    assert str(info.value) == f"{tmp_path}/{message}"


NAN_CELL = '"{""crack"": NaN, ""good"": NaN}"'


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("v.csv", f"{HEADER},type_probabilities\n{CELLS},{NAN_CELL}\n"),  # as the scorer wrote them
        ("v.jsonl", LINE + ', "type_probabilities": {"good": null, "crack": null}}\n'),  # NaN in JSONL
        ("v.jsonl", LINE + ', "type_probabilities": {"good": NaN, "crack": NaN}}\n'),
        ("v.jsonl", LINE + ', "type_probabilities": {"good": NaN, "crack": 0.5}}\n'),
        ("v.csv", f'{HEADER},type_probabilities\n{CELLS},"{{""crack"": -Infinity, ""good"": 1.0}}"\n'),
        ("v.parquet", '{"crack": NaN, "good": NaN}'),
    ],
    ids=["csv-nan", "jsonl-null", "jsonl-nan", "jsonl-one-nan", "csv-infinity", "parquet-nan"],
)
def test_type_probabilities_that_are_no_finite_numbers_are_read_as_none(
    tmp_path: Path, name: str, text: str
) -> None:
    """The scorer wrote a NaN image's probabilities (all NaN) before the predictor gave none for it
    (3e6855d); since such rows were refused (ccb3fd6), the whole file was: `clearsight decide` and
    `score --policy` decided nothing of an output written before. Read as the predictor gives them
    now: none, the image's score kept."""
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {"path": "a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "score": 0.95}
        table = pa.table({**{k: [v] for k, v in columns.items()}, "type_probabilities": [text]})
        pq.write_table(table, tmp_path / name)
        (verdict,) = read_verdicts(tmp_path / name)
    else:
        (verdict,) = _read(tmp_path, name, text)
    assert (verdict.type_probabilities, verdict.score) == ({}, 0.95)  # type: ignore[attr-defined]


def test_a_verdict_made_with_a_probability_that_is_no_finite_number_is_refused() -> None:
    """Only rows read from a file are taken as the predictor gives them now; a verdict made otherwise
    (the HTTP service's) is refused, as its NaN would be recorded as null."""
    from pydantic import ValidationError

    from pipeline.verdicts import ImageVerdict

    with pytest.raises(ValidationError, match=re.escape("type_probabilities['good'] = nan of image 'a.png'")):
        ImageVerdict(path="a.png", type_probabilities={"good": math.nan, "crack": 0.5})


def test_a_nan_score_beside_nan_probabilities_is_never_released(tmp_path: Path) -> None:
    from pipeline.decide import decide_rows
    from pipeline.policy import parse_policy
    from pipeline.verdicts import Tier

    cells = CELLS.replace(",0.95,", ",nan,")
    (verdict,) = _read(tmp_path, "v.csv", f"{HEADER},type_probabilities\n{cells},{NAN_CELL}\n")
    assert verdict.type_probabilities == {} and math.isnan(verdict.score)  # type: ignore[attr-defined]
    policy = parse_policy({"policy_version": "p", "cargo_types": {"bulk_ore": {}}})
    (decision,) = decide_rows(policy, [verdict], audit_key=b"k")  # type: ignore[list-item]
    assert decision.tier is not Tier.RELEASE


def test_finite_probabilities_and_log_odds_are_read_as_written(tmp_path: Path) -> None:
    text = (
        LINE
        + ', "type_probabilities": {"good": 0.0, "crack": 1.0}, "signal_log_odds": {"one_class": -40.5}}\n'
    )
    (verdict,) = _read(tmp_path, "v.jsonl", text)
    assert verdict.type_probabilities == {"good": 0.0, "crack": 1.0}  # type: ignore[attr-defined]
    assert verdict.signal_log_odds == {"one_class": -40.5}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        (
            '{"cargo_type": "bulk_ore", "solid_waste": true}',
            "key 'solid_waste' of image 'a.png' is not a declaration field (accepted: shipment_id, "
            "cargo_type, trader_id, aeo_tier, hs_code, origin, declared_goods, container_id, "
            "radiation_alarm, suspected_solid_waste, document_mismatch, declared_foreign_inclusions, "
            "extra, or a custom key starting with 'x_')",
        ),
        (
            '{"cargo_type": "bulk_ore", "extra": "2601"}',
            "key 'extra' of image 'a.png' is a str; give it as an object of keys of their own",
        ),
        (
            '{"cargo_type": "bulk_ore", "extra": {"solid_waste": true, "radiation": true}}',
            "extra key 'solid_waste' of image 'a.png' is not a declaration column kept under extra "
            "(accepted: hs_code, origin, declared_goods, container_id, or a custom key starting with 'x_')",
        ),
    ],
    ids=["no-field", "extra-not-an-object", "no-column-under-extra"],
)
def test_a_declaration_key_that_no_rule_reads_is_refused(
    tmp_path: Path, declaration: str, message: str
) -> None:
    """Kept aside under extra, a flag given a name of its own never reached the rules: the shipment
    was released. The manifest refuses such a column; so does a row."""
    with pytest.raises(DatasetFormatError) as info:
        _read(tmp_path, "v.jsonl", LINE + f', "declaration": {declaration}}}\n')
    assert str(info.value) == (
        f"{tmp_path}/v.jsonl:1: not an image verdict row (declaration: Value error, {message})"
    )


NOT_TEXT = 'is not text; give the shipment id as a string ("S1")'


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "v.jsonl",
            LINE.replace('"shipment_id": "S1", ', "") + ', "declaration": {"shipment_id": ["S1"]}}\n',
            f"v.jsonl:1: not an image verdict row (declaration: Value error, shipment_id ['S1'] of image "
            f"'a.png' {NOT_TEXT})",
        ),
        (
            "v.jsonl",
            LINE + ', "declaration": {"shipment_id": 1001}}\n',
            f"v.jsonl:1: not an image verdict row (declaration: Value error, shipment_id 1001 of image "
            f"'a.png' {NOT_TEXT})",
        ),
        (
            "v.csv",
            f'{HEADER},declaration\n{CELLS},"{{""shipment_id"": {{""a"": 1}}}}"\n',
            f"v.csv:2: not an image verdict row (declaration: Value error, shipment_id {{'a': 1}} of image "
            f"'a.png' {NOT_TEXT})",
        ),
        (
            "v.jsonl",
            LINE.replace('"shipment_id": "S1"', '"shipment_id": ["S1"]') + "}\n",
            "v.jsonl:1: not an image verdict row (shipment_id: Input should be a valid string)",
        ),
    ],
    ids=["declared-list", "declared-number", "declared-object-csv", "row-list"],
)
def test_a_shipment_id_that_is_no_text_is_refused_naming_file_and_line(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    """Refused when decided, naming the image alone: the officer had to search the files for it."""
    with pytest.raises(DatasetFormatError) as info:
        _read(tmp_path, name, text)
    assert str(info.value) == f"{tmp_path}/{message}"


def test_a_declaration_as_a_manifest_or_a_decision_gives_it_is_read(tmp_path: Path) -> None:
    declaration = {
        "shipment_id": "S1",
        "cargo_type": "bulk_ore",
        "trader_id": "T1",
        "radiation_alarm": False,
        "origin": "AU",
        "x_berth": "7",
        "extra": {"hs_code": "2601", "x_seal": "A7"},
    }
    (verdict,) = _read(tmp_path, "v.jsonl", LINE + f', "declaration": {json.dumps(declaration)}}}\n')
    assert verdict.declaration == declaration  # type: ignore[attr-defined]


def test_mirror_hashes_put_in_a_file_are_not_read(tmp_path: Path) -> None:
    """A scoring run's own lookups (``phash_turns``) are never written to a row, so no row seal
    covers them: one put in a file fed the audit store's near-copy lookups unvouched."""
    turns = json.dumps(["0" * 80])
    (verdict,) = _read(tmp_path, "v.jsonl", LINE + f', "phash_turns": {turns}}}\n')
    assert verdict.phash_turns is None  # type: ignore[attr-defined]
