"""Console pages for content: topics, feeds, posts and the suppression list.

Every form calls the same operation as the JSON API and the CLI (`subscriptions.operations`), in a
unit of work. A form that worked redirects (303) to a page with a one-line notice; a refused one
(`InvalidInput`, also a bad CSRF token) is shown again with the reason, status 400, by the app's
one handler (`auth.refusal`), which shows a missing record (`NotFound`) as the console's 404 page.
Editors do all of it except removing a suppression, which needs an admin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from subscriptions import feeds, posts, suppressions, topics
from subscriptions.editors import EditorInfo
from subscriptions.errors import InvalidInput
from subscriptions.models import PostStatus
from subscriptions.operations import feeds as feed_ops
from subscriptions.operations import posts as post_ops
from subscriptions.operations import suppressions as suppression_ops
from subscriptions.operations import topics as topic_ops
from subscriptions.web.admin.auth import (
    AdminDep,
    EditorDep,
    Flash,
    form_text,
    page,
    refill,
    require_form,
)
from subscriptions.web.params import IdPath
from subscriptions.web.runtime import FormDep, RuntimeDep, WebRuntime

router = APIRouter()

PAGE_SIZE = 50
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


# ------------------------------------------------------------------------------------------ topics


def _topics_page(
    runtime: WebRuntime, request: Request, editor: EditorInfo, status: int = 200, **context: Any
) -> HTMLResponse:
    with runtime.sessions() as session:
        listed = topics.summarize_topics(session=session)
    return page(runtime, request, editor, "admin/topics.html", status, topics=listed, **context)


@router.get("/topics", response_class=HTMLResponse)
def topics_page(
    request: Request, runtime: RuntimeDep, editor: EditorDep, notice: Notice = ""
) -> HTMLResponse:
    """Topics with their readers, and a form for a new one."""
    return _topics_page(runtime, request, editor, flash=_flash(notice), form={})


@router.post("/topics", response_model=None)
def create_topic(
    request: Request, runtime: RuntimeDep, editor: EditorDep, form: FormDep
) -> Response:
    """Create a topic."""
    refill(
        request, lambda error: _topics_page(runtime, request, editor, 400, error=error, form=form)
    )
    require_form(runtime, request, form)
    with runtime.unit() as uow:
        topic_ops.add(
            uow,
            slug=form_text(form, "slug", strip=False),
            name=form_text(form, "name", strip=False),
            description=form_text(form, "description", strip=False),
        )
    return _done("/admin/topics", "topic-created")


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


def _topic_page(
    runtime: WebRuntime,
    request: Request,
    editor: EditorInfo,
    topic_id: int,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    with runtime.sessions() as session:
        topic = topics.get_topic(session=session, topic_id=topic_id)
    return page(runtime, request, editor, "admin/topic.html", status, topic=topic, **context)


@router.get("/topics/{topic_id}", response_class=HTMLResponse)
def topic_page(
    request: Request, runtime: RuntimeDep, editor: EditorDep, topic_id: IdPath, notice: Notice = ""
) -> Response:
    """One topic: rename, describe, archive or bring back."""
    return _topic_page(runtime, request, editor, topic_id, flash=_flash(notice))


@router.post("/topics/{topic_id}", response_model=None)
def save_topic(
    request: Request, runtime: RuntimeDep, editor: EditorDep, form: FormDep, topic_id: IdPath
) -> Response:
    """Rename a topic, change its description and its name and description per language."""
    refill(request, lambda error: _topic_page(runtime, request, editor, topic_id, 400, error=error))
    require_form(runtime, request, form)
    with runtime.unit() as uow:
        topic_ops.edit(
            uow,
            topic_id,
            name=form_text(form, "name", strip=False),
            description=form_text(form, "description", strip=False),
            translations=_translations(form, runtime.settings.language_list[1:]),
        )
    return _done(f"/admin/topics/{topic_id}", "topic-saved")


@router.post("/topics/{topic_id}/archive", response_model=None)
def archive_topic(
    request: Request, runtime: RuntimeDep, editor: EditorDep, form: FormDep, topic_id: IdPath
) -> Response:
    """Archive a topic (`archived=no` brings it back)."""
    require_form(runtime, request, form)
    archived = form_text(form, "archived", strip=False) != "no"
    with runtime.unit() as uow:
        topic_ops.archive(uow, topic_id, archived=archived)
    runtime.live_topics(fresh=True)
    return _done(f"/admin/topics/{topic_id}", "topic-archived" if archived else "topic-unarchived")


# ------------------------------------------------------------------------------------------- feeds


def _feeds_page(
    runtime: WebRuntime, request: Request, editor: EditorInfo, status: int = 200, **context: Any
) -> HTMLResponse:
    with runtime.sessions() as session:
        listed = feeds.list_feeds(session=session)
        offered = topics.list_topics(session=session)
    return page(
        runtime,
        request,
        editor,
        "admin/feeds.html",
        status,
        feeds=listed,
        topics=offered,
        **context,
    )


@router.get("/feeds", response_class=HTMLResponse)
def feeds_page(
    request: Request, runtime: RuntimeDep, editor: EditorDep, notice: Notice = ""
) -> HTMLResponse:
    """Feeds with their health, and a form to add one."""
    return _feeds_page(runtime, request, editor, flash=_flash(notice), form={})


def _rules(form: dict[str, Any]) -> dict[str, str]:
    return feeds.parse_category_rules(form_text(form, "category_map", strip=False))


@router.post("/feeds", response_model=None)
def add_feed(request: Request, runtime: RuntimeDep, editor: EditorDep, form: FormDep) -> Response:
    """Register a feed."""
    refill(
        request, lambda error: _feeds_page(runtime, request, editor, 400, error=error, form=form)
    )
    require_form(runtime, request, form)
    with runtime.unit() as uow:
        info = feed_ops.add(
            uow,
            url=form_text(form, "url", strip=False),
            topic=form_text(form, "topic", strip=False),
            category_map=_rules(form),
            poll_interval_seconds=_int(form, "interval", "poll interval"),
            requires_approval=form_text(form, "requires_approval", strip=False) == "yes",
        )
    return _done(f"/admin/feeds/{info.id}", "feed-added")


def _feed_page(
    runtime: WebRuntime,
    request: Request,
    editor: EditorInfo,
    feed_id: int,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    with runtime.sessions() as session:
        feed = feeds.get_feed(session=session, feed_id=feed_id)
        offered = topics.list_topics(session=session)
    context.setdefault("rules", feeds.format_category_rules(feed.category_map))
    return page(
        runtime, request, editor, "admin/feed.html", status, feed=feed, topics=offered, **context
    )


@router.get("/feeds/{feed_id}", response_class=HTMLResponse)
def feed_page(
    request: Request, runtime: RuntimeDep, editor: EditorDep, feed_id: IdPath, notice: Notice = ""
) -> Response:
    """One feed: its health, its category rules, poll now, pause and resume."""
    return _feed_page(runtime, request, editor, feed_id, flash=_flash(notice))


@router.post("/feeds/{feed_id}", response_model=None)
def save_feed(
    request: Request, runtime: RuntimeDep, editor: EditorDep, form: FormDep, feed_id: IdPath
) -> Response:
    """Change a feed's default topic, category rules, interval and approval."""
    rules = form_text(form, "category_map", strip=False)
    refill(
        request,
        lambda error: _feed_page(runtime, request, editor, feed_id, 400, error=error, rules=rules),
    )
    require_form(runtime, request, form)
    with runtime.unit() as uow:
        feed_ops.edit(
            uow,
            feed_id,
            topic=form_text(form, "topic", strip=False),
            category_map=_rules(form),
            poll_interval_seconds=_int(form, "interval", "poll interval"),
            requires_approval=form_text(form, "requires_approval", strip=False) == "yes",
        )
    return _done(f"/admin/feeds/{feed_id}", "feed-saved")


