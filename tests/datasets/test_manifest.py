"""Manifests: CSV and JSONL parsing, validation messages, path safety, and the writer round trip."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from datasets.errors import DatasetFormatError, UnsafePathError
from datasets.manifest import ManifestRow, iter_manifest, read_manifest, write_manifest

HEADER = "path,shipment_id,cargo_type,label,anomaly_type,mask_path"


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """A manifest folder with a few image and mask files (contents are not read)."""
    root = tmp_path / "archive"
    for name in ("img/a.png", "img/b.png", "img/c.png", "masks/b_mask.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    return root


def _csv(root: Path, text: str, name: str = "m.csv") -> Path:
    path = root / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_rows(archive: Path) -> None:
    manifest = _csv(
        archive,
        "path,shipment_id,cargo_type,label,anomaly_type,mask_path,trader_id,aeo_tier,hs_code,"
        "radiation_alarm,document_mismatch,x_berth\n"
        "img/a.png,S1,bulk_ore,good,,,T9,AEOF,260111,no,,7\n"
        "img/b.png, S1 ,bulk_ore,Anomalous,foreign_object,masks/b_mask.png,T9,,260111,YES,0,\n"
        "\n"
        "img/c.png,S2,bulk_ore,,,,,,,,,\n",
    )
    rows = read_manifest(manifest)
    root = archive.resolve()
    assert rows == [
        ManifestRow(
            path=root / "img/a.png", shipment_id="S1", cargo_type="bulk_ore", label="good", anomaly_type=None,
            mask_path=None, line=2,
            declaration={"shipment_id": "S1", "cargo_type": "bulk_ore", "trader_id": "T9", "aeo_tier": "AEOF",
                         "hs_code": "260111", "radiation_alarm": False, "document_mismatch": False,
                         "x_berth": "7"},
        ),
        ManifestRow(
            path=root / "img/b.png", shipment_id="S1", cargo_type="bulk_ore", label="anomalous",
            anomaly_type="foreign_object", mask_path=root / "masks/b_mask.png", line=3,
            declaration={"shipment_id": "S1", "cargo_type": "bulk_ore", "trader_id": "T9", "aeo_tier": None,
                         "hs_code": "260111", "radiation_alarm": True, "document_mismatch": False,
                         "x_berth": None},
        ),
        ManifestRow(
            path=root / "img/c.png", shipment_id="S2", cargo_type="bulk_ore", label=None, anomaly_type=None,
            mask_path=None, line=5,
            declaration={"shipment_id": "S2", "cargo_type": "bulk_ore", "trader_id": None, "aeo_tier": None,
                         "hs_code": None, "radiation_alarm": False, "document_mismatch": False,
                         "x_berth": None},
        ),
    ]  # fmt: skip


def test_jsonl_rows_and_types(archive: Path) -> None:
    lines = [
        {"path": "img/a.png", "shipment_id": "S1", "cargo_type": "vacuum_pack", "hs_code": 854231,
         "suspected_solid_waste": True, "declared_foreign_inclusions": "1", "x_note": "ok"},
        {"path": "img/b.png", "shipment_id": "S1", "cargo_type": "vacuum_pack", "label": None,
         "origin": None},
    ]  # fmt: skip
    manifest = archive / "m.ndjson"
    manifest.write_text("\n".join(json.dumps(x) for x in lines[:1]) + "\n\n" + json.dumps(lines[1]) + "\n")
    rows = read_manifest(manifest)
    assert [(r.line, r.label) for r in rows] == [(1, None), (3, None)]
    assert rows[0].declaration == {
        "shipment_id": "S1", "cargo_type": "vacuum_pack", "hs_code": "854231",
        "suspected_solid_waste": True, "declared_foreign_inclusions": True, "x_note": "ok",
    }  # fmt: skip
    assert rows[1].declaration == {"shipment_id": "S1", "cargo_type": "vacuum_pack", "origin": None}


def test_quoted_multiline_csv_field_keeps_line_numbers(archive: Path) -> None:
    manifest = _csv(
        archive,
        "path,shipment_id,cargo_type,declared_goods\n"
        'img/a.png,S1,bulk_ore,"iron ore,\nfines"\n'
        "img/b.png,S1,bulk_ore,x\n",
    )
    rows = read_manifest(manifest)
    assert [(r.line, r.declaration["declared_goods"]) for r in rows] == [(2, "iron ore,\nfines"), (4, "x")]


def test_excel_bom_is_accepted(archive: Path) -> None:
    manifest = archive / "m.csv"
    manifest.write_bytes(b"\xef\xbb\xbfpath,shipment_id,cargo_type\nimg/a.png,S1,bulk_ore\n")
    assert [r.shipment_id for r in read_manifest(manifest)] == ["S1"]


CSV_ERRORS = [
    ("unknown-column", "path,shipment_id,cargo_type,lable\nimg/a.png,S1,bulk_ore,good\n", DatasetFormatError,
     "{m}:1: unknown column 'lable' (accepted: path, shipment_id, cargo_type, label, anomaly_type, "
     "mask_path, trader_id, aeo_tier, hs_code, origin, declared_goods, container_id, radiation_alarm, "
     "suspected_solid_waste, document_mismatch, declared_foreign_inclusions, "
     "or a custom column starting with 'x_')"),
    ("missing-column", "path,cargo_type\nimg/a.png,bulk_ore\n", DatasetFormatError,
     "{m}:1: missing required column 'shipment_id'"),
    ("duplicate-column", "path,shipment_id,cargo_type,path\n", DatasetFormatError,
     "{m}:1: duplicate column 'path'"),
    ("missing-value", f"{HEADER}\nimg/a.png,,bulk_ore,,,\n", DatasetFormatError,
     "{m}:2: missing required value 'shipment_id'"),
    ("bad-label", f"{HEADER}\nimg/a.png,S1,bulk_ore,ok,,\n", DatasetFormatError,
     "{m}:2: label must be good, anomalous or empty, got 'ok'"),
    ("type-on-good", f"{HEADER}\nimg/a.png,S1,bulk_ore,good,crack,\n", DatasetFormatError,
     "{m}:2: anomaly_type 'crack' given with label 'good' (an anomaly type needs label anomalous)"),
    ("type-without-label", f"{HEADER}\nimg/a.png,S1,bulk_ore,,crack,\n", DatasetFormatError,
     "{m}:2: anomaly_type 'crack' given with label 'empty' (an anomaly type needs label anomalous)"),
    ("mask-on-good", f"{HEADER}\nimg/a.png,S1,bulk_ore,good,,masks/b_mask.png\n", DatasetFormatError,
     "{m}:2: mask_path given for a good image (good images have no defects)"),
    ("mask-missing", f"{HEADER}\nimg/b.png,S1,bulk_ore,anomalous,,masks/nope.png\n", DatasetFormatError,
     "{m}:2: mask not found: {root}/masks/nope.png"),
    ("image-missing", f"{HEADER}\nimg/zz.png,S1,bulk_ore,,,\n", DatasetFormatError,
     "{m}:2: image not found: {root}/img/zz.png"),
    ("duplicate-path",
     f"{HEADER}\nimg/a.png,S1,bulk_ore,,,\nimg/b.png,S1,bulk_ore,,,\n./img/../img/a.png,S2,bulk_ore,,,\n",
     DatasetFormatError, "{m}:4: duplicate path {root}/img/a.png (first on line 2)"),
    ("bad-flag", "path,shipment_id,cargo_type,radiation_alarm\nimg/a.png,S1,bulk_ore,maybe\n",
     DatasetFormatError,
     "{m}:2: radiation_alarm must be true/false/1/0/yes/no or empty, got 'maybe'"),
    ("ragged-row", f"{HEADER}\nimg/a.png,S1,bulk_ore\n", DatasetFormatError,
     "{m}:2: row has 3 fields but the header has 6"),
    ("header-only", f"{HEADER}\n", DatasetFormatError, "{m}: empty manifest, no rows"),
    ("empty-file", "", DatasetFormatError, "{m}: empty manifest, no header"),
    ("dotdot-escape", f"{HEADER}\n../outside.png,S1,bulk_ore,,,\n", UnsafePathError,
     "{m}:2: path '../outside.png' resolves to {parent}/outside.png, outside the manifest folder {root}"),
    ("absolute-escape", f"{HEADER}\n/etc/hostname,S1,bulk_ore,,,\n", UnsafePathError,
     "{m}:2: path '/etc/hostname' resolves to /etc/hostname, outside the manifest folder {root}"),
    ("mask-escape", f"{HEADER}\nimg/b.png,S1,bulk_ore,anomalous,,../m.png\n", UnsafePathError,
     "{m}:2: mask_path '../m.png' resolves to {parent}/m.png, outside the manifest folder {root}"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "error", "message"), [c[1:] for c in CSV_ERRORS], ids=[c[0] for c in CSV_ERRORS]
)
def test_csv_errors(archive: Path, text: str, error: type[Exception], message: str) -> None:
    manifest = _csv(archive, text)
    with pytest.raises(error) as info:
        read_manifest(manifest)
    assert type(info.value) is error
    root = archive.resolve()
    assert str(info.value) == message.format(m=manifest, root=root, parent=root.parent)


JSONL_ERRORS = [
    ("malformed", '{"path": "img/a.png", "shipment_id": "S1", "cargo_type": "o"}\n{"path": \n',
     "{m}:2: malformed JSON (Expecting value, column 10)"),
    ("not-object", '["img/a.png"]\n', "{m}:1: a line must be a JSON object, got list"),
    ("unknown-key", '{"path": "img/a.png", "shipment_id": "S1", "cargo_type": "o", "weight": 3}\n',
     "{m}:1: unknown column 'weight' (accepted: "),
    ("nested-value", '{"path": "img/a.png", "shipment_id": {"id": 1}, "cargo_type": "o"}\n',
     "{m}:1: column 'shipment_id' must be a string, got dict"),
    ("flag-number", '{"path": "img/a.png", "shipment_id": "S1", "cargo_type": "o", "document_mismatch": 2}\n',
     "{m}:1: document_mismatch must be true/false/1/0/yes/no or empty, got 2"),
    ("blank-only", "\n\n", "{m}: empty manifest, no rows"),
    ("duplicate-key", '{"path": "img/a.png", "shipment_id": "S1", "cargo_type": "o", "path": "img/b.png"}\n',
     "{m}:1: key 'path' appears twice in one object"),
    ("nan", '{"path": "img/a.png", "shipment_id": NaN, "cargo_type": "o"}\n',
     "{m}:1: NaN is not a value a manifest may hold"),
    ("nul-in-path", '{"path": "img/a.png\\u0000", "shipment_id": "S1", "cargo_type": "o"}\n',
     "{m}:1: column 'path' = 'img/a.png\\x00' holds a control character"),
    ("newline-in-id", '{"path": "img/a.png", "shipment_id": "S\\n1", "cargo_type": "o"}\n',
     "{m}:1: column 'shipment_id' = 'S\\n1' holds a control character"),
    # read as text, then failing in every UTF-8 writer after the archive was scored
    ("lone-surrogate", '{"path": "img/a.png", "shipment_id": "S\\ud800", "cargo_type": "o"}\n',
     "{m}:1: '\\ud800' is half a character (a lone UTF-16 surrogate), which no file or database"),
    ("lone-surrogate-key", '{"path": "img/a.png", "shipment_id": "S1", "cargo_type": "o", "x_\\udc00": 1}\n',
     "{m}:1: '\\udc00' is half a character"),
    ("too-deep", '{"path": "img/a.png", "shipment_id": "S1", "x_n": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
     "{m}:1: a value is nested too deeply"),  # a RecursionError, the CLI's "unexpected error"
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in JSONL_ERRORS], ids=[c[0] for c in JSONL_ERRORS])
def test_jsonl_errors(archive: Path, text: str, message: str) -> None:
    manifest = _csv(archive, text, name="m.jsonl")
    with pytest.raises(DatasetFormatError) as info:
        read_manifest(manifest)
    assert str(info.value).startswith(message.format(m=manifest))


def test_symlink_out_of_the_folder_is_unsafe(archive: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    os.symlink(outside, archive / "img" / "link.png")
    manifest = _csv(archive, "path,shipment_id,cargo_type\nimg/link.png,S1,bulk_ore\n")
    with pytest.raises(
        UnsafePathError, match=r":2: path 'img/link.png' resolves to .*secret\.png, outside the manifest"
    ):
        read_manifest(manifest)


@pytest.mark.parametrize(
    ("name", "ok"), [("m.csv", True), ("m.CSV", True), ("m.jsonl", True), ("m.json", False), ("m.txt", False)]
)
def test_extension_picks_the_format(archive: Path, name: str, ok: bool) -> None:
    manifest = _csv(archive, "path,shipment_id,cargo_type\nimg/a.png,S1,bulk_ore\n", name=name)
    if ok and name.lower().endswith(".csv"):
        assert len(read_manifest(manifest)) == 1
    elif ok:
        with pytest.raises(DatasetFormatError, match=r":1: malformed JSON"):
            read_manifest(manifest)
    else:
        suffix = Path(name).suffix
        with pytest.raises(DatasetFormatError) as info:
            read_manifest(manifest)
        assert (
            str(info.value)
            == f"{manifest}: unknown manifest extension '{suffix}' (accepted: .csv, .jsonl, .ndjson)"
        )


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"m\.csv: manifest not found$"):
        read_manifest(tmp_path / "m.csv")


def test_check_files_off_allows_absent_images(archive: Path) -> None:
    manifest = _csv(archive, "path,shipment_id,cargo_type\nimg/later.png,S1,bulk_ore\n")
    assert read_manifest(manifest, check_files=False)[0].path == archive.resolve() / "img/later.png"


def test_streaming_yields_rows_before_a_later_error(archive: Path) -> None:
    manifest = _csv(archive, f"{HEADER}\nimg/a.png,S1,bulk_ore,,,\nimg/b.png,S1,bulk_ore,bad,,\n")
    rows = iter_manifest(manifest)
    assert next(rows).line == 2
    with pytest.raises(DatasetFormatError, match=r":3: label must be"):
        next(rows)


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl"])
def test_write_then_read_round_trip(archive: Path, name: str) -> None:
    root = archive.resolve()
    rows = [
        {"path": root / "img/a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "label": "good",
         "radiation_alarm": False, "x_seed": 3, "trader_id": None},
        {"path": "img/b.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "label": "anomalous",
         "anomaly_type": "wet_patch", "mask_path": root / "masks/b_mask.png", "radiation_alarm": True},
    ]  # fmt: skip
    write_manifest(archive / name, iter(rows))
    text = (archive / name).read_text()
    assert str(root) not in text  # paths inside the folder are written relative
    if name.endswith(".csv"):
        assert (
            text.splitlines()[0]
            == "path,shipment_id,cargo_type,label,anomaly_type,mask_path,trader_id,radiation_alarm,x_seed"
        )
    back = read_manifest(archive / name)
    assert [(r.path, r.label, r.anomaly_type, r.mask_path) for r in back] == [
        (root / "img/a.png", "good", None, None),
        (root / "img/b.png", "anomalous", "wet_patch", root / "masks/b_mask.png"),
    ]
    assert back[0].declaration["radiation_alarm"] is False and back[1].declaration["radiation_alarm"] is True
    assert back[0].declaration["x_seed"] == "3"
    assert [p.name for p in archive.iterdir() if p.name.startswith(".")] == []  # no temp file left


@pytest.mark.parametrize("inside", ["\r", "\n", "\r\n"])
def test_a_csv_cell_with_a_line_break_is_written_so_that_it_reads_back(archive: Path, inside: str) -> None:
    """A cell holding a carriage return was written bare (csv quotes only its line terminator's
    characters, and that was '\\n'): read_manifest split the row and refused the manifest it had just
    been given ('row has 4 fields but the header has 5')."""
    goods = f"iron ore{inside}fines, wet"
    write_manifest(
        archive / "m.csv",
        [{"path": "img/a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "declared_goods": goods,
          "x_note": f"seal{inside}7"},
         {"path": "img/b.png", "shipment_id": "S2", "cargo_type": "bulk_ore"}],
    )  # fmt: skip
    back = read_manifest(archive / "m.csv")
    assert [(r.path.name, r.shipment_id, r.declaration.get("declared_goods")) for r in back] == [
        ("a.png", "S1", goods),
        ("b.png", "S2", None),
    ]
    assert back[0].declaration["x_note"] == f"seal{inside}7"
    # a file name holding one: quoted too, so the manifest reads as the rows written, and the reader
    # refuses the name for what it is (a control character in a path), not as a broken row
    odd = f"img/scan{inside}07.png"
    write_manifest(archive / "odd.csv", [{"path": odd, "shipment_id": "S1", "cargo_type": "bulk_ore"}])
    with (archive / "odd.csv").open(newline="", encoding="utf-8") as fh:
        assert list(csv.reader(fh)) == [["path", "shipment_id", "cargo_type"], [odd, "S1", "bulk_ore"]]
    with pytest.raises(DatasetFormatError, match=r"odd\.csv:2: column 'path' = .* holds a control character"):
        read_manifest(archive / "odd.csv", check_files=False)


def test_a_csv_manifest_without_line_breaks_in_cells_is_written_as_before(archive: Path) -> None:
    """Only a cell holding a line break is quoted otherwise: every other manifest keeps its bytes."""
    write_manifest(
        archive / "m.csv",
        [{"path": "img/a.png", "shipment_id": "S1", "cargo_type": "bulk_ore", "declared_goods": 'ore, "wet"',
          "radiation_alarm": True, "x_seed": 3},
         {"path": "img/b.png", "shipment_id": "S2", "cargo_type": "bulk_ore", "x_seed": None}],
    )  # fmt: skip
    assert (archive / "m.csv").read_bytes() == (
        b"path,shipment_id,cargo_type,declared_goods,radiation_alarm,x_seed\n"
        b'img/a.png,S1,bulk_ore,"ore, ""wet""",true,3\n'
        b"img/b.png,S2,bulk_ore,,,\n"
    )


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"path": "a.png", "shipment_id": "S1"}], "row 1: missing required value 'cargo_type'"),
        (
            [{"path": "a.png", "shipment_id": "S1", "cargo_type": "o", "colour": "red"}],
            "row 1: unknown column 'colour'",
        ),
    ],
)
def test_writer_refuses_bad_rows(tmp_path: Path, rows: list[dict[str, object]], message: str) -> None:
    with pytest.raises(DatasetFormatError, match=f"^{message}"):
        write_manifest(tmp_path / "m.csv", rows)
    assert not (tmp_path / "m.csv").exists()


