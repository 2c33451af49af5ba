"""Wrong API keys per client address: a sliding window, a wait past the limit, bounded memory,
counted alike by every worker of one server."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from serve_fakes import OFFICER_KEY, auth

from serve import lockout
from serve.auth import KeyRing, parse_api_keys
from serve.deps import authenticate
from serve.errors import TooManyAttemptsError
from serve.lockout import FailedAttempts, Failures, MemoryFailures, SharedFailures

FAILURES: dict[str, Callable[[Path], Failures]] = {
    "memory": lambda _: MemoryFailures(),
    "shared": lambda tmp: SharedFailures(tmp / "data" / "lockout.sqlite"),
}


@pytest.fixture(params=sorted(FAILURES))
def failures(request: pytest.FixtureRequest, tmp_path: Path) -> Failures:
    """Where wrong keys are counted: in memory, and in the file the workers share."""
    return FAILURES[request.param](tmp_path)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_waits_after_the_limit_until_the_window_passes(failures: Failures) -> None:
    clock = Clock()
    attempts = FailedAttempts(3, window_s=60.0, clock=clock, failures=failures)
    for step in range(3):
        attempts.check("10.0.0.7")
        attempts.failed("10.0.0.7")
        clock.now += 10.0 * (step < 2)
    with pytest.raises(
        TooManyAttemptsError,
        match=r"^3 wrong API keys from this address in the last 60 s; try again in 40 s$",
    ) as info:
        attempts.check("10.0.0.7")
    assert info.value.retry_after_s == 40
    attempts.check("10.0.0.8")  # another address is not held
    clock.now += 40.0  # the first failure leaves the window
    attempts.check("10.0.0.7")


def test_a_limit_of_zero_counts_nothing(failures: Failures) -> None:
    attempts = FailedAttempts(0, failures=failures)
    for _ in range(100):
        attempts.failed("a")
    attempts.check("a")


def test_memory_stays_bounded(monkeypatch: pytest.MonkeyPatch, failures: Failures) -> None:
    monkeypatch.setattr(lockout, "MAX_TRACKED", 5)
    attempts = FailedAttempts(1, failures=failures)
    for n in range(20):
        attempts.failed(f"10.0.0.{n}")
    attempts.check("10.0.0.0")  # forgotten: the longest quiet go first
    with pytest.raises(TooManyAttemptsError):
        attempts.check("10.0.0.19")


def test_other_addresses_within_their_limit_do_not_free_a_locked_one(
    monkeypatch: pytest.MonkeyPatch, failures: Failures
) -> None:
    """Addresses are forgotten only past MAX_TRACKED of them: the file kept the newest MAX_TRACKED
    wrong keys of all addresses, so MAX_TRACKED / limit addresses within their limit pushed a locked
    address's count out within the minute (500 addresses at 20 a minute, with the real numbers)."""
    monkeypatch.setattr(lockout, "MAX_TRACKED", 5)
    clock = Clock()
    attempts = FailedAttempts(3, window_s=60.0, clock=clock, failures=failures)
    for _ in range(3):
        attempts.failed("10.0.0.7")
    for n in range(4):  # 12 wrong keys of 4 other addresses, none past its limit
        for _ in range(3):
            clock.now += 0.1
            attempts.failed(f"10.0.1.{n}")
    with pytest.raises(TooManyAttemptsError, match=r"^3 wrong API keys"):
        attempts.check("10.0.0.7")
    attempts.failed("10.0.1.4")  # the sixth address: the longest quiet goes
    attempts.check("10.0.0.7")


def test_wrong_keys_over_http_get_429_then_even_the_right_key_waits(make_client) -> None:
    client = make_client(auth_failures_per_minute=2)
    for _ in range(2):
        assert client.get("/v1/models", headers=auth("wrong-key-123")).status_code == 401
    held = client.get("/v1/models", headers=auth(OFFICER_KEY))
    assert held.status_code == 429
    assert held.json()["type"] == "https://clearsight.dev/problems/too-many-attempts"
    assert 1 <= int(held.headers["retry-after"]) <= 60
    page = client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False)
    assert page.status_code == 429 and "Too many wrong keys" in page.text