@router.post("/feeds/{feed_id}/{action}", response_model=None)
def feed_action(
    request: Request,
    runtime: RuntimeDep,
    editor: EditorDep,
    form: FormDep,
    feed_id: IdPath,
    action: Annotated[str, Path(pattern="^(poll|pause|resume)$")],
) -> Response:
    """Poll now (a task for a worker), pause with a reason, or resume."""
    require_form(runtime, request, form)
    with runtime.unit() as uow:
        if action == "poll":
            feed_ops.poll_now(uow, feed_id)
        elif action == "pause":
            reason = form_text(form, "reason", strip=False)
            feed_ops.pause(uow, feed_id, reason=reason, by=editor.email)
        else:
            feed_ops.resume(uow, feed_id)
    if action == "poll":
        notice = "feed-polling" if uow.queued else "feed-not-queued"
    else:
        notice = f"feed-{action}d"
    return _done(f"/admin/feeds/{feed_id}", notice)


# ------------------------------------------------------------------------------------------- posts


@router.get("/posts", response_class=HTMLResponse)
def posts_page(
    request: Request,
    runtime: RuntimeDep,
    editor: EditorDep,
    q: Annotated[str, Query(max_length=posts.MAX_SEARCH_CHARS)] = "",
    topic: Annotated[str, Query(max_length=64)] = "",
    status: Annotated[str, Query(pattern="^(|published|held)$")] = "",
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Posts newest first; search by title or link, topic and status."""
    with runtime.sessions() as session:
        found = posts.search_posts(
            session=session,
            text=q,
            topic=topic or None,
            status=PostStatus(status) if status else None,
            limit=PAGE_SIZE,
            offset=(page_number - 1) * PAGE_SIZE,
        )
        offered = topics.list_topics(session=session, include_archived=True)
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
        topics=offered,
    )


def _post_page(
    runtime: WebRuntime,
    request: Request,
    editor: EditorInfo,
    post_id: int,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    with runtime.sessions() as session:
        post = posts.get_post(session=session, post_id=post_id)
        carriers = posts.post_digests(session=session, post_id=post_id)
    return page(
        runtime, request, editor, "admin/post.html", status, post=post, digests=carriers, **context
    )


@router.get("/posts/{post_id}", response_class=HTMLResponse)
def post_page(
    request: Request, runtime: RuntimeDep, editor: EditorDep, post_id: IdPath, notice: Notice = ""
) -> Response:
    """One post: its topics, status, and the digests that carried it."""
    return _post_page(runtime, request, editor, post_id, flash=_flash(notice))


@router.post("/posts/{post_id}/{action}", response_model=None)
def post_action(
    request: Request,
    runtime: RuntimeDep,
    editor: EditorDep,
    form: FormDep,
    post_id: IdPath,
    action: Annotated[str, Path(pattern="^(hold|approve)$")],
) -> Response:
    """Hold a post, or approve a held one (its immediate alerts are then planned)."""
    require_form(runtime, request, form)
    refill(request, lambda error: _post_page(runtime, request, editor, post_id, 400, error=error))
    with runtime.unit() as uow:
        if action == "hold":
            post_ops.hold(uow, post_id)
        else:
            post_ops.approve(uow, post_id)
    return _done(f"/admin/posts/{post_id}", "post-held" if action == "hold" else "post-approved")


# ------------------------------------------------------------------------------------ suppressions


def _suppressions_page(
    runtime: WebRuntime,
    request: Request,
    editor: EditorInfo,
    status: int = 200,
    *,
    email: str = "",
    page_number: int = 1,
    **context: Any,
) -> HTMLResponse:
    try:
        with runtime.sessions() as session:
            found = suppressions.list_suppressions(
                session=session, email=email, limit=PAGE_SIZE, offset=(page_number - 1) * PAGE_SIZE
            )
    except InvalidInput as exc:  # a search for a malformed address: the list, with the reason
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
    editor: EditorDep,
    email: Annotated[str, Query(max_length=320)] = "",
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
    notice: Notice = "",
) -> HTMLResponse:
    """The suppression list, newest first; search by address (hashed for the lookup)."""
    return _suppressions_page(
        runtime,
        request,
        editor,
        email=email,
        page_number=page_number,
        flash=_flash(notice),
        form={},
    )


@router.post("/suppressions", response_model=None)
def add_suppression(
    request: Request, runtime: RuntimeDep, editor: EditorDep, form: FormDep
) -> Response:
    """Suppress an address, with the editor's reason."""
    refill(
        request,
        lambda error: _suppressions_page(runtime, request, editor, 400, error=error, form=form),
    )
    require_form(runtime, request, form)
    with runtime.unit() as uow:
        _, created = suppression_ops.add(
            uow,
            email=form_text(form, "email", strip=False),
            reason=form_text(form, "reason", strip=False),
            by=editor.email,
        )
    return _done("/admin/suppressions", "suppression-added" if created else "suppression-known")


@router.post("/suppressions/{suppression_id}/remove", response_model=None)
def remove_suppression(
    request: Request, runtime: RuntimeDep, editor: AdminDep, form: FormDep, suppression_id: IdPath
) -> Response:
    """Take an address off the list (admins only): it may then sign up again."""
    require_form(runtime, request, form)
    with runtime.unit() as uow:
        suppression_ops.remove(uow, suppression_id)
    return _done("/admin/suppressions", "suppression-removed")