def test_writer_refuses_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"unknown manifest extension '\.json'"):
        write_manifest(tmp_path / "m.json", [])


@pytest.mark.parametrize(
    ("label", "anomaly_type", "expected"),
    [
        ("good", "good", ("good", None)),
        ("anomalous", "crack", ("anomalous", "crack")),
        ("", "", (None, None)),
    ],
)
def test_label_and_type_combinations_that_are_accepted(
    archive: Path, label: str, anomaly_type: str, expected: tuple[str | None, str | None]
) -> None:
    # "good" spelled out as the type of a good row (as the MVTec folder name) reads as no type.
    manifest = _csv(archive, f"{HEADER}\nimg/a.png,S1,bulk_ore,{label},{anomaly_type},\n")
    row = read_manifest(manifest)[0]
    assert (row.label, row.anomaly_type) == expected


def test_good_as_the_type_of_an_anomalous_row_is_refused(archive: Path) -> None:
    manifest = _csv(archive, f"{HEADER}\nimg/a.png,S1,bulk_ore,anomalous,good,\n")
    with pytest.raises(
        DatasetFormatError, match=r":2: anomaly_type 'good' on an anomalous row \(use label good instead\)$"
    ):
        read_manifest(manifest)


def test_a_path_is_taken_as_typed_with_the_spaces_at_its_ends(archive: Path) -> None:
    """Stripped, ``"a.png "`` named ``a.png``, another picture, which was scored (and its shipment
    released) for it; the other columns are still stripped."""
    (archive / "img" / "a.png ").write_bytes(b"y")  # another container's picture, a space at its end
    manifest = _csv(archive, 'path,shipment_id,cargo_type,mask_path\n"img/a.png ", S1 ,bulk_ore,\n')
    (row,) = read_manifest(manifest)
    assert (row.path.name, row.shipment_id) == ("a.png ", "S1")
    # where the exact name is no file, the error names what its stripped spelling names
    (archive / "img" / "a.png ").unlink()
    with pytest.raises(DatasetFormatError) as refused:
        read_manifest(manifest)
    assert str(refused.value) == (
        f"{manifest}:2: image not found: {archive / 'img' / 'a.png '} (the path has spaces at its ends; "
        f"without them it names {archive / 'img' / 'a.png'})"
    )
    (row,) = read_manifest(manifest, check_files=False)
    assert row.path.name == "a.png "
    # a blank path is still a missing one
    blank = _csv(archive, 'path,shipment_id,cargo_type\n"  ",S1,bulk_ore\n', name="blank.csv")
    with pytest.raises(DatasetFormatError, match="missing required value 'path'"):
        read_manifest(blank)