def test_the_lockout_can_be_turned_off(make_client) -> None:
    client = make_client(auth_failures_per_minute=0)
    for _ in range(30):
        assert client.get("/v1/models", headers=auth("wrong-key-123")).status_code == 401
    assert client.get("/v1/models", headers=auth(OFFICER_KEY)).status_code == 200


def test_the_shared_file_forgets_wrong_keys_past_the_window(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "lockout.sqlite"
    attempts = FailedAttempts(100, window_s=60.0, clock=clock, failures=SharedFailures(path))
    for n in range(30):
        attempts.failed(f"10.0.0.{n}")
    clock.now += 61.0
    attempts.failed("10.0.0.99")  # a new entry takes the old ones away
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT client, times FROM wrong_keys").fetchall() == [("10.0.0.99", "1061.0")]


def test_the_shared_file_keeps_at_most_the_limit_per_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(lockout, "MAX_TRACKED", 5)
    clock = Clock()
    path = tmp_path / "lockout.sqlite"
    failures = SharedFailures(path)
    for n in range(8):
        for _ in range(6):  # past the limit: the last three are refused, not counted
            clock.now += 0.5
            failures.attempt(f"10.0.0.{n}", clock.now, clock.now - 60.0, 3)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT client, times FROM wrong_keys ORDER BY seen").fetchall()
    assert [client for client, _ in rows] == [f"10.0.0.{n}" for n in range(3, 8)]
    assert all(len(times.split()) == 3 for _, times in rows)
    assert failures.recent("10.0.0.7", clock.now, clock.now - 60.0, 3) == (3, clock.now - 2.5)


def _folder_as_file(data: Path) -> None:
    data.write_text("a file where the folder should be")


def _no_database(data: Path) -> None:
    data.mkdir()
    (data / "lockout.sqlite").write_bytes(b"not a database " * 512)


def _another_schema(data: Path) -> None:
    data.mkdir()
    with sqlite3.connect(data / "lockout.sqlite") as db:
        db.execute("CREATE TABLE wrong_keys (client TEXT PRIMARY KEY, at REAL)")


@pytest.mark.parametrize("spoil", [_folder_as_file, _no_database, _another_schema])
def test_a_lockout_file_that_cannot_be_used_is_counted_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, spoil: Callable[[Path], None]
) -> None:
    spoil(tmp_path / "data")
    attempts = FailedAttempts(2, failures=SharedFailures(tmp_path / "data" / "lockout.sqlite"))
    attempts.check("10.0.0.7")
    attempts.failed("10.0.0.7")
    attempts.failed("10.0.0.7")
    with pytest.raises(TooManyAttemptsError):
        attempts.check("10.0.0.7")
    assert "wrong API keys are counted per worker from now on" in caplog.text


