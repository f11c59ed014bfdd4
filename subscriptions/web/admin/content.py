"""Console pages for content: topics, feeds, posts and the suppression list.

Every page calls the same operations as the JSON API (`subscriptions/web/apiv1/content.py`). A form
that worked redirects (303) to a page with a one-line notice; a refused one is shown again with the
reason, status 400. Editors do all of it except removing a suppression, which needs an admin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from subscriptions import feeds, posts, suppressions, topics
from subscriptions.editors import EditorInfo
from subscriptions.errors import InvalidInput, NotFound
from subscriptions.models import PostStatus
from subscriptions.queue import PLAN_POST_ALERTS, POLL_FEED
from subscriptions.web.admin.auth import AdminDep, EditorDep, Flash, check_form, form_text, page
from subscriptions.web.runtime import FormDep, RuntimeDep, SessionDep, WebRuntime

router = APIRouter()

PAGE_SIZE = 50
IdPath = Annotated[int, Path(ge=1, le=2**31 - 1)]
PageQuery = Annotated[int, Query(ge=1, le=100_000)]
Notice = Annotated[str, Query(max_length=40)]

#: What a redirect's `?notice=` says (a code, so a link cannot put words on a console page).
NOTICES = {
    "topic-created": "Topic created.",
    "topic-saved": "Topic saved.",
    "topic-archived": "Topic archived. Its readers keep their subscription; it receives no more posts.",
    "topic-unarchived": "Topic back in use.",
    "feed-added": "Feed added; its first poll is due now.",
    "feed-saved": "Feed saved; the rules apply from its next poll.",
    "feed-polling": "A poll of this feed is on its way to a worker.",
    "feed-not-queued": "The queue cannot be reached; the feed is polled at its next scheduled time.",
    "feed-paused": "Feed paused.",
    "feed-resumed": "Feed resumed; its next poll is due now.",
    "post-held": "Post held: digests planned from now on leave it out.",
    "post-approved": "Post approved: its alerts are on their way.",
    "suppression-added": "Address suppressed: no more email goes to it.",
    "suppression-known": "That address was already suppressed.",
    "suppression-removed": "Suppression removed. The address may sign up again.",
}


def _flash(notice: str) -> Flash | None:
    text = NOTICES.get(notice)
    return Flash("notice", text) if text else None


def _int(form: dict[str, Any], name: str, field: str) -> int:
    raw = form_text(form, name, strip=False).strip()
    if not raw.isdigit() or len(raw) > 9:
        raise InvalidInput(f"{field}: give a whole number", field=name)
    return int(raw)


def _done(path: str, notice: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?notice={notice}", status_code=303)


def _refused(
    runtime: WebRuntime, request: Request, editor: EditorInfo, message: str
) -> HTMLResponse:
    return page(runtime, request, editor, "admin/error.html", 400, message=message)


def _missing(runtime: WebRuntime, request: Request, editor: EditorInfo, exc: NotFound) -> Response:
    return page(runtime, request, editor, "admin/error.html", 404, message=str(exc))


# ------------------------------------------------------------------------------------------ topics


def _topics_page(
    runtime: WebRuntime,
    request: Request,
    session: Any,
    editor: EditorInfo,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    listed = topics.summarize_topics(session=session)
    return page(runtime, request, editor, "admin/topics.html", status, topics=listed, **context)


@router.get("/topics", response_class=HTMLResponse)
def topics_page(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    notice: Notice = "",
) -> HTMLResponse:
    """Topics with their readers, and a form for a new one."""
    return _topics_page(runtime, request, session, editor, flash=_flash(notice), form={})


@router.post("/topics", response_model=None)
def create_topic(
    request: Request, runtime: RuntimeDep, session: SessionDep, editor: EditorDep, form: FormDep
) -> Response:
    """Create a topic."""
    error = check_form(runtime, request, form)
    if error is None:
        try:
            topics.add_topic(
                session=session,
                slug=form_text(form, "slug", strip=False),
                name=form_text(form, "name", strip=False),
                description=form_text(form, "description", strip=False),
            )
        except InvalidInput as exc:
            session.rollback()
            error = str(exc)
        else:
            session.commit()
            return _done("/admin/topics", "topic-created")
    return _topics_page(runtime, request, session, editor, 400, error=error, form=form)


def _translations(form: dict[str, Any], languages: Sequence[str]) -> dict[str, dict[str, str]]:
    """The topic's name and description per other offered language, as the form sent them."""
    return {
        code: {
            "name": form_text(form, f"name-{code}", strip=False),
            "description": form_text(form, f"description-{code}", strip=False),
        }
        for code in languages
        if f"name-{code}" in form or f"description-{code}" in form
    }