_UNSHOWN = (
    "control and format characters and line or paragraph separators are not accepted (they do not "
    "show as themselves, and hide or reorder the text around them)"
)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (  # read as 'T-42' on the review page
            "m.csv",
            f"{HEADER},trader_id\nimg/a.png,S1,ore,,,,T-1\nimg/b.png,S2,ore,,,,\u202e24-T\n",
            "{m}:3: column 'trader_id' holds U+202E (RIGHT-TO-LEFT OVERRIDE): " + _UNSHOWN,
        ),
        (  # read as 'S-42' on the review page and in every message naming the shipment
            "m.csv",
            f"{HEADER}\nimg/a.png,S-1,ore,,,\nimg/b.png,\u202e24-S,ore,,,\n",
            "{m}:3: column 'shipment_id' holds U+202E (RIGHT-TO-LEFT OVERRIDE): " + _UNSHOWN,
        ),
        (  # picks no model: an error row, decided and recorded, its cargo type shown reversed
            "m.csv",
            f"{HEADER}\nimg/a.png,S-1,ore,,,\nimg/b.png,S-2,\u202eore,,,\n",
            "{m}:3: column 'cargo_type' holds U+202E (RIGHT-TO-LEFT OVERRIDE): " + _UNSHOWN,
        ),
        (  # a name: no line break, which free text takes
            "m.jsonl",
            '{"path": "img/a.png", "shipment_id": "S1", "cargo_type": "o\\u2028re"}\n',
            "{m}:1: column 'cargo_type' holds U+2028 (LINE SEPARATOR): " + _UNSHOWN,
        ),
        (  # an id: no joiner, which free text takes
            "m.jsonl",
            '{"path": "img/a.png", "shipment_id": "S\\u200d1", "cargo_type": "o"}\n',
            "{m}:1: column 'shipment_id' holds U+200D (ZERO WIDTH JOINER): " + _UNSHOWN,
        ),
        (
            "m.jsonl",
            '{"path": "img/a.png", "shipment_id": "S1", "cargo_type": "o", "aeo_tier": "AEO\\u00ad"}\n',
            "{m}:1: column 'aeo_tier' holds U+00AD (SOFT HYPHEN): " + _UNSHOWN,
        ),
        (  # a custom column is a key of the declaration's extra: a line break is free text's, not a key's
            "m.csv",
            f'{HEADER},"x_goods\nx_alarm"\nimg/a.png,S1,ore,,,,no\n',
            "{m}:1: column name 'x_goods\\nx_alarm' holds U+000A: " + _UNSHOWN,
        ),
        (
            "m.jsonl",
            '{"path": "img/a.png", "shipment_id": "S1", "cargo_type": "o", "x_goods\\u2028": "ore"}\n',
            "{m}:1: column name 'x_goods\\u2028' holds U+2028 (LINE SEPARATOR): " + _UNSHOWN,
        ),
        (
            "m.csv",
            "path,shipment_id,cargo_type,hs_code\nimg/a.png,S1,ore,2601\u200b\n",
            "{m}:2: column 'hs_code' holds U+200B (ZERO WIDTH SPACE): " + _UNSHOWN,
        ),
        (  # rewrites the terminal that prints it
            "m.jsonl",
            '{"path": "img/a.png", "shipment_id": "S1", "cargo_type": "o", "x_goods": "ore\\u001b[2J"}\n',
            "{m}:1: column 'x_goods' holds U+001B: " + _UNSHOWN,
        ),
    ],
    ids=["trader-bidi", "shipment-bidi", "cargo-bidi", "cargo-separator", "shipment-joiner",
         "tier-soft-hyphen", "custom-name-line-break", "custom-name-separator", "extra-zero-width",
         "extra-escape"],
)  # fmt: skip
def test_declared_text_that_does_not_show_as_itself_is_refused(
    archive: Path, name: str, text: str, message: str
) -> None:
    """The character rule of a declaration (datasets.shown_text), held when the manifest is read:
    ``score`` without --policy builds no declaration, and wrote these into rows that ``decide
    --verdicts`` takes as written."""
    manifest = _csv(archive, text, name=name)
    with pytest.raises(DatasetFormatError) as info:
        read_manifest(manifest)
    assert str(info.value) == message.format(m=manifest)