def test_a_busy_file_holds_wrong_keys_until_it_can_be_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another connection holding the file (an operator's sqlite3 session) past the wait made a
    worker count in memory for good, every worker its own limit again, and the wait (5 s) ran on
    the event loop where the review login counts a wrong key."""
    clock = Clock()
    path = tmp_path / "lockout.sqlite"
    workers = [FailedAttempts(3, window_s=60.0, clock=clock, failures=SharedFailures(path)) for _ in range(2)]
    workers[0].failed("10.0.0.7")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    started = time.perf_counter()
    for _ in range(2):
        clock.now += 1.0
        workers[0].failed("10.0.0.7")
    assert time.perf_counter() - started < 1.0
    with pytest.raises(TooManyAttemptsError, match=r"^3 wrong API keys.*try again in 58 s$"):
        workers[0].check("10.0.0.7")  # the file's one and the two held: still locked
    other.execute("ROLLBACK")
    other.close()
    workers[0].failed("10.0.0.8")  # the next wrong key written takes those held along
    for worker in workers:
        with pytest.raises(TooManyAttemptsError, match=r"^3 wrong API keys"):
            worker.check("10.0.0.7")
    worker.check("10.0.0.8")
    assert "is busy" in caplog.text and "from now on" not in caplog.text


def test_every_worker_of_a_server_counts_the_same_wrong_keys(make_client) -> None:
    """Two apps of one server's settings stand for two uvicorn workers (each runs create_app): each
    kept its own count in memory, so --workers N let an address try N x 20 keys a minute."""
    workers = [make_client(auth_failures_per_minute=20, workers=2, session_secret="s" * 32) for _ in range(2)]
    for n in range(20):
        wrong = workers[n % 2].post("/review/login", data={"key": f"guess-{n:08d}"}, follow_redirects=False)
        assert wrong.status_code == 401
    for worker in workers:
        held = worker.post("/review/login", data={"key": "guess-again-1"}, follow_redirects=False)
        assert held.status_code == 429 and "Too many wrong keys" in held.text
        assert worker.get("/v1/models", headers=auth("wrong-key-123")).status_code == 429


@dataclass
class _Worker:
    """What :func:`authenticate` reads of a worker's services."""

    keys: KeyRing
    failed_keys: FailedAttempts


class _KeysThatLetAnotherWorkerIn:
    """A key ring whose first comparison lets another worker's wrong key from the same address
    through authenticate first: requests that arrive together, as an interleaving the test fixes."""

    def __init__(self, keys: KeyRing, other: _Worker, client: str) -> None:
        self._keys, self._other, self._client = keys, other, client
        self.other_answer: object = "not yet"

    def authenticate(self, key: str) -> object:
        if self.other_answer == "not yet":
            try:
                self.other_answer = authenticate(self._other, "guess-from-b", self._client)  # type: ignore[arg-type]
            except TooManyAttemptsError as exc:
                self.other_answer = exc
        return self._keys.authenticate(key)


@pytest.mark.parametrize("limit", [1, 3])
def test_wrong_keys_that_arrive_together_pass_no_more_than_the_limit(tmp_path: Path, limit: int) -> None:
    """authenticate checked the count, compared the key, then counted a wrong one: wrong keys from
    one address arriving together all passed the check while the count was limit - 1 (4 workers x
    8 threads had 25-30 wrong keys answered where the limit was 20)."""
    clock = Clock()
    path = tmp_path / "lockout.sqlite"
    keys = parse_api_keys("officer:right-key-123")
    a, b = (
        _Worker(keys, FailedAttempts(limit, window_s=60.0, clock=clock, failures=SharedFailures(path)))
        for _ in range(2)
    )
    for _ in range(limit - 1):
        assert authenticate(a, "guess-before", "10.0.0.7") is None  # type: ignore[arg-type]
    racing = _KeysThatLetAnotherWorkerIn(keys, b, "10.0.0.7")
    a.keys = racing  # type: ignore[assignment]
    with pytest.raises(TooManyAttemptsError, match=rf"^{limit} wrong API keys"):
        authenticate(a, "guess-from-a", "10.0.0.7")  # type: ignore[arg-type]
    assert racing.other_answer is None  # b's came first: answered as wrong, and counted
    a.keys = keys
    with pytest.raises(TooManyAttemptsError):
        authenticate(a, "right-key-123", "10.0.0.7")  # type: ignore[arg-type]
    assert authenticate(a, "right-key-123", "10.0.0.8") is not None  # type: ignore[arg-type]


@pytest.mark.parametrize("cell", ["1000.0 10x0.5", "1000.0 inf", "nan", b"\xff\xfe"])
def test_an_unreadable_count_locks_its_address_for_the_window_and_is_written_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, cell: object
) -> None:
    """One unreadable times cell (SQLite keeps no checksum of a cell: one flipped byte) raised
    ValueError out of check(): every keyed request from that address,
    the right key included, answered 500."""
    clock = Clock()
    path = tmp_path / "lockout.sqlite"
    attempts = FailedAttempts(3, window_s=60.0, clock=clock, failures=SharedFailures(path))
    attempts.failed("10.0.0.7")
    attempts.failed("10.0.0.8")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE wrong_keys SET times = ? WHERE client = '10.0.0.7'", (cell,))
    clock.now += 5.0
    with pytest.raises(TooManyAttemptsError, match=r"^3 wrong API keys.*try again in 60 s$"):
        attempts.check("10.0.0.7")  # a right key waits the window: the count may have been a guesser's
    clock.now += 5.0
    with pytest.raises(TooManyAttemptsError, match=r"^3 wrong API keys.*try again in 60 s$"):
        attempts.failed("10.0.0.7")
    attempts.failed("10.0.0.8")  # other addresses count on
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT client, times FROM wrong_keys").fetchall())
    assert rows == {"10.0.0.7": "1010.0 1010.0 1010.0", "10.0.0.8": "1000.0 1010.0"}
    clock.now += 60.0  # the window written afresh passes
    attempts.check("10.0.0.7")
    assert caplog.text.count("unreadable count") == 1


