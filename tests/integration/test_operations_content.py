"""One operation, three entry points: the console, the API and the CLI agree for posts, feeds, topics
and suppressions.

Each test drives one operation of `subscriptions.operations` through the console (a signed-in
editor posting the real form with its CSRF token), the JSON API (a bearer token) and the CLI
(`newsletter …` through click's runner, on the same database and broker), each on its own record,
and checks that the three stored results are the same and that the tasks each left on the real
Redis broker are the same (ids aside). Real database (SQLite, or PostgreSQL when configured) and
Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from subscriptions import feeds, posts, suppressions
from subscriptions.cli import main
from subscriptions.models import Feed, Post, PostStatus, Suppression, Topic
from subscriptions.queue import PLAN_POST_ALERTS, POLL_FEED
from tests.consoles import Console
from tests.factories import SECRET
from tests.integration.test_feeds import queued
from tests.webforms import post_form

ENTRY_POINTS = ("console", "api", "cli")


class Three:
    """The console, the API and the CLI on one database and one broker."""

    def __init__(self, tmp_path: Path, database_url: str, redis_url: str) -> None:
        self.console = Console(tmp_path, database_url, redis_url, languages="en,es")
        self.redis_url = redis_url
        self.browser = self.console.signed_in("editor@example.org", role="admin")
        self.api: TestClient = self.console.api("admin")
        self.env = {
            "NEWSLETTER_DATABASE_URL": database_url,
            "NEWSLETTER_BROKER_URL": redis_url,
            "NEWSLETTER_EMAIL_URL": f"outbox://{tmp_path / 'outbox'}",
            "NEWSLETTER_SECRET_KEY": SECRET,
            "NEWSLETTER_ENVIRONMENT": "test",
            "NEWSLETTER_FROM": "Institute Updates <news@example.org>",
            "NEWSLETTER_LANGUAGES": "en,es",
        }

    def form(self, page: str, action: str, data: dict[str, Any]) -> None:
        """Post a console form as a browser would; it must redirect with a notice."""
        answer = post_form(self.browser, page, action, data)
        assert answer.status_code == 303, (action, answer.status_code, answer.text[:500])
        assert "?notice=" in answer.headers["location"]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = self.api.request(method, path, json=body)
        assert answer.status_code < 300, (path, answer.status_code, answer.text)
        return answer.json() if answer.content else None

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(main, list(args), env=self.env, catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
        return result.output

    def run(self, each: dict[str, Callable[[], object]]) -> dict[str, list[tuple[str, list[Any]]]]:
        """Run each entry point's call; what each left on the broker (then emptied)."""
        left = {}
        self.flush()
        for name in ENTRY_POINTS:
            if name in each:
                each[name]()
                left[name] = queued(self.redis_url)
                self.flush()
        return left

    def flush(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        client.flushdb()
        client.close()

    def close(self) -> None:
        self.console.close()


@pytest.fixture
def three(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Three]:
    made = Three(tmp_path, database_url, redis_url)
    yield made
    made.close()


def same(values: dict[str, Any]) -> Any:
    """The one value every entry point produced (fails showing all of them if they differ)."""
    first = next(iter(values.values()))
    assert all(v == first for v in values.values()), values
    return first


def tasks_by_name(left: dict[str, list[tuple[str, list[Any]]]]) -> dict[str, list[str]]:
    return {k: [name for name, _ in v] for k, v in left.items()}


# ------------------------------------------------------------------------------------------ topics


def topic_row(three: Three, slug: str) -> tuple[object, ...]:
    with three.console.sessions() as session:
        t = session.scalar(select(Topic).where(Topic.slug == slug))
        assert t is not None, slug
        return (t.name, t.description, t.translations or {}, t.archived_at is not None)


def add_topics(three: Three) -> dict[str, int]:
    ids = {}
    for name in ENTRY_POINTS:
        ids[name] = three.call("POST", "/api/v1/topics", {"slug": f"t-{name}", "name": "T"})["id"]
    return ids


def test_adding_a_topic_is_the_same_from_all_three(three: Three) -> None:
    left = three.run(
        {
            "console": lambda: three.form(
                "/admin/topics",
                "/admin/topics",
                {"slug": "a-console", "name": "Russia", "description": "East."},
            ),
            "api": lambda: three.call(
                "POST",
                "/api/v1/topics",
                {"slug": "a-api", "name": "Russia", "description": "East."},
            ),
            "cli": lambda: three.cli("topics", "add", "a-cli", "Russia", "--description", "East."),
        }
    )
    stored = same({n: topic_row(three, f"a-{n}") for n in ENTRY_POINTS})
    assert stored == ("Russia", "East.", {}, False)
    assert same(left) == []


def test_editing_a_topic_with_its_translation_is_the_same_from_all_three(three: Three) -> None:
    ids = add_topics(three)
    left = three.run(
        {
            "console": lambda: three.form(
                f"/admin/topics/{ids['console']}",
                f"/admin/topics/{ids['console']}",
                {
                    "name": "Russia",
                    "description": "East.",
                    "name-es": "Rusia",
                    "description-es": "Este.",
                },
            ),
            "api": lambda: three.call(
                "PATCH",
                f"/api/v1/topics/{ids['api']}",
                {
                    "name": "Russia",
                    "description": "East.",
                    "translations": {"es": {"name": "Rusia", "description": "Este."}},
                },
            ),
            "cli": lambda: three.cli(
                "topics", "edit", "t-cli", "--name", "Russia", "--description", "East.",
                "--translation", "es:Rusia:Este.",
            ),
        }
    )  # fmt: skip
    stored = same({n: topic_row(three, f"t-{n}") for n in ENTRY_POINTS})
    assert stored == ("Russia", "East.", {"es": {"name": "Rusia", "description": "Este."}}, False)
    assert same(left) == []


def test_archiving_a_topic_is_the_same_from_all_three(three: Three) -> None:
    ids = add_topics(three)
    left = three.run(
        {
            "console": lambda: three.form(
                f"/admin/topics/{ids['console']}",
                f"/admin/topics/{ids['console']}/archive",
                {"archived": "yes"},
            ),
            "api": lambda: three.call("PATCH", f"/api/v1/topics/{ids['api']}", {"archived": True}),
            "cli": lambda: three.cli("topics", "archive", "t-cli"),
        }
    )
    assert same({n: topic_row(three, f"t-{n}") for n in ENTRY_POINTS}) == ("T", "", {}, True)
    assert same(left) == []
    # ... and the subscribe form stops offering them, whichever archived them.
    page = three.console.client().get("/").text
    assert not any(f'value="t-{n}"' in page for n in ENTRY_POINTS)


# ------------------------------------------------------------------------------------------- feeds


def feed_row(three: Three, feed_id: int) -> tuple[object, ...]:
    with three.console.sessions() as session:
        f = feeds.get_feed(session=session, feed_id=feed_id)
        due = session.scalar(select(Feed.next_poll_at).where(Feed.id == feed_id))
    return (
        f.default_topic,
        f.category_map,
        f.poll_interval_seconds,
        f.requires_approval,
        f.paused_reason,
        f.consecutive_failures,
        due is not None,
    )


def feed_id(three: Three, url: str) -> int:
    with three.console.sessions() as session:
        found = session.scalar(select(Feed.id).where(Feed.url == url))
    assert found is not None, url
    return found


def add_feeds(three: Three) -> dict[str, int]:
    return {
        n: three.call(
            "POST", "/api/v1/feeds", {"url": f"https://example.org/{n}.xml", "topic": "mexico"}
        )["id"]
        for n in ENTRY_POINTS
    }


def test_adding_a_feed_is_the_same_from_all_three(three: Three) -> None:
    left = three.run(
        {
            "console": lambda: three.form(
                "/admin/feeds",
                "/admin/feeds",
                {
                    "url": "https://example.org/console.xml",
                    "topic": "mexico",
                    "category_map": "Refugees = refugees",
                    "interval": "600",
                    "requires_approval": "yes",
                },
            ),
            "api": lambda: three.call(
                "POST",
                "/api/v1/feeds",
                {
                    "url": "https://example.org/api.xml",
                    "topic": "mexico",
                    "category_map": {"Refugees": "refugees"},
                    "poll_interval_seconds": 600,
                    "requires_approval": True,
                },
            ),
            "cli": lambda: three.cli(
                "feeds", "add", "https://example.org/cli.xml", "--topic", "mexico",
                "--map", "Refugees=refugees", "--interval", "600", "--hold",
            ),
        }
    )  # fmt: skip
    rows = {
        n: feed_row(three, feed_id(three, f"https://example.org/{n}.xml")) for n in ENTRY_POINTS
    }
    assert same(rows) == ("mexico", {"refugees": "refugees"}, 600, True, None, 0, True)
    assert same(left) == []


def test_editing_a_feed_is_the_same_from_all_three(three: Three) -> None:
    ids = add_feeds(three)
    left = three.run(
        {
            "console": lambda: three.form(
                f"/admin/feeds/{ids['console']}",
                f"/admin/feeds/{ids['console']}",
                {
                    "topic": "migration",
                    "category_map": "Mexico = mexico",
                    "interval": "3600",
                    "requires_approval": "yes",
                },
            ),
            "api": lambda: three.call(
                "PATCH",
                f"/api/v1/feeds/{ids['api']}",
                {
                    "topic": "migration",
                    "category_map": {"Mexico": "mexico"},
                    "poll_interval_seconds": 3600,
                    "requires_approval": True,
                },
            ),
            "cli": lambda: three.cli(
                "feeds", "edit", str(ids["cli"]), "--topic", "migration", "--map", "Mexico=mexico",
                "--interval", "3600", "--hold",
            ),
        }
    )  # fmt: skip
    rows = {n: feed_row(three, ids[n]) for n in ENTRY_POINTS}
    assert same(rows) == ("migration", {"mexico": "mexico"}, 3600, True, None, 0, True)
    assert same(left) == []


def test_pausing_a_feed_is_the_same_from_all_three(three: Three) -> None:
    ids = add_feeds(three)
    reason = "  the  site   moves\n"
    left = three.run(
        {
            "console": lambda: three.form(
                f"/admin/feeds/{ids['console']}",
                f"/admin/feeds/{ids['console']}/pause",
                {"reason": reason},
            ),
            "api": lambda: three.call(
                "POST", f"/api/v1/feeds/{ids['api']}/pause", {"reason": reason}
            ),
            "cli": lambda: three.cli("feeds", "pause", str(ids["cli"]), "--reason", reason),
        }
    )
    rows = {n: feed_row(three, ids[n]) for n in ENTRY_POINTS}
    assert same(rows)[4] == "the site moves"
    assert same(left) == []
    # Without a reason, each names who paused it.
    three.run(
        {
            "console": lambda: three.form(
                f"/admin/feeds/{ids['console']}", f"/admin/feeds/{ids['console']}/pause", {}
            ),
            "api": lambda: three.call("POST", f"/api/v1/feeds/{ids['api']}/pause", {}),
            "cli": lambda: three.cli("feeds", "pause", str(ids["cli"])),
        }
    )
    reasons = {n: feed_row(three, ids[n])[4] for n in ENTRY_POINTS}
    assert reasons == {
        "console": "paused by editor@example.org",
        "api": "paused by API token 'test'",
        "cli": "paused by the command line",
    }


def test_resuming_a_feed_is_the_same_from_all_three(three: Three) -> None:
    ids = add_feeds(three)
    with three.console.sessions.begin() as session:
        for one in ids.values():
            feeds.set_feed_paused(session=session, feed_id=one, reason="broken")
            session.get_one(Feed, one).consecutive_failures = 5
            session.get_one(Feed, one).next_poll_at = None
    left = three.run(
        {
            "console": lambda: three.form(
                f"/admin/feeds/{ids['console']}", f"/admin/feeds/{ids['console']}/resume", {}
            ),
            "api": lambda: three.call("POST", f"/api/v1/feeds/{ids['api']}/resume"),
            "cli": lambda: three.cli("feeds", "resume", str(ids["cli"])),
        }
    )
    rows = {n: feed_row(three, ids[n]) for n in ENTRY_POINTS}
    assert same(rows) == ("mexico", {}, 900, False, None, 0, True)
    assert same(left) == []


def test_polling_a_feed_now_queues_the_same_task_from_all_three(three: Three) -> None:
    ids = add_feeds(three)
    before = {n: feed_row(three, ids[n]) for n in ENTRY_POINTS}
    left = three.run(
        {
            "console": lambda: three.form(
                f"/admin/feeds/{ids['console']}", f"/admin/feeds/{ids['console']}/poll", {}
            ),
            "api": lambda: three.call("POST", f"/api/v1/feeds/{ids['api']}/poll"),
            "cli": lambda: three.cli("feeds", "poll", str(ids["cli"]), "--queue"),
        }
    )
    assert left == {n: [(POLL_FEED, [ids[n]])] for n in ENTRY_POINTS}
    assert {n: feed_row(three, ids[n]) for n in ENTRY_POINTS} == before  # nothing else changed


# ------------------------------------------------------------------------------------------- posts


def post_row(three: Three, post_id: int) -> tuple[object, ...]:
    with three.console.sessions() as session:
        p = posts.get_post(session=session, post_id=post_id)
        released = session.scalar(select(Post.released_at).where(Post.id == post_id))
    return (p.title, p.topics, p.status, p.notify, released is not None)


def add_posts(three: Three, *, held: bool, notify: bool = True) -> dict[str, int]:
    with three.console.sessions.begin() as session:
        return {
            n: posts.add_post(
                session=session,
                title=f"Post {n}",
                link=f"https://example.org/{n}",
                topics=["mexico"],
                held=held,
                notify=notify,
            ).id
            for n in ENTRY_POINTS
        }


def test_adding_a_post_is_the_same_from_the_api_and_the_cli(three: Three) -> None:
    """The console has no form to add a post; the API's behaviour (a new published post's alerts
    are queued) is now the CLI's too."""
    left = three.run(
        {
            "api": lambda: three.call(
                "POST",
                "/api/v1/posts",
                {"title": "New", "link": "https://example.org/api", "topics": ["mexico"]},
            ),
            "cli": lambda: three.cli(
                "posts", "add", "New", "--link", "https://example.org/cli", "--topic", "mexico"
            ),
        }
    )
    with three.console.sessions() as session:
        ids = {
            n: session.scalar(select(Post.id).where(Post.link == f"https://example.org/{n}"))
            for n in ("api", "cli")
        }
    rows = {n: post_row(three, i) for n, i in ids.items() if i is not None}
    assert same(rows) == ("New", ["mexico"], "published", True, True)
    assert left == {n: [(PLAN_POST_ALERTS, [ids[n]])] for n in ("api", "cli")}
    # The same again is an update: no second alert from either.
    again = three.run(
        {
            "api": lambda: three.call(
                "POST",
                "/api/v1/posts",
                {"title": "New!", "link": "https://example.org/api", "topics": ["mexico"]},
            ),
            "cli": lambda: three.cli(
                "posts", "add", "New!", "--link", "https://example.org/cli", "--topic", "mexico"
            ),
        }
    )
    assert same(again) == []
    assert same({n: post_row(three, i)[0] for n, i in ids.items()}) == "New!"


def test_holding_a_post_is_the_same_from_all_three(three: Three) -> None:
    ids = add_posts(three, held=False)
    left = three.run(
        {
            "console": lambda: three.form(
                f"/admin/posts/{ids['console']}", f"/admin/posts/{ids['console']}/hold", {}
            ),
            "api": lambda: three.call("POST", f"/api/v1/posts/{ids['api']}/hold"),
            "cli": lambda: three.cli("posts", "hold", str(ids["cli"])),
        }
    )
    rows = {n: post_row(three, ids[n])[1:] for n in ENTRY_POINTS}
    assert same(rows) == (["mexico"], "held", True, True)
    assert same(left) == []


def test_approving_a_post_is_the_same_from_all_three(three: Three) -> None:
    """A held post's alerts are queued once approved; a held feed backlog post (never mailed) is
    released without alerts, from the CLI too (it used to queue them always)."""
    ids = add_posts(three, held=True)
    left = three.run(
        {
            "console": lambda: three.form(
                f"/admin/posts/{ids['console']}", f"/admin/posts/{ids['console']}/approve", {}
            ),
            "api": lambda: three.call("POST", f"/api/v1/posts/{ids['api']}/approve"),
            "cli": lambda: three.cli("posts", "approve", str(ids["cli"])),
        }
    )
    rows = {n: post_row(three, ids[n])[1:] for n in ENTRY_POINTS}
    assert same(rows) == (["mexico"], "published", True, True)
    assert left == {n: [(PLAN_POST_ALERTS, [ids[n]])] for n in ENTRY_POINTS}

    with three.console.sessions.begin() as session:
        session.execute(Post.__table__.delete().where(Post.id.in_(ids.values())))
    backlog = add_posts(three, held=True, notify=False)
    left = three.run(
        {
            "console": lambda: three.form(
                f"/admin/posts/{backlog['console']}",
                f"/admin/posts/{backlog['console']}/approve",
                {},
            ),
            "api": lambda: three.call("POST", f"/api/v1/posts/{backlog['api']}/approve"),
            "cli": lambda: three.cli("posts", "approve", str(backlog["cli"])),
        }
    )
    rows = {n: post_row(three, backlog[n])[1:] for n in ENTRY_POINTS}
    assert same(rows) == (["mexico"], "published", False, False)
    assert same(left) == []


# ------------------------------------------------------------------------------------ suppressions


def suppression_row(three: Three, email: str) -> tuple[object, ...] | None:
    with three.console.sessions() as session:
        found = suppressions.list_suppressions(session=session, email=email)
    if not found.items:
        return None
    [entry] = found.items
    return (entry.reason, entry.detail.split(" (added by ")[0])


def test_suppressing_an_address_is_the_same_from_all_three(three: Three) -> None:
    left = three.run(
        {
            "console": lambda: three.form(
                "/admin/suppressions",
                "/admin/suppressions",
                {"email": "Console@Example.org", "reason": "asked by phone"},
            ),
            "api": lambda: three.call(
                "POST",
                "/api/v1/suppressions",
                {"email": "Api@Example.org", "reason": "asked by phone"},
            ),
            "cli": lambda: three.cli(
                "suppressions", "add", "Cli@Example.org", "--reason", "asked by phone"
            ),
        }
    )
    rows = {n: suppression_row(three, f"{n}@example.org") for n in ENTRY_POINTS}
    assert same(rows) == ("editor", "asked by phone")
    assert same(left) == []
    with three.console.sessions() as session:
        details = sorted(session.scalars(select(Suppression.detail)))
    assert details == [
        "asked by phone (added by API token 'test')",
        "asked by phone (added by editor@example.org)",
        "asked by phone (added by the command line)",
    ]


def test_removing_a_suppression_is_the_same_from_all_three(three: Three) -> None:
    with three.console.sessions.begin() as session:
        ids = {
            n: suppressions.add_suppression(
                session=session, email=f"{n}@example.org", detail="asked"
            )[0].id
            for n in ENTRY_POINTS
        }
    left = three.run(
        {
            "console": lambda: three.form(
                "/admin/suppressions", f"/admin/suppressions/{ids['console']}/remove", {}
            ),
            "api": lambda: three.call("DELETE", f"/api/v1/suppressions/{ids['api']}"),
            "cli": lambda: three.cli("suppressions", "remove", str(ids["cli"])),
        }
    )
    assert same({n: suppression_row(three, f"{n}@example.org") for n in ENTRY_POINTS}) is None
    assert same(left) == []


# ------------------------------------------------------------------------------------------ errors


def test_each_entry_point_reports_a_refusal_in_its_own_medium_and_changes_nothing(
    three: Three,
) -> None:
    """NotFound: the console's 404 page, a 404 problem, one line and exit 1. InvalidInput: the
    console's form again with the reason (400), a 422 problem naming the field, one line and exit
    1. A post in the wrong state: the post's page (400), a 409 problem, exit 1."""
    ids = add_feeds(three)
    before = {n: feed_row(three, ids[n]) for n in ENTRY_POINTS}

    page = post_form(
        three.browser, f"/admin/feeds/{ids['console']}", "/admin/feeds/999999/pause", {}
    )
    assert page.status_code == 404 and "no feed 999999" in page.text
    assert 'name="csrf_token"' not in page.text or "<form" in page.text  # a console page
    problem = three.api.post("/api/v1/feeds/999999/pause", json={})
    assert problem.status_code == 404
    assert problem.headers["content-type"] == "application/problem+json"
    assert problem.json()["detail"] == "no feed 999999"
    cli = CliRunner().invoke(main, ["feeds", "pause", "999999"], env=three.env)
    assert cli.exit_code == 1 and cli.stderr.strip() == "newsletter: no feed 999999"

    page = post_form(
        three.browser,
        f"/admin/feeds/{ids['console']}",
        f"/admin/feeds/{ids['console']}",
        {"topic": "mexico", "interval": "5"},
    )
    assert page.status_code == 400 and "poll interval: 60 to 604800 seconds" in page.text
    assert 'action="/admin/feeds/' in page.text  # the feed's form again
    problem = three.api.patch(f"/api/v1/feeds/{ids['api']}", json={"topic": "nope"})
    assert problem.status_code == 422
    assert problem.json()["errors"][0]["field"] == "topic"
    cli = CliRunner().invoke(
        main, ["feeds", "edit", str(ids["cli"]), "--interval", "5"], env=three.env
    )
    assert cli.exit_code == 1 and "poll interval: 60 to 604800 seconds" in cli.stderr
    assert {n: feed_row(three, ids[n]) for n in ENTRY_POINTS} == before

    held = add_posts(three, held=False)
    page = post_form(
        three.browser,
        f"/admin/posts/{held['console']}",
        f"/admin/posts/{held['console']}/approve",
        {},
    )
    assert page.status_code == 400 and "is not held" in page.text and "Post console" in page.text
    problem = three.api.post(f"/api/v1/posts/{held['api']}/approve")
    assert problem.status_code == 409 and "is not held" in problem.json()["detail"]
    cli = CliRunner().invoke(main, ["posts", "approve", str(held["cli"])], env=three.env)
    assert cli.exit_code == 1 and "is not held" in cli.stderr
    assert queued(three.redis_url) == []
    assert {post_row(three, i)[2] for i in held.values()} == {PostStatus.PUBLISHED.value}
