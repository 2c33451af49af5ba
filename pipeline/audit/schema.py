"""The audit store's tables and schema version.

::

    schema_info    one row: the schema version this database was created with
    audit_head     one row: seq and hash of the last record; appends lock it (PostgreSQL FOR UPDATE)
                   and verification compares the chain's tail with it (catches a deleted tail)
    audit_records  the append-only chain of decisions and outcomes

Columns next to ``content`` (kind, shipment id, tier, ...) are copies kept for queries; verification
checks them against the hashed content, so editing one is caught like editing the content.

Since version 5 each record may carry a ``seal``, an HMAC of its hash under a key only the server
holds (:mod:`pipeline.audit.seal`). The column is added to ``audit_records`` by
:func:`~pipeline.audit.seal.add_seal_column`, and is read and written through
:data:`sealed_records` only: :data:`audit_records` leaves it out, so that every read works alike on
a store of version 4 that a reader did not upgrade.

Beside the chain, outside its hash, two indexes built from it (verification checks each decision's
rows against its hashed content: a picture sent again is looked up there)::

    audit_image_index     which shipments each image (by content hash) was decided in: a picture sent
                          again for another shipment is found without reading every record (version 2)
    audit_image_likeness  the same by perceptual hash, cut into bands looked up exactly: a picture
                          re-encoded, resized or retouched is found too (version 3;
                          :mod:`datasets.perceptual_hash`), and mirrored or turned (version 4: the
                          lookup brings the turns, the index is unchanged)

And one of the policies decided under (version 6)::

    audit_policy_versions  each distinct (policy_version, policy_sha256) the decisions name, with the
                           first decision naming it: a policy version recorded under another sha256
                           is refused by one indexed read, not a read of every record

A store at version 1 is upgraded by making both image indexes again from its chain; at 2, by an
empty likeness index (its decisions hold no perceptual hash); at 3, by its version alone; from each,
and at 4, by the seal column (the records it holds stay unsealed); from each, and at 5, by the
policy index, made from its chain.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, PrimaryKeyConstraint, String, Table, Text

from datasets.perceptual_hash import BANDS

__all__ = [
    "SCHEMA_VERSION",
    "SUPERSEDED_INDEXES",
    "audit_head",
    "audit_records",
    "image_index",
    "image_likeness",
    "index_metadata",
    "metadata",
    "policy_versions",
    "schema_info",
    "sealed_records",
]

SCHEMA_VERSION = 6
"""Bump on any change to the tables or the hashed content layout. 2: the image index, and decisions
that may say where their pictures were seen before (``seen_in``) and who sent them (``submitted_by``).
3: the likeness index, and images that may carry a perceptual hash (``phash``) and the shipments that
hold a near-copy (``similar_in``). 4: images that may say how they are a near-copy turned or mirrored
(``similar_turn``, ``turned_phash``); the tables are those of 3. An older store is upgraded only
when opened to record (``create``), by a role that may create tables, and read as it is otherwise,
so that reading it with a newer Clearsight locks no older one out. An older Clearsight refuses a
newer store by its version (a decision of 4 does not parse under 3). 5: the ``seal`` column of
``audit_records`` (records may carry a keyed seal); a store at 4 is upgraded, like an older one,
only when opened to record, and read as it is (no seals) otherwise. An older Clearsight must not
write to a store at 5: its records would carry no seal after sealed ones, which verification
refuses as forged. 6: ``audit_policy_versions``; a store at 5 is upgraded, like an older one, only
when opened to record, and read as it is otherwise. An older Clearsight must not write to a store
at 6: the pairs of the policies it decides under would be missing from the table, and a version
reused under other rules would pass (verification names the record whose pair is missing)."""

metadata = MetaData()

schema_info = Table(
    "schema_info",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
    Column("created_at", String(40), nullable=False),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("record_hash", String(64), nullable=False),
)

audit_records = Table(
    "audit_records",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),  # "decision" | "outcome"
    Column("shipment_id", String(128), nullable=False),
    Column("tier", String(32), nullable=True),  # decisions only
    Column("ref_seq", BigInteger, nullable=True),  # outcomes: the decision they close
    Column("idempotency_key", String(256), nullable=True, unique=True),
    Column("created_at", String(40), nullable=False),
    Column("content", Text, nullable=False),
    # Unique links are the backstop against a forked chain if two writers ever got past the lock.
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("record_hash", String(64), nullable=False, unique=True),
)

# (shipment_id, seq) and (ref_seq, seq): a shipment's decisions after a record (whether one was
# decided again since), and a decision's outcomes after one (whether it was corrected since), read
# from one index each. On single-column indexes PostgreSQL, its tables not yet analysed, intersected
# each shipment's entries with every record numbered after it: a picture held in 2,000 shipments
# took seconds to look up. They replace those indexes (:data:`SUPERSEDED_INDEXES`), which a writer
# drops from an older store as it adds these (:mod:`pipeline.audit.migrate`); no version moves, as
# an older Clearsight reads and writes the same tables through either.
Index("ix_audit_records_shipment_id_seq", audit_records.c.shipment_id, audit_records.c.seq)
Index("ix_audit_records_ref_seq_seq", audit_records.c.ref_seq, audit_records.c.seq)
SUPERSEDED_INDEXES = ("ix_audit_records_shipment_id", "ix_audit_records_ref_seq")
"""The indexes of ``audit_records`` before the two above took their place."""

sealed_metadata = MetaData()  # never created from: the seal column is added (seal.add_seal_column)

sealed_records = Table(
    "audit_records",
    sealed_metadata,
    *(Column(column.name, column.type, primary_key=column.primary_key) for column in audit_records.columns),
    Column("seal", String(64), nullable=True),  # HMAC-SHA256(K, record_hash), hex; NULL: unsealed
)
"""``audit_records`` with its ``seal`` column (version 5): what appends with a key, verification and
the chain export use where the store has the column."""

index_metadata = MetaData()

image_index = Table(
    "audit_image_index",
    index_metadata,
    Column("sha256", String(64), nullable=False, index=True),
    Column("shipment_id", String(128), nullable=False),
    Column("seq", BigInteger, nullable=False),  # the decision record that holds the image
)

image_likeness = Table(
    "audit_image_likeness",
    index_metadata,
    Column("phash", String(80), nullable=False),
    # the coarse part as a signed 64-bit integer, so that the database measures the distance
    Column("coarse", BigInteger, nullable=False),
    Column("shipment_id", String(128), nullable=False),
    Column("seq", BigInteger, nullable=False),
    *(Column(f"band{i}", Integer, nullable=False) for i in range(BANDS)),
)
# (band, seq): a band looked up from a sequence number on (the re-check under the write lock) reads
# the records since, not every record that ever shared the band
for _band in range(BANDS):
    Index(f"ix_audit_image_likeness_band{_band}_seq", image_likeness.c[f"band{_band}"], image_likeness.c.seq)

policy_versions = Table(
    "audit_policy_versions",
    index_metadata,
    # Text, not String(n): a forged or pre-rule record's values are taken as they are, however long
    Column("policy_version", Text, nullable=False),
    Column("policy_sha256", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),  # the first decision recorded under the pair
    # the key is the backstop for two writers adding one pair at once (they insert on conflict do
    # nothing), and its leading column is what a version's pairs are looked up by
    PrimaryKeyConstraint("policy_version", "policy_sha256", name="pk_audit_policy_versions"),
)