def test_a_deleted_or_replaced_file_is_opened_afresh(tmp_path: Path) -> None:
    """A worker kept counting in a lockout file deleted while it ran (an operator clearing a
    lockout) while a worker started after counted in a new one: the two each allowed the limit."""
    clock = Clock()
    path = tmp_path / "lockout.sqlite"
    first = FailedAttempts(2, window_s=60.0, clock=clock, failures=SharedFailures(path))
    for _ in range(2):
        first.failed("10.0.0.7")
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    second = FailedAttempts(2, window_s=60.0, clock=clock, failures=SharedFailures(path))
    second.failed("10.0.0.8")
    first.failed("10.0.0.8")  # counted in the new file, with the other worker's
    for worker in (first, second):
        with pytest.raises(TooManyAttemptsError, match=r"^2 wrong API keys"):
            worker.failed("10.0.0.8")
    first.failed("10.0.0.7")  # the deletion cleared it


def test_the_write_ahead_log_is_cut_back_once_checkpointed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A flood grew lockout.sqlite-wal to 167.7 MB beside a database of about 1 MB: a reader's
    snapshot keeps a checkpoint from resetting the log, which kept its largest size for good."""
    monkeypatch.setattr(lockout, "WAL_LIMIT_BYTES", 64 * 1024)
    clock = Clock()
    path = tmp_path / "lockout.sqlite"
    attempts = FailedAttempts(20, window_s=60.0, clock=clock, failures=SharedFailures(path))
    attempts.failed("warm")
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM wrong_keys").fetchone()  # holds a snapshot
    for n in range(400):
        attempts.failed(f"10.0.{n // 250}.{n % 250}")
    wal = tmp_path / "lockout.sqlite-wal"
    assert wal.stat().st_size > 10 * 64 * 1024  # the flood's log, while the snapshot is held
    reader.execute("COMMIT")
    reader.execute("PRAGMA wal_checkpoint(PASSIVE)")  # as the next auto-checkpoint would
    reader.close()
    attempts.failed("10.1.0.1")  # writes from the log's start again
    assert wal.stat().st_size <= 64 * 1024


def test_an_ipv6_client_is_counted_by_its_slash_64(failures: Failures) -> None:
    """Counted per address, a client holding one /64 (2^64 addresses, what a provider hands one
    subscriber) named a new address every few guesses and was never held."""
    attempts = FailedAttempts(3, failures=failures)
    for n in range(3):
        attempts.failed(f"2001:db8:1:3::{n + 1:x}")
    for neighbour in ("2001:db8:1:3::99", "2001:db8:1:3:ffff:ffff:ffff:ffff", "[2001:db8:1:3::7]"):
        with pytest.raises(TooManyAttemptsError, match=r"^3 wrong API keys from this address's /64 in"):
            attempts.check(neighbour)
    attempts.check("2001:db8:1:4::1")  # the next /64 is another subscriber's
    # an IPv4-mapped address is its IPv4 address, which stays counted alone
    for _ in range(3):
        attempts.failed("::ffff:10.0.0.7")
    with pytest.raises(TooManyAttemptsError, match=r"^3 wrong API keys from this address in"):
        attempts.check("10.0.0.7")
    attempts.check("10.0.0.8")


def test_an_ipv6_client_is_also_counted_by_its_slash_48(failures: Failures) -> None:
    """Counted by its /64 alone, a client holding a /56 (256 /64s, a usual home delegation) or a /48
    (65,536) sent the limit's wrong keys from each /64 in turn, 256 or 65,536 times the limit."""
    clock = Clock()
    attempts = FailedAttempts(2, window_s=60.0, clock=clock, failures=failures)  # 20 a /48
    for n in range(10):
        clock.now += 1.0
        for _ in range(2):
            attempts.failed(f"2001:db8:1:{n:x}::{n + 1:x}")  # /64s of one /56, two each
    for neighbour in ("2001:db8:1:ff00::1", "2001:db8:1:ffff:ffff:ffff:ffff:ffff"):
        with pytest.raises(
            TooManyAttemptsError,
            match=r"^20 wrong API keys from this address's /48 in the last 60 s; try again in 51 s$",
        ) as info:
            attempts.failed(neighbour)
        assert info.value.retry_after_s == 51
        with pytest.raises(TooManyAttemptsError, match=r"this address's /48"):
            attempts.check(neighbour)  # a right key waits too
    attempts.check("2001:db8:2::1")  # the next /48 is another's
    attempts.failed("2001:db8:2::1")
    # IPv4 has no such block: twenty addresses of one /24 are twenty clients
    for n in range(30):
        attempts.failed(f"10.0.0.{n}")
    attempts.check("10.0.0.99")
    clock.now += 51.0  # the first /64's wrong keys leave the window: two more may come
    attempts.failed("2001:db8:1:ff00::1")


