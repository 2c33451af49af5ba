"""The officer review page: the queue of held shipments with images, heatmaps, scores and reasons.

The officer enters a key once; it is checked and replaced by a signed, HttpOnly, SameSite=Strict
session cookie. Outcome forms are plain POSTs carrying the session's CSRF token (a second guard on
top of SameSite) and answer with a redirect back to the queue once recorded; a form not recorded for
what it holds, or as its shipment changed, is answered with the shipment's page holding what was typed.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, NamedTuple
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool

from datasets.errors import AuditError, ConflictError, InputError
from datasets.perceptual_hash import fine_distance
from datasets.shown_text import unshown_character
from datasets.type_names import TYPE_NAME_PATTERN
from pipeline.audit import AuditRecord, HeadSealError, SealBrokenError
from pipeline.audit.store import SealFailure
from pipeline.decide import applied_thresholds
from pipeline.heatmap import legend_svg
from pipeline.report import score_text
from pipeline.settings import MAX_OUTCOME_NOTES_CHARS
from pipeline.verdicts import Tier
from serve.auth import MAX_KEY_CHARS, Principal, Role
from serve.deps import INSECURE_PRINCIPAL, Services, ServicesDep, authenticate, client_address
from serve.display import shown_picture
from serve.errors import NotAuthenticatedError, PermissionDeniedError, TooManyAttemptsError
from serve.findings import finding_types
from serve.routes.shipments import ShipmentIdPath, record_outcome
from serve.schemas import CLEAN, MAX_SEQ, RECORDED_ID_PATTERN, OutcomeIn, found_type_name
from serve.scoring import refuse_repeated_fields
from serve.storage import heatmap_name

__all__ = ["COOKIE", "SignInFirst", "router", "sign_in_first"]

log = logging.getLogger("clearsight.serve")

templates = Jinja2Templates(directory=str(Path(__file__).resolve().parents[1] / "templates"))


def _host_name(value: str) -> str | None:
    """The host name of a Host or X-Forwarded-Host value (``host[:port]``, ``[v6]:port``), lower case:
    another port of the same host is the same site."""
    try:
        return urlsplit("//" + value.strip()).hostname
    except ValueError:  # a bracket left open
        return None


def cross_site(request: Request) -> str | None:
    """What says a POST came from another site's page, or None where nothing does.

    The browser's Sec-Fetch-Site first: it is what the browser itself judged, whatever a reverse
    proxy did to Host on the way. 'same-origin' and 'none' (typed or bookmarked) pass; 'cross-site'
    is refused. 'same-site' is any page of the same registrable domain (a traders' portal on a
    sibling subdomain, whose posts locked officers out as a cross-site page's did), so it, or any
    other value, is judged by the Origin as an older browser's post is.
    Without it (an older browser) the Origin's host is compared with the Host the request came to,
    or one a reverse proxy says in X-Forwarded-Host (a cross-site page cannot set that header; a
    proxy that rewrites Host must not make a same-site sign-in fail). 'Origin: null' (a sandboxed
    frame, a page opened from a file) is another site. A request with neither header (curl, old
    clients) is not a browser's form posted from a page: it passes, as before."""
    fetch_site = request.headers.get("sec-fetch-site")
    judged = None if fetch_site is None else fetch_site.strip().lower()
    if judged in ("same-origin", "none"):
        return None
    if judged == "cross-site":
        return f"Sec-Fetch-Site: {fetch_site}"
    origin = request.headers.get("origin")
    if origin is None:  # a browser that judged the site sends the Origin of a POST too
        return None if fetch_site is None else f"Sec-Fetch-Site: {fetch_site[:100]}, no Origin"
    try:
        origin_host = urlsplit(origin.strip()).hostname
    except ValueError:
        origin_host = None
    hosts = [request.headers.get("host", ""), *request.headers.get("x-forwarded-host", "").split(",")]
    if origin_host is not None and origin_host in {_host_name(h) for h in hosts if h.strip()}:
        return None
    return f"Origin: {origin[:100]}"


async def _same_site_post(request: Request) -> None:
    # Before the form's fields and any key: a page of another site could post the sign-in form
    # from an officer's browser (a "simple" request, sent without asking), and 20 wrong keys so sent
    # locked the officer's address out of the API and this page, for every key behind one NAT.
    if request.method != "POST":
        return
    sent_by = cross_site(request)
    if sent_by is not None:
        log.warning(
            "review: %s %s refused: sent from another site's page (%s)",
            request.method,
            request.url.path,
            sent_by,
        )
        page = templates.TemplateResponse(
            request,
            "review.html",
            {
                "mode": "login",
                "error": "This form was sent from another site's page, not from this one: "
                "open /review here and sign in.",
            },
            status_code=403,
        )
        raise SignInFirst(page)


router = APIRouter(
    prefix="/review", tags=["review"], include_in_schema=False, dependencies=[Depends(_same_site_post)]
)

COOKIE = "clearsight_session"
HELD_TIERS = [Tier.REMOTE_INSPECTION, Tier.PHYSICAL_INSPECTION]
PAGE_SIZE = 50

EVIDENCE_WORDS = {
    "patch_head": "a spot like the labelled defects",
    "type_head": "like a labelled anomaly type",
    "one_class": "unlike the clean cargo it learned",
}
"""What each fused signal (``models.fusion.SIGNALS``) looks for, in an officer's words."""


def model_evidence(log_odds: dict[str, float] | None) -> list[tuple[str, str]]:
    """An image's signals for the officer, strongest first: (what it looks for, signed log-odds).

    Positive log-odds point to an anomaly, negative to clean cargo; the image's score adds them
    up (``Prediction.signal_log_odds``). Empty for a verdict without them (older records).
    """
    if not log_odds:
        return []
    ranked = sorted(log_odds.items(), key=lambda kv: kv[1], reverse=True)
    return [
        (EVIDENCE_WORDS.get(name, name), f"{value:+.1f}".replace("-", "\u2212")) for name, value in ranked
    ]


_SCORE_WORDS = {
    "score.clear": ("under", "below the release threshold the policy applied"),
    "score.review": ("over", "at or above the release threshold the policy applied"),
    "score.hold": ("over", "at or above the hold threshold the policy applied"),
}


_JUDGING_RULES = (*_SCORE_WORDS, "fail_closed.missing_threshold")
"""The rules one of which ``pipeline.decide`` writes for each image whose score it compares with
thresholds (the strictest cargo rules' reason, or their thresholds found missing)."""


def _judged(image: Any) -> bool:
    """Whether decide compared ``image``'s score with thresholds: it was scored, without error, and
    the score is a number in [0, 1] (otherwise a fail-closed reason stands in for the comparison)."""
    score = image.score
    return image.error is None and score is not None and math.isfinite(score) and 0.0 <= score <= 1.0


def _score_reason(decision: Any, image: Any) -> Any:
    """The reason that judged one image's score against a threshold; None when no score rule judged
    it (it failed, or failed closed before its score was compared).

    A reason names its image by name only, and decisions recorded before the service named each
    upload of a shipment apart (``shipments.distinct_names``), or made from a batch's rows, may hold
    several pictures of one name, even of one score (scored by two models with other thresholds).
    Decide writes each image's reasons in the order of ``decision.images``, and exactly one of
    ``_JUDGING_RULES`` for each image it compared: the k-th such image of a name takes the k-th such
    reason of that name. Where the counts differ (a record other code wrote), a reason of the name
    that judged the image's own score is taken only where all of them say alike; else None.
    """
    judged = [i for i in decision.images if i.path == image.path and _judged(i)]
    slots = [r for r in decision.reasons if r.image == image.path and r.rule in _JUDGING_RULES]
    position = next((k for k, i in enumerate(judged) if i is image), None)
    if position is None and image in judged:
        position = judged.index(image)  # a copy of the decision's own image
    if len(slots) == len(judged):
        if position is None:
            return None  # not compared with thresholds: no reason of its name is its own
        candidates = [slots[position]]
    else:
        candidates = [r for r in slots if r.rule in _SCORE_WORDS]
    candidates = [r for r in candidates if r.threshold is not None and r.score == image.score]
    if not candidates or len({(r.rule, r.threshold) for r in candidates}) > 1:
        return None
    return candidates[0]


def applied_threshold(decision: Any, image: Any) -> tuple[str, str, float] | None:
    """How the policy judged one image's score: (css class, words, the threshold it applied).

    The model's own thresholds on the verdict are not what decided: a policy may fix its own, and a
    trusted trader's offset moves the release cut. None when no score rule judged the image.
    """
    reason = _score_reason(decision, image)
    if reason is None:
        return None
    css, words = _SCORE_WORDS[reason.rule]
    return css, words, float(reason.threshold)


def _applied(policy: Any, decision: Any, image: Any) -> tuple[float | None, float | None, bool]:
    """The release and hold thresholds the policy applied to one image's score (None: not known
    here), and whether they were found under ``policy`` (else only the recorded one is known): see
    :func:`thresholds_applied`."""
    reason = _score_reason(decision, image)
    recorded = float(reason.threshold)
    found = applied_thresholds(policy, decision, image, reason)
    at_hold = reason.rule == "score.hold"
    if found is not None and not math.isclose(found[1 if at_hold else 0], recorded, rel_tol=1e-9):
        found = None  # not what decided: say only what the record says
    release = found[0] if found is not None else (None if at_hold else recorded)
    hold = recorded if at_hold else (found[1] if found is not None else None)
    return release, hold, found is not None


def _number_text(value: float, cuts: tuple[float | None, ...] = ()) -> str:
    """A recorded score or threshold as the page writes it (:func:`pipeline.report.score_text`),
    told apart from each of ``cuts``. A record may hold a number no cut is (NaN fails closed): it
    is written as it is."""
    if not math.isfinite(value):
        return str(value)
    return score_text(value, [c for c in cuts if c is not None and math.isfinite(c)])


def thresholds_applied(policy: Any, decision: Any, image: Any) -> str:
    """The release and hold thresholds the policy applied to one image's score, each followed by
    the model's own in brackets where it differs: "the policy's thresholds: release 0.0100, hold
    0.900 [model's own 0.0960]". Only the model's were shown: a pack scored 0.886 read as far above
    a hold of 0.096 and yet not held, where the policy's hold of 0.9 decided.

    Called only for an image :func:`applied_threshold` found a score reason for.

    The score's reason records one threshold (the release one below hold, the hold one at or above
    it); the other is found under ``policy`` (:func:`pipeline.decide.applied_thresholds`) only where
    it is the policy the decision was made under, and where today's decision code judges the score
    as the recorded reason says (a matching policy pins the rules, not the code that applied them).
    Otherwise it is said to be unknown here, never taken from a policy or code that did not decide.

    Each threshold is written with three significant digits (:func:`pipeline.report.cut_text`):
    three decimals wrote a release cut of 0.0097 as "0.010".
    """
    release, hold, found = _applied(policy, decision, image)

    def shown(applied: float | None, model: float | None) -> str:
        words = "not known here" if applied is None else _number_text(applied)
        own = "none" if model is None else _number_text(model)
        return words if own == words else f"{words} [model's own {own}]"

    text = (
        f"the policy's thresholds: release {shown(release, image.threshold)}, "
        f"hold {shown(hold, image.hold_threshold)}"
    )
    if not found and policy.sha256 != decision.policy_sha256:
        text += f"; decided under policy {decision.policy_version}, not the one this service runs"
    return text


def score_shown(policy: Any, decision: Any, image: Any) -> str:
    """One image's score as its caption writes it: with the digits that tell it from each threshold
    written beside it (the policy's applied release and hold, the model's own), where the policy
    judged it. Three decimals wrote a score of 0.499804 under a release cut of 0.5 as "score 0.500 <
    0.500 applied", and one of 0.799804 below a hold of 0.8 as "score 0.800", that hold's own text."""
    if image.score is None:
        return "none"
    score = float(image.score)
    if applied_threshold(decision, image) is None:
        return _number_text(score)
    release, hold, _ = _applied(policy, decision, image)
    return _number_text(score, (release, hold, image.threshold, image.hold_threshold))


def shown_name(path: str) -> str:
    """An image's file name: the folder it lay in on the scoring machine is not the officer's concern."""
    return PurePosixPath(path.replace("\\", "/")).name or path


templates.env.globals["model_evidence"] = model_evidence
templates.env.globals["applied_threshold"] = applied_threshold
templates.env.globals["cut_text"] = _number_text
templates.env.globals["shown_name"] = shown_name
templates.env.globals["heatmap_name"] = heatmap_name
# its inline size moves to review.css (svg.heatmap-legend): the page's Content-Security-Policy
# applies no style attribute
templates.env.globals["heatmap_legend"] = Markup(re.sub(r'\sstyle="[^"]*"', "", legend_svg(), count=1))


NOTICES = ("recorded", "stale", "relisted", "unrecorded")
"""The notices a page may show, each naming a shipment: asked for by the query (a posted form's
redirect, :func:`_back`), or by the page answering a post not recorded because its shipment changed
('stale', 'relisted': :func:`_not_recorded`). Notes the character rule refused are not among them:
that post is answered with the page itself too (:func:`_record_from_form`), as no URL may carry the
notes."""


def _refused_notes(notes: str) -> dict[str, Any] | None:
    """What the page says of notes a form posted and the character rule refused (free text,
    :func:`datasets.shown_text.unshown_character`): the first refused character and its position
    (counted from 1), how many there were, and the notes without them, put back in the form to
    record again. None where ``notes`` hold none."""
    refused = [at for at, char in enumerate(notes) if unshown_character(char, breaks=True) is not None]
    if not refused:
        return None
    dropped = set(refused)
    return {
        "character": unshown_character(notes[refused[0]], breaks=True),
        "at": refused[0] + 1,
        "removed": len(refused),
        "kept": "".join(char for at, char in enumerate(notes) if at not in dropped),
    }


_RECORDED_ID = re.compile(RECORDED_ID_PATTERN)


def _notices(
    services: Services, query: Mapping[str, str], shown: list[Any], failed: list[SealFailure]
) -> dict[str, str | None]:
    """Each notice the query asks for, with the shipment it names, or None where it is not shown:
    an id no shipment may have, a shipment the store does not hold, 'recorded' for one whose
    latest decision has no outcome, or one whose records fail their seals (``failed``, or so found
    here: the page's banner names it, and nothing is said of it on a forged record's word). The
    query is anyone's to write: a link made the page say an outcome was recorded when none was, or
    carry a message of its own of any length; one naming a shipment whose record fails its seal
    made the whole page answer 500."""
    known = {r.decision.shipment_id: r for r in shown}
    failing = {f.shipment_id for f in failed}
    notices: dict[str, str | None] = {}
    for notice in NOTICES:
        shipment = query.get(notice)
        record = None
        if shipment is not None and _RECORDED_ID.fullmatch(shipment) and shipment not in failing:
            try:
                record = known[shipment] if shipment in known else services.audit.get(shipment)
            except SealBrokenError:
                record = None
        if record is None or (notice == "recorded" and record.outcome is None):
            notices[notice] = None
        else:
            notices[notice] = shipment
    return notices


def _session(request: Request, services: Services) -> tuple[Principal, str] | None:
    if services.insecure:
        return INSECURE_PRINCIPAL, "insecure-dev"
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    return services.signer.check(cookie, services.keys)


def _require_session(request: Request, services: Services, csrf: str | None = None) -> Principal:
    session = _session(request, services)
    if session is None:
        raise NotAuthenticatedError("no valid review session: sign in at /review")
    principal, token = session
    if principal.role not in (Role.OFFICER, Role.ADMIN):
        raise PermissionDeniedError(
            f"role {principal.role.value!r} may not review; allowed roles: admin, officer"
        )
    if csrf is not None and not hmac.compare_digest(csrf.encode(), token.encode()):
        raise PermissionDeniedError("the form's CSRF token does not match this session; reload /review")
    return principal


def _earlier_pictures(
    services: Services, records: list[Any]
) -> dict[tuple[str, str], tuple[str, str, str | None]]:
    """For each held picture that is a near-copy of one decided in another shipment: the first named
    shipment that holds it, its picture nearest by perceptual hash, and how the held one is that
    picture turned or mirrored (None: as it was), keyed by (shipment, picture hash).
    Only a picture decided before the held one, within ``near_copy_bits``, and kept on this server:
    never an unrelated picture of a decision made since. The same bytes need no second look. The
    other shipments' decisions are read at once; if that fails the page goes on without pictures.
    Nothing is decoded: the held picture is compared by its own hash and by the turned one that
    matched (``turned_phash``). The shipments named may hold the picture under other turns than that
    one; the nearest of them holds it under one of the two."""
    wanted = [
        (record.decision.shipment_id, record.seq, image)
        for record in records
        for image in record.decision.images
        if image.similar_in and image.phash and image.sha256
    ]
    if not wanted:
        return {}
    try:
        decided = services.audit.decisions_of(sorted({s for *_, image in wanted for s in image.similar_in}))
    except AuditError as exc:
        log.warning("review page: earlier pictures of near-copies not read: %s", exc)
        return {}
    pictures: dict[str, list[tuple[int, str, str]]] = {}
    for record in decided:
        pictures.setdefault(record.decision.shipment_id, []).extend(
            (record.seq, image.sha256, image.phash)
            for image in record.decision.images
            if image.sha256 and image.phash
        )
    earlier: dict[tuple[str, str], tuple[str, str, str | None]] = {}
    bits = services.settings.near_copy_bits
    for shipment_id, seq, image in wanted:
        hashes = [(image.phash, "")]  # as it was first: on a tie the plainer account
        if image.turned_phash and image.similar_turn:
            hashes.append((image.turned_phash, image.similar_turn))
        for other in image.similar_in:
            distance, turn, nearest = min(
                (
                    (fine_distance(held, p), how, s)
                    for held, how in hashes
                    for q, s, p in pictures.get(other, [])
                    if q < seq
                ),
                default=(bits + 1, "", ""),
            )
            if distance <= bits and services.store.has("images", nearest):
                earlier[(shipment_id, image.sha256)] = (other, nearest, turn or None)
                break
    return earlier


class Queue(NamedTuple):
    """Where a page's outcome forms come back to once recorded: the shipment searched for
    (``searched``), else the queue page (``show``, ``before``) they were posted from. A form not
    recorded is answered with its shipment alone (the form must be on the page to hold what was
    typed), and keeps where it came from: posted from the second page of "All held", it came back
    to the shipment as if searched for, and after recording to the first page of the pending queue."""

    searched: bool = False
    show: str = "pending"
    before: int | None = None

    def url(self) -> str:
        """The queue page's address, with the query a page of it needs."""
        query = {"show": self.show} if self.show != "pending" else {}
        if self.before is not None:
            query["before"] = str(self.before)
        return "/review" + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


_SEARCHED = re.compile(r"[^\x00-\x1f\x7f]{0,128}")
"""A shipment id searched for, once its edge spaces are gone: as recorded ids are (PostgreSQL holds
no NUL)."""
_RECORD_NUMBER = re.compile(r"[0-9]{1,19}")


def _quoted(value: str) -> str:
    """A query value as a notice names it: its control characters escaped, the first 40 characters."""
    return repr(value[:40]) + ("…" if len(value) > 40 else "")


def _read_query(
    show: str | None, before: str | None, shipment: str | None
) -> tuple[str, int | None, str | None, list[str]]:
    """The queue page a GET asks for (``show``, ``before``) and the shipment it searches for, and a
    notice for each value not understood, which is left out (an empty one is no value). Validated as
    query parameters, such a link or a search ending in a pasted tab (``SHP-1\\t``: the search takes
    off edge spaces only after) was answered with a problem+json body an officer cannot read.
    ``shipment`` is given as typed where it may be an id: a batch's may end in a space."""
    unread: list[str] = []
    if show not in (None, "", "pending", "all"):
        unread.append(
            f"Not understood: show={_quoted(show)} (accepted: pending, all); the pending queue is shown."
        )
    show = show if show in ("pending", "all") else "pending"
    bound = None
    if before:
        bound = int(before) if _RECORD_NUMBER.fullmatch(before) else None
        if bound is None or not 1 <= bound <= MAX_SEQ:
            unread.append(
                f"Not understood: before={_quoted(before)} (accepted: a record number from 1 to {MAX_SEQ}); "
                "the newest shipments are shown."
            )
            bound = None
    if shipment is not None:
        if not _SEARCHED.fullmatch(shipment.strip()):
            unread.append(
                f"Not understood: shipment={_quoted(shipment)} (accepted: an id of at most 128 characters, "
                "without control characters); the queue is shown."
            )
            shipment = None
        elif len(shipment) > 128:  # no recorded id: its edge spaces go now
            shipment = shipment.strip()
    return show, bound, shipment, unread


@router.get("", response_class=HTMLResponse)
async def review_page(
    request: Request,
    services: ServicesDep,
    show: Annotated[str | None, Query()] = None,
    before: Annotated[str | None, Query()] = None,
    shipment: Annotated[str | None, Query()] = None,
) -> Response:
    """The queue, or the shipment searched for; a query value not understood is named in a notice
    on the page (:func:`_read_query`)."""
    session = _session(request, services)
    if session is None:
        return templates.TemplateResponse(request, "review.html", {"mode": "login", "error": None})
    principal, csrf = session
    if principal.role not in (Role.OFFICER, Role.ADMIN):
        return templates.TemplateResponse(
            request,
            "review.html",
            {"mode": "login", "error": "This key may not review shipments."},
            status_code=403,
        )
    show, bound, shipment, unread = _read_query(show, before, shipment)
    return await _queue_page(
        request,
        services,
        principal,
        csrf,
        show=show,
        before=bound,
        shipment=shipment,
        asked=request.query_params,
        unread=unread,
    )


async def _queue_page(
    request: Request,
    services: Services,
    principal: Principal,
    csrf: str,
    *,
    show: str = "pending",
    before: int | None = None,
    shipment: str | None = None,
    asked: Mapping[str, str],
    refused: tuple[str, dict[str, Any]] | None = None,
    typed: tuple[str, str, str, int] | None = None,
    back: Queue | None = None,
    unread: list[str] | None = None,
    status_code: int = 200,
) -> Response:
    """The queue, or the one shipment searched for (``shipment``), for a signed-in reviewer: the
    page the GET route answers, and a form not recorded is answered with. ``asked``: the notices
    the query asks for, or the answer to a post says (:data:`NOTICES`); ``refused``: the shipment
    whose notes were refused and :func:`_refused_notes`; ``typed``: what a form not recorded posted,
    (shipment, finding, notes, the seq of the decision its form was for), put back in that shipment's
    form; ``back``: where that form came
    from, kept in the forms of the page (by default, the page itself); ``unread``: a notice for each
    query value not understood."""
    if back is None:
        back = Queue(searched=bool(shipment and shipment.strip()), show=show, before=before)
    wanted = None
    listed, last_seq = 0, None
    if shipment and shipment.strip():
        # one shipment found by its id, whatever its tier: a tip-off about released cargo, or a
        # finding after clearance, is recorded against the decision that released it
        wanted, found = await run_in_threadpool(_search, services, shipment)
        records = [found] if isinstance(found, AuditRecord) else []
        failed = [found] if isinstance(found, SealFailure) else []
        before = None
    else:
        # the next page is the one below the last record listed, not the next 50 past it: outcomes
        # recorded meanwhile take shipments out of the pending queue, and an offset then skipped
        # some. A decision whose record fails its seal is named apart, not shown: one such record
        # made the whole queue answer 500 for every officer
        page = await run_in_threadpool(
            lambda: services.audit.list_page(
                tiers=HELD_TIERS,
                limit=PAGE_SIZE,
                before=before,
                pending_outcome=True if show == "pending" else None,
            )
        )
        records, failed, listed, last_seq = page
    for failure in failed:
        log.error("review page: shipment %r not shown: %s", failure.shipment_id, failure.why)
    unshown, refused_notes = refused if refused is not None else (None, None)
    again = None if typed is None else dict(zip(("shipment", "found", "notes", "seq"), typed, strict=True))
    return templates.TemplateResponse(
        request,
        "review.html",
        {
            "mode": "queue",
            "notes_max": MAX_OUTCOME_NOTES_CHARS,
            "records": records,
            "failed": failed,
            "listed": listed,
            "last_seq": last_seq,
            "csrf": csrf,
            "officer": principal.name,
            "show": show,
            "before": before,
            "searched": wanted,
            "page_size": PAGE_SIZE,
            "finding_types": {r.seq: finding_types(services.predictors, r.decision) for r in records},
            "clean": CLEAN,
            **await run_in_threadpool(_notices, services, asked, records, failed),
            "unshown": unshown,
            "refused_notes": refused_notes,
            "typed": again,
            "back": back,
            "unread": unread or [],
            "stored": lambda sha256: services.store.has("images", sha256),
            "thresholds_applied": lambda d, img: thresholds_applied(services.policy, d, img),
            "score_shown": lambda d, img: score_shown(services.policy, d, img),
            "earlier": await run_in_threadpool(_earlier_pictures, services, records),
        },
        status_code=status_code,
    )


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, services: ServicesDep, key: Annotated[str, Form()] = "") -> Response:
    # checked here, not as the field's bounds: a browser was answered with problem+json for them
    unread = None
    if not key:
        unread = "Enter your API key."
    elif len(key) > MAX_KEY_CHARS:  # no key is longer (serve.auth.parse_api_keys): none could match
        unread = f"This key is {len(key)} characters; a key is at most {MAX_KEY_CHARS}."
    if unread is not None:
        return templates.TemplateResponse(
            request, "review.html", {"mode": "login", "error": unread}, status_code=422
        )
    try:
        principal = authenticate(services, key, client_address(request))
    except TooManyAttemptsError as exc:
        return templates.TemplateResponse(
            request,
            "review.html",
            {"mode": "login", "error": f"Too many wrong keys: try again in {exc.retry_after_s} s."},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    if principal is None or principal.role not in (Role.OFFICER, Role.ADMIN):
        message = "Unknown key." if principal is None else "This key may not review shipments."
        return templates.TemplateResponse(
            request,
            "review.html",
            {"mode": "login", "error": message},
            status_code=401 if principal is None else 403,
        )
    response = RedirectResponse("/review", status_code=303)
    response.set_cookie(
        COOKIE,
        services.signer.issue(key, principal.role),
        max_age=services.settings.session_ttl_s,
        httponly=True,
        samesite="strict",
        secure=services.settings.cookie_secure,
        path="/review",
    )
    return response


@router.post("/logout")
async def logout(
    request: Request, services: ServicesDep, csrf: Annotated[str, Form(max_length=128)]
) -> Response:
    if _session(request, services) is not None:  # an ended session is signed out already
        _require_session(request, services, csrf)
        services.signer.revoke(request.cookies.get(COOKIE, ""))  # a copy of the cookie must not outlive it
    response = RedirectResponse("/review", status_code=303)
    response.delete_cookie(COOKIE, path="/review", httponly=True, samesite="strict")
    return response


def _sign_in_page(request: Request, exc: NotAuthenticatedError | PermissionDeniedError) -> Response:
    """A browser form refused for its session: the sign-in page, not a problem+json body an officer
    cannot read."""
    expired = isinstance(exc, NotAuthenticatedError)
    if expired:
        words = "Your session has ended: sign in again, then record the outcome once more."
    elif "CSRF" in str(exc):
        words = "This form is out of date (another sign-in since it was loaded): sign in again."
    else:
        words = "This key may not review shipments."
    return templates.TemplateResponse(
        request, "review.html", {"mode": "login", "error": words}, status_code=401 if expired else 403
    )


class SignInFirst(Exception):  # noqa: N818 - an answer, not an error
    """An outcome form posted without a reviewer's session: answered with :attr:`page`."""

    def __init__(self, page: Response) -> None:
        super().__init__("no reviewer's session")
        self.page = page


async def sign_in_first(request: Request, exc: Exception) -> Response:
    """The app's handler of :class:`SignInFirst`."""
    assert isinstance(exc, SignInFirst)
    return exc.page


def _form_session(request: Request, services: ServicesDep) -> None:
    # A dependency runs before the form's fields are validated: without it, a form with a bad field
    # and no session was told 422 about the field, where the session is what is wrong (the CSRF
    # token, a field itself, is checked after the fields).
    try:
        _require_session(request, services)
    except (NotAuthenticatedError, PermissionDeniedError) as exc:
        raise SignInFirst(_sign_in_page(request, exc)) from exc


FormSessionDep = Annotated[None, Depends(_form_session)]


# refused as a field, as OutcomeIn refuses it: a synthetic class's name passes the pattern
FoundForm = Annotated[
    str, Form(min_length=1, max_length=64, pattern=TYPE_NAME_PATTERN), AfterValidator(found_type_name)
]
CsrfForm = Annotated[str, Form(max_length=128)]
DecisionSeqForm = Annotated[int, Form(ge=1, le=MAX_SEQ)]
# their characters are checked by _record_from_form, which sends refused notes back to the form
NotesForm = Annotated[str, Form(max_length=MAX_OUTCOME_NOTES_CHARS)]

_FORM_FIELDS = ("found", "csrf", "decision_seq", "notes")
"""The fields both outcome forms read (``/outcome`` also its ``shipment_id``, ``searched``, ``show``
and ``before``)."""


@router.post("/outcome")
async def review_outcome(
    request: Request,
    services: ServicesDep,
    _session: FormSessionDep,
    shipment_id: Annotated[str, Form(pattern=RECORDED_ID_PATTERN)],
    found: FoundForm,
    csrf: CsrfForm,
    decision_seq: DecisionSeqForm,
    notes: NotesForm = "",
    searched: Annotated[bool, Form()] = False,
    show: Annotated[str, Form(pattern="^(pending|all)$")] = "pending",
    before: Annotated[int | None, Form(ge=1, le=MAX_SEQ)] = None,
) -> Response:
    """The outcome form. The shipment id travels in the form, not the path: a batch run decides ids
    the API's path pattern does not take ('SHP/2026/1', 'SHP 0002'), and their forms posted to a
    route that answered 404 or 422, so the hold could not be lifted from the page. A form of a
    shipment found by search (``searched``) comes back to that shipment, not to the held queue,
    where a released one is not; any other to the queue page it was posted from (``show``,
    ``before``)."""
    return await _record_from_form(
        request,
        services,
        shipment_id,
        found,
        csrf,
        decision_seq,
        notes,
        fields=(*_FORM_FIELDS, "shipment_id", "searched", "show", "before"),
        back=Queue(searched=searched, show=show, before=None if searched else before),
    )


@router.post("/shipments/{shipment_id}/outcome")
async def review_outcome_by_path(
    request: Request,
    shipment_id: ShipmentIdPath,
    services: ServicesDep,
    _session: FormSessionDep,
    found: FoundForm,
    csrf: CsrfForm,
    decision_seq: DecisionSeqForm,
    notes: NotesForm = "",
) -> Response:
    """Where pages loaded before the form carried the id posted it."""
    return await _record_from_form(
        request, services, shipment_id, found, csrf, decision_seq, notes, fields=_FORM_FIELDS
    )


async def _record_from_form(
    request: Request,
    services: Services,
    shipment_id: str,
    found: str,
    csrf: str,
    decision_seq: int,
    notes: str,
    *,
    fields: tuple[str, ...],
    back: Queue | None = None,
) -> Response:
    """Record the outcome a form posted; ``fields``: the form's fields its route read; ``back``:
    where the form came from (:class:`Queue`; by default the first page of the pending queue).

    Raises:
        InputError: one of ``fields`` given more than once (422 bad-input).
    """
    try:
        principal = _require_session(request, services, csrf)
    except (NotAuthenticatedError, PermissionDeniedError) as exc:
        return _sign_in_page(request, exc)
    # FastAPI reads a field given twice as its last copy: found=foreign_object&found=clean was
    # recorded clean, lifting the hold, where the JSON routes refuse a key given twice. After the
    # session and its CSRF token: a form posted from elsewhere gets the sign-in page, as before.
    await refuse_repeated_fields(request, *fields)
    back = back if back is not None else Queue()
    try:
        current = await run_in_threadpool(services.audit.get, shipment_id)
    except SealBrokenError:  # forged since the page was loaded: its banner, not problem+json
        return RedirectResponse(_back(shipment_id, "stale", back), status_code=303)
    refused_notes = _refused_notes(notes)
    # The officer judged the decision the page showed: if another decision has been recorded since, or
    # another officer has recorded an outcome, this form is stale and recording it would overwrite
    # or misattribute a finding. Say so on the page instead. Checked before the notes' characters:
    # refused notes were answered with the form of the decision recorded since, without a word of it,
    # and posting it again recorded an outcome on a decision nobody inspected.
    if current is None or current.seq != decision_seq or current.outcome is not None:
        # the refused character is named where the shipment's form is there to take the notes again;
        # after another officer's outcome the notes are shown as typed, under it
        still_open = current is not None and current.outcome is None
        return await _not_recorded(
            request,
            services,
            principal,
            csrf,
            shipment_id,
            "stale",
            (found, notes, decision_seq),
            back,
            refused=refused_notes if still_open else None,
        )
    if refused_notes is not None:
        # refused as a field, the form answered a bare problem+json page, the notes typed were lost
        # and the character (a zero-width space pasted with them) could not be seen. Answered with
        # the shipment's page, which names it and where, with the notes without it to record again;
        # not redirected there: the URL would carry the notes (sensitive) into access logs, proxies'
        # logs and the browser's history, and a link could then fill in an officer's form
        return await _not_recorded(
            request,
            services,
            principal,
            csrf,
            shipment_id,
            None,
            (found, notes, decision_seq),
            back,
            refused=refused_notes,
            status_code=422,
        )
    try:
        await record_outcome(
            services,
            shipment_id,
            OutcomeIn(found=found, notes=notes, decision_seq=decision_seq),
            principal.name,
        )
    except HeadSealError:  # the trail takes no record: looking at the shipment again would not help
        return RedirectResponse(_back(shipment_id, "unrecorded", back), status_code=303)
    except SealBrokenError:  # a record it rests on failed its seal between the read and the write
        return RedirectResponse(_back(shipment_id, "stale", back), status_code=303)
    except ConflictError:  # another officer, or a new decision, got there between the check and the write
        return await _not_recorded(
            request, services, principal, csrf, shipment_id, "stale", (found, notes, decision_seq), back
        )
    except InputError:  # a finding the page offered, no longer one (the service restarted with another model)
        return await _not_recorded(
            request, services, principal, csrf, shipment_id, "relisted", (found, notes, decision_seq), back
        )
    return RedirectResponse(_back(shipment_id, "recorded", back), status_code=303)


async def _not_recorded(
    request: Request,
    services: Services,
    principal: Principal,
    csrf: str,
    shipment_id: str,
    notice: str | None,
    posted: tuple[str, str, int],
    back: Queue,
    *,
    refused: dict[str, Any] | None = None,
    status_code: int = 409,
) -> Response:
    """A form not recorded as its shipment changed since the page was loaded (``notice``: 'stale', a
    newer decision or another officer's outcome; 'relisted', the findings offered), or as its notes
    hold a character the rule refuses (no ``notice``, ``status_code`` 422): answered with the
    shipment's page (409), its notice, and the shipment's form as it is now (its latest
    decision's seq) holding the finding chosen, where still offered, and the notes typed (``posted``:
    the finding, the notes and the seq of the decision the form was for). Notes the
    character rule refused (``refused``, :func:`_refused_notes`, given where the form is shown) go
    back without the refused characters, and the page names them too.

    Redirected to ``/review?stale=...`` before, the officer's finding and notes were lost, to type
    again. Not carried in that URL either: the notes (sensitive) would stand in access logs,
    proxies' logs and the browser's history, and a link could then fill in an officer's form."""
    found, notes, seq = posted
    return await _queue_page(
        request,
        services,
        principal,
        csrf,
        shipment=shipment_id,
        asked={} if notice is None else {notice: shipment_id},
        refused=None if refused is None else (shipment_id, refused),
        typed=(shipment_id, found, notes if refused is None else refused["kept"], seq),
        back=back,
        status_code=status_code,
    )


def _search(services: Services, shipment: str) -> tuple[str, AuditRecord | SealFailure | None]:
    """The id searched for and its shipment's latest record: the id as given, else (nothing found)
    the id without the spaces a pasted one brings. As given first: a batch row's id may end in a
    space, and a form not recorded comes back to ``?shipment=`` with that id whole, which stripped
    found no decision. A record that fails its seal is named (:class:`SealFailure`), never shown."""

    def latest(shipment_id: str) -> AuditRecord | SealFailure | None:
        try:
            return services.audit.get(shipment_id)
        except SealBrokenError as exc:  # the decision was found by its shipment column
            return SealFailure(exc.seq, shipment_id, str(exc))

    found = latest(shipment)
    stripped = shipment.strip()
    if found is None and stripped != shipment:
        return stripped, latest(stripped)
    return shipment, found


def _back(shipment_id: str, notice: str, back: Queue) -> str:
    """Where a posted form returns, with the notice: the queue page it came from (``back``) after an
    outcome recorded; otherwise, or for a shipment searched for, the shipment itself. A form not
    recorded as a record of its shipment fails its seal (``stale``) or the trail takes none
    (``unrecorded``) comes back to the shipment, whose page says why: the queue lists neither one
    whose record fails nor one past its first page. (A form not recorded as its shipment changed is
    answered with the page itself, :func:`_not_recorded`, holding what was typed.)"""
    if back.searched or notice != "recorded":
        return f"/review?{notice}={quote(shipment_id, safe='')}&shipment={quote(shipment_id, safe='')}"
    queue = back.url()
    return f"{queue}{'&' if '?' in queue else '?'}{notice}={quote(shipment_id, safe='')}"


_FILE_HEADERS = {
    "Cache-Control": "no-store",  # cargo pictures stay off a shared machine's disk after sign-out
    "Content-Security-Policy": "default-src 'none'; sandbox",  # uploaded bytes: an image, never a page
}


# before stored_file, whose {kind} would take "display"
@router.get("/files/display/{sha256}")
async def shown_file(request: Request, sha256: str, services: ServicesDep) -> Response:
    """The picture the page shows of a stored upload (:func:`serve.display.shown_picture`): a PNG
    of its decoded, upright pixels, whatever its format (a browser drew uploads as they came with other
    pixels than scored). The upload as received stays at ``/files/images/<sha256>``."""
    _require_session(request, services)
    shown = await shown_picture(services, sha256, gone=request.is_disconnected)
    if isinstance(shown, bytes):
        return Response(shown, media_type="image/png", headers=_FILE_HEADERS)
    path, media_type = shown
    return FileResponse(path, media_type=media_type, headers=_FILE_HEADERS)


@router.get("/files/{kind}/{sha256}")
async def stored_file(request: Request, kind: str, sha256: str, services: ServicesDep) -> Response:
    _require_session(request, services)
    path, media_type = services.store.find(kind, sha256)
    return FileResponse(path, media_type=media_type, headers=_FILE_HEADERS)