@router.get("/topics/{topic_id}", response_class=HTMLResponse)
def topic_page(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    topic_id: IdPath,
    notice: Notice = "",
) -> Response:
    """One topic: rename, describe, archive or bring back."""
    try:
        topic = topics.get_topic(session=session, topic_id=topic_id)
    except NotFound as exc:
        return _missing(runtime, request, editor, exc)
    return page(runtime, request, editor, "admin/topic.html", topic=topic, flash=_flash(notice))


@router.post("/topics/{topic_id}", response_model=None)
def save_topic(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    form: FormDep,
    topic_id: IdPath,
) -> Response:
    """Rename a topic and change its description."""
    error = check_form(runtime, request, form)
    try:
        if error is None:
            topics.update_topic(
                session=session,
                topic_id=topic_id,
                name=form_text(form, "name", strip=False),
                description=form_text(form, "description", strip=False),
                translations=_translations(form, runtime.settings.language_list[1:]),
            )
            session.commit()
            return _done(f"/admin/topics/{topic_id}", "topic-saved")
    except NotFound as exc:
        return _missing(runtime, request, editor, exc)
    except InvalidInput as exc:
        session.rollback()
        error = str(exc)
    try:
        topic = topics.get_topic(session=session, topic_id=topic_id)
    except NotFound as exc:
        return _missing(runtime, request, editor, exc)
    return page(runtime, request, editor, "admin/topic.html", 400, topic=topic, error=error)


@router.post("/topics/{topic_id}/archive", response_model=None)
def archive_topic(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    form: FormDep,
    topic_id: IdPath,
) -> Response:
    """Archive a topic (`archived=no` brings it back)."""
    error = check_form(runtime, request, form)
    if error is not None:
        return _refused(runtime, request, editor, error)
    archived = form_text(form, "archived", strip=False) != "no"
    try:
        topics.set_topic_archived(session=session, topic_id=topic_id, archived=archived)
    except NotFound as exc:
        return _missing(runtime, request, editor, exc)
    session.commit()
    runtime.live_topics(fresh=True)
    return _done(f"/admin/topics/{topic_id}", "topic-archived" if archived else "topic-unarchived")


# ------------------------------------------------------------------------------------------- feeds