def test_a_slash_64_held_by_its_own_limit_does_not_count_against_its_slash_48(failures: Failures) -> None:
    """Wrong keys refused for their /64 are not counted again for the /48: one subscriber of a
    block its provider shares (a mobile carrier's) would otherwise use up the others' allowance."""
    attempts = FailedAttempts(2, failures=failures)
    for _ in range(50):
        try:
            attempts.failed("2001:db8:1:3::1")
        except TooManyAttemptsError as exc:
            assert "this address's /64" in str(exc)
    for n in range(9):  # 2 + 9 x 2 = the /48's 20
        for _ in range(2):
            attempts.failed(f"2001:db8:1:{n + 4:x}::1")
    with pytest.raises(TooManyAttemptsError, match=r"^20 wrong API keys from this address's /48"):
        attempts.failed("2001:db8:1:99::1")


def test_a_busy_file_keeps_each_count_to_its_own_limit(tmp_path: Path) -> None:
    """Wrong keys held while the file is busy are written with the next that gets through: a /48's
    (kept to 10 x the limit) must not be cut to a /64's limit then."""
    clock = Clock()
    path = tmp_path / "lockout.sqlite"
    attempts = FailedAttempts(2, window_s=60.0, clock=clock, failures=SharedFailures(path))
    attempts.failed("10.0.0.1")  # creates the file
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    for n in range(5):
        attempts.failed(f"2001:db8:1:{n:x}::1")
    other.execute("ROLLBACK")
    other.close()
    attempts.failed("10.0.0.2")  # writes those held
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT client, times FROM wrong_keys").fetchall())
    assert len(rows["2001:db8:1::/48"].split()) == 5
    for n in range(15):
        attempts.failed(f"2001:db8:1:{n + 5:x}::1")
    with pytest.raises(TooManyAttemptsError, match=r"^20 wrong API keys from this address's /48"):
        attempts.check("2001:db8:1:ff::1")


@pytest.mark.parametrize(
    ("client", "block"),
    [
        ("2001:db8:1:3::5", "2001:db8:1::/48"),
        ("[2001:db8:ab:ff00::1]", "2001:db8:ab::/48"),
        ("fe80::1%eth0", "fe80::/48"),
        ("::ffff:10.0.0.7", None),
        ("10.0.0.7", None),
        ("unknown", None),
    ],
)
def test_the_block_an_ipv6_client_is_also_counted_under(client: str, block: str | None) -> None:
    assert lockout.block_key(client) == block