def test_free_text_may_span_lines(archive: Path) -> None:
    manifest = _csv(
        archive,
        'path,shipment_id,cargo_type,declared_goods,x_note\nimg/a.png,S1,ore,"iron\nore","a\tb\r\nc"\n',
    )
    (row,) = read_manifest(manifest)
    assert row.declaration["declared_goods"] == "iron\nore"
    assert row.declaration["x_note"] == "a\tb\r\nc"


def test_free_text_may_hold_the_joiners(archive: Path) -> None:
    """A goods description in Persian ("iron ore") is written with a zero-width non-joiner, an emoji
    sequence with a joiner: extra's text takes them, an id does not (datasets.shown_text)."""
    manifest = _csv(
        archive,
        "path,shipment_id,cargo_type,declared_goods,x_label\n"
        "img/a.png,S1,ore,\u0633\u0646\u06af\u200c\u0622\u0647\u0646,\U0001f469\u200d\U0001f52c\n",
    )
    (row,) = read_manifest(manifest)
    assert row.declaration["declared_goods"] == "\u0633\u0646\u06af\u200c\u0622\u0647\u0646"
    assert row.declaration["x_label"] == "\U0001f469\u200d\U0001f52c"
    refused = _csv(
        archive, "path,shipment_id,cargo_type,trader_id\nimg/a.png,S1,ore,T\u200c42\n", name="t.csv"
    )
    with pytest.raises(
        DatasetFormatError, match=r":2: column 'trader_id' holds U\+200C \(ZERO WIDTH NON-JOINER\)"
    ):
        read_manifest(refused)


def test_a_cargo_type_is_a_name_and_may_hold_the_joiners(archive: Path) -> None:
    """Persian "pipes" is spelt with a zero-width non-joiner: a model card took it as a cargo type
    (models.artifact.cargo_type_problem), a manifest refused it as an id, so the model's rows could
    never be read. A cargo type is a name (datasets.shown_text): the joiners, no bidi control."""
    pipes = "\u0644\u0648\u0644\u0647\u200c\u0647\u0627"
    manifest = _csv(archive, f"path,shipment_id,cargo_type\nimg/a.png,S1,{pipes}\n")
    (row,) = read_manifest(manifest)
    assert row.cargo_type == pipes
    for refused in ("\u202ebulk_ore", "bulk\u200bore"):
        with pytest.raises(DatasetFormatError, match=r":2: column 'cargo_type' holds U\+20"):
            read_manifest(
                _csv(archive, f"path,shipment_id,cargo_type\nimg/a.png,S1,{refused}\n", name="r.csv")
            )