def _feeds_page(
    runtime: WebRuntime,
    request: Request,
    session: Any,
    editor: EditorInfo,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    return page(
        runtime,
        request,
        editor,
        "admin/feeds.html",
        status,
        feeds=feeds.list_feeds(session=session),
        topics=topics.list_topics(session=session),
        **context,
    )


@router.get("/feeds", response_class=HTMLResponse)
def feeds_page(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    notice: Notice = "",
) -> HTMLResponse:
    """Feeds with their health, and a form to add one."""
    return _feeds_page(runtime, request, session, editor, flash=_flash(notice), form={})


@router.post("/feeds", response_model=None)
def add_feed(
    request: Request, runtime: RuntimeDep, session: SessionDep, editor: EditorDep, form: FormDep
) -> Response:
    """Register a feed."""
    error = check_form(runtime, request, form)
    if error is None:
        try:
            info = feeds.add_feed(
                session=session,
                url=form_text(form, "url", strip=False),
                topic=form_text(form, "topic", strip=False),
                category_map=feeds.parse_category_rules(
                    form_text(form, "category_map", strip=False)
                ),
                poll_interval_seconds=_int(form, "interval", "poll interval"),
                requires_approval=form_text(form, "requires_approval", strip=False) == "yes",
            )
        except InvalidInput as exc:
            session.rollback()
            error = str(exc)
        else:
            session.commit()
            return _done(f"/admin/feeds/{info.id}", "feed-added")
    return _feeds_page(runtime, request, session, editor, 400, error=error, form=form)


def _feed_page(
    runtime: WebRuntime,
    request: Request,
    session: Any,
    editor: EditorInfo,
    feed_id: int,
    status: int = 200,
    **context: Any,
) -> Response:
    try:
        feed = feeds.get_feed(session=session, feed_id=feed_id)
    except NotFound as exc:
        return _missing(runtime, request, editor, exc)
    context.setdefault("rules", feeds.format_category_rules(feed.category_map))
    return page(
        runtime,
        request,
        editor,
        "admin/feed.html",
        status,
        feed=feed,
        topics=topics.list_topics(session=session),
        **context,
    )


@router.get("/feeds/{feed_id}", response_class=HTMLResponse)
def feed_page(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    feed_id: IdPath,
    notice: Notice = "",
) -> Response:
    """One feed: its health, its category rules, poll now, pause and resume."""
    return _feed_page(runtime, request, session, editor, feed_id, flash=_flash(notice))


@router.post("/feeds/{feed_id}", response_model=None)
def save_feed(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    form: FormDep,
    feed_id: IdPath,
) -> Response:
    """Change a feed's default topic, category rules, interval and approval."""
    error = check_form(runtime, request, form)
    if error is None:
        try:
            feeds.update_feed(
                session=session,
                feed_id=feed_id,
                topic=form_text(form, "topic", strip=False),
                category_map=feeds.parse_category_rules(
                    form_text(form, "category_map", strip=False)
                ),
                poll_interval_seconds=_int(form, "interval", "poll interval"),
                requires_approval=form_text(form, "requires_approval", strip=False) == "yes",
            )
        except NotFound as exc:
            return _missing(runtime, request, editor, exc)
        except InvalidInput as exc:
            session.rollback()
            error = str(exc)
        else:
            session.commit()
            return _done(f"/admin/feeds/{feed_id}", "feed-saved")
    rules = form_text(form, "category_map", strip=False)
    return _feed_page(runtime, request, session, editor, feed_id, 400, error=error, rules=rules)


@router.post("/feeds/{feed_id}/{action}", response_model=None)
def feed_action(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    form: FormDep,
    feed_id: IdPath,
    action: Annotated[str, Path(pattern="^(poll|pause|resume)$")],
) -> Response:
    """Poll now (a task for a worker), pause with a reason, or resume."""
    error = check_form(runtime, request, form)
    if error is not None:
        return _refused(runtime, request, editor, error)
    try:
        if action == "poll":
            feeds.get_feed(session=session, feed_id=feed_id)
            queued = runtime.queue.send(POLL_FEED, feed_id)
            return _done(f"/admin/feeds/{feed_id}", "feed-polling" if queued else "feed-not-queued")
        reason = None
        if action == "pause":
            reason = (
                " ".join(form_text(form, "reason", strip=False).split())[:300]
                or f"paused by {editor.email}"
            )
        feeds.set_feed_paused(session=session, feed_id=feed_id, reason=reason)
    except NotFound as exc:
        return _missing(runtime, request, editor, exc)
    session.commit()
    return _done(f"/admin/feeds/{feed_id}", f"feed-{action}d")


# ------------------------------------------------------------------------------------------- posts


@router.get("/posts", response_class=HTMLResponse)
def posts_page(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    q: Annotated[str, Query(max_length=posts.MAX_SEARCH_CHARS)] = "",
    topic: Annotated[str, Query(max_length=64)] = "",
    status: Annotated[str, Query(pattern="^(|published|held)$")] = "",
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Posts newest first; search by title or link, topic and status."""
    found = posts.search_posts(
        session=session,
        text=q,
        topic=topic or None,
        status=PostStatus(status) if status else None,
        limit=PAGE_SIZE,
        offset=(page_number - 1) * PAGE_SIZE,
    )
    return page(
        runtime,
        request,
        editor,
        "admin/posts.html",
        posts=found.items,
        total=found.total,
        page_number=page_number,
        pages=max(1, -(-found.total // PAGE_SIZE)),
        q=q,
        topic=topic,
        status_filter=status,
        topics=topics.list_topics(session=session, include_archived=True),
    )


def _post_page(
    runtime: WebRuntime,
    request: Request,
    session: Any,
    editor: EditorInfo,
    post_id: int,
    status: int = 200,
    **context: Any,
) -> Response:
    try:
        post = posts.get_post(session=session, post_id=post_id)
        carriers = posts.post_digests(session=session, post_id=post_id)
    except NotFound as exc:
        return _missing(runtime, request, editor, exc)
    return page(
        runtime, request, editor, "admin/post.html", status, post=post, digests=carriers, **context
    )


@router.get("/posts/{post_id}", response_class=HTMLResponse)
def post_page(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    post_id: IdPath,
    notice: Notice = "",
) -> Response:
    """One post: its topics, status, and the digests that carried it."""
    return _post_page(runtime, request, session, editor, post_id, flash=_flash(notice))


@router.post("/posts/{post_id}/{action}", response_model=None)
def post_action(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    form: FormDep,
    post_id: IdPath,
    action: Annotated[str, Path(pattern="^(hold|approve)$")],
) -> Response:
    """Hold a post, or approve a held one (its immediate alerts are then planned)."""
    error = check_form(runtime, request, form)
    if error is not None:
        return _refused(runtime, request, editor, error)
    try:
        if action == "hold":
            posts.hold_post(session=session, post_id=post_id)
        else:
            info = posts.approve_post(session=session, post_id=post_id)
    except NotFound as exc:
        return _missing(runtime, request, editor, exc)
    except InvalidInput as exc:
        session.rollback()
        return _post_page(runtime, request, session, editor, post_id, 400, error=str(exc))
    session.commit()
    if action == "approve" and info.announce:
        runtime.queue.send(PLAN_POST_ALERTS, post_id)
    return _done(f"/admin/posts/{post_id}", "post-held" if action == "hold" else "post-approved")


# ------------------------------------------------------------------------------------ suppressions


def _suppressions_page(
    runtime: WebRuntime,
    request: Request,
    session: Any,
    editor: EditorInfo,
    status: int = 200,
    *,
    email: str = "",
    page_number: int = 1,
    **context: Any,
) -> HTMLResponse:
    try:
        found = suppressions.list_suppressions(
            session=session, email=email, limit=PAGE_SIZE, offset=(page_number - 1) * PAGE_SIZE
        )
    except InvalidInput as exc:
        found = suppressions.SuppressionPage([], 0)
        context.setdefault("error", str(exc))
        status = 400
    return page(
        runtime,
        request,
        editor,
        "admin/suppressions.html",
        status,
        suppressions=found.items,
        total=found.total,
        email=email,
        page_number=page_number,
        pages=max(1, -(-found.total // PAGE_SIZE)),
        **context,
    )


@router.get("/suppressions", response_class=HTMLResponse)
def suppressions_page(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    email: Annotated[str, Query(max_length=320)] = "",
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
    notice: Notice = "",
) -> HTMLResponse:
    """The suppression list, newest first; search by address (hashed for the lookup)."""
    return _suppressions_page(
        runtime,
        request,
        session,
        editor,
        email=email,
        page_number=page_number,
        flash=_flash(notice),
        form={},
    )


@router.post("/suppressions", response_model=None)
def add_suppression(
    request: Request, runtime: RuntimeDep, session: SessionDep, editor: EditorDep, form: FormDep
) -> Response:
    """Suppress an address, with the editor's reason."""
    error = check_form(runtime, request, form)
    if error is None:
        try:
            _, created = suppressions.add_suppression(
                session=session,
                email=form_text(form, "email", strip=False),
                detail=form_text(form, "reason", strip=False),
                added_by=editor.email,
            )
        except InvalidInput as exc:
            session.rollback()
            error = str(exc)
        else:
            session.commit()
            return _done(
                "/admin/suppressions", "suppression-added" if created else "suppression-known"
            )
    return _suppressions_page(runtime, request, session, editor, 400, error=error, form=form)


@router.post("/suppressions/{suppression_id}/remove", response_model=None)
def remove_suppression(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: AdminDep,
    form: FormDep,
    suppression_id: IdPath,
) -> Response:
    """Take an address off the list (admins only): it may then sign up again."""
    error = check_form(runtime, request, form)
    if error is not None:
        return _refused(runtime, request, editor, error)
    try:
        suppressions.remove_suppression(session=session, suppression_id=suppression_id)
    except NotFound as exc:
        return _missing(runtime, request, editor, exc)
    session.commit()
    return _done("/admin/suppressions", "suppression-removed")