@pytest.mark.parametrize(
    ("client", "key"),
    [
        ("10.0.0.7", "10.0.0.7"),
        ("::ffff:10.0.0.7", "10.0.0.7"),
        ("2001:db8:1:3::5", "2001:db8:1:3::/64"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
        ("2001:db8:1:3::/64", "sha256:"),  # no name passes for a /64's key
        ("x" * 5000, "sha256:"),
    ],
)
def test_the_key_counted_under_is_bounded(client: str, key: str) -> None:
    got = lockout.client_key(client)
    assert got.startswith(key) if key == "sha256:" else got == key
    assert len(got) <= 43


def test_rows_of_whole_ipv6_addresses_from_before_hold_no_one_and_go(tmp_path: Path) -> None:
    """The file of an earlier release keyed IPv6 clients by the whole address: such a row neither
    locks the /64 out nor is read as its count, and goes with the window."""
    clock = Clock()
    path = tmp_path / "lockout.sqlite"
    attempts = FailedAttempts(3, window_s=60.0, clock=clock, failures=SharedFailures(path))
    attempts.failed("10.0.0.1")  # creates the file
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO wrong_keys (client, seen, times) VALUES (?, 1000.0, '1000.0 1000.0 1000.0')",
            ("2001:db8:1:3::1",),
        )
    attempts.check("2001:db8:1:3::1")
    attempts.failed("2001:db8:1:3::1")
    clock.now += 61.0
    attempts.failed("2001:db8:1:3::2")
    with sqlite3.connect(path) as db:
        assert sorted(db.execute("SELECT client, times FROM wrong_keys").fetchall()) == [
            ("2001:db8:1:3::/64", "1061.0"),
            ("2001:db8:1::/48", "1061.0"),
        ]


_FROM_ANOTHER_SITE = [
    {"Origin": "https://trader.example", "Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "https://trader.example"},  # a browser without Sec-Fetch-Site
    {"Origin": "null"},  # a sandboxed frame
    {"Origin": "https://testserver.trader.example"},
    # a page of a sibling subdomain (a traders' portal): same-site to the browser, another site here
    {"Origin": "https://traders.sibling.example", "Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "same-site"},  # a browser that judged the site sends an Origin with a POST
]


@pytest.mark.parametrize("headers", _FROM_ANOTHER_SITE)
def test_a_sign_in_posted_from_another_site_is_refused_and_never_counted(make_client, headers) -> None:
    """A page of another site auto-posting the sign-in form from an officer's browser locked the
    officer's address (behind a NAT: every officer's) out of the API and the review page."""
    client = make_client(auth_failures_per_minute=2)
    for n in range(5):
        page = client.post("/review/login", data={"key": f"not-a-key-{n}"}, headers=headers)
        assert page.status_code == 403 and "sent from another site" in page.text
    assert client.get("/v1/models", headers=auth(OFFICER_KEY)).status_code == 200
    assert client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False).status_code == 303
    # nor does the right key sign in so (login CSRF: a session of the trader's key)
    assert client.post("/review/login", data={"key": OFFICER_KEY}, headers=headers).status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, old clients
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"},
        {"Sec-Fetch-Site": "same-origin", "Origin": "https://review.customs.example"},  # Host rewritten
        {"Sec-Fetch-Site": "same-site", "Origin": "http://testserver"},  # judged by its Origin
        {"Sec-Fetch-Site": "none"},
        {"Origin": "http://testserver"},
        {"Origin": "http://TestServer:8443", "Host": "testserver:8000"},
        {"Origin": "https://review.customs.example", "X-Forwarded-Host": "review.customs.example"},
        {"Origin": "http://[::1]:8000", "Host": "[::1]:8000"},
    ],
)
def test_a_sign_in_from_this_site_passes(make_client, headers) -> None:
    client = make_client()
    signed_in = client.post(
        "/review/login", data={"key": OFFICER_KEY}, headers=headers, follow_redirects=False
    )
    assert signed_in.status_code == 303, signed_in.text


def test_an_outcome_form_posted_from_another_site_is_refused(make_client) -> None:
    client = make_client()
    assert client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False).status_code == 303
    form = {"shipment_id": "SHP-1", "found": "clean", "csrf": "x", "decision_seq": "1"}
    page = client.post("/review/outcome", data=form, headers=_FROM_ANOTHER_SITE[0])
    assert page.status_code == 403 and "sent from another site" in page.text
