"""The "subscribe here" box on a publisher's own pages, over HTTP against the real database and Redis.

A cross-site POST carries no cookie and no token: it is let in only from the origins of
`NEWSLETTER_EMBED_ORIGINS` (by `Origin`, else `Referer`), still behind the honeypot and the Redis
limits; the answer links back to the publisher's page, or is JSON with CORS headers for the script.
The framed form may be framed by those origins only. The console shows the snippets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from subscriptions.models import Consent
from tests import webforms
from tests.consoles import Console
from tests.integration.test_reader_pages import Site

BLOG = "https://blog.example.org"
POST_URL = f"{BLOG}/2026/12/border-wall"


@pytest.fixture
def site(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Site]:
    s = Site(tmp_path, database_url, redis_url, embed_origins=f"{BLOG}, https://think.example")
    yield s
    s.app.state.runtime.engine.dispose()
    s.worker.runtime.engine.dispose()


def _box(email: str, **extra: str) -> dict[str, object]:
    """What the console's plain HTML snippet sends."""
    return {
        "email": email,
        "topics": ["mexico", "migration"],
        "frequency": "weekly",
        "source": "subscribe box",
        "website": "",
        **extra,
    }


def test_a_box_on_an_allowed_site_signs_up_in_one_step_and_links_back(site: Site) -> None:
    answer = site.client().post(
        "/subscribe",
        data=_box("Reader@Example.org"),
        headers={"Origin": BLOG, "Referer": POST_URL},
    )
    assert answer.status_code == 200 and "Check your email" in answer.text
    assert "Reader@Example.org" in answer.text
    assert f'href="{POST_URL}"' in answer.text and "blog.example.org" in answer.text
    site.apply()
    with site.sessions() as session:
        consent = session.scalar(select(Consent))
        assert consent is not None and consent.topics == ["mexico", "migration"]
        assert consent.source == f"subscribe box on {BLOG}"
    assert [task for task, _ in site.mail_queued()] == ["newsletter.send_confirmation"]


def test_referer_stands_in_for_a_missing_origin(site: Site) -> None:
    answer = site.client().post(
        "/subscribe", data=_box("old@example.org"), headers={"Referer": POST_URL}
    )
    assert answer.status_code == 200 and "Check your email" in answer.text
    site.apply()
    assert site.reader("old@example.org") is not None


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example", "Referer": "https://evil.example/page"},
        {"Origin": "https://blog.example.org.evil.example"},
        {"Origin": "http://blog.example.org"},  # another scheme is another origin
    ],
)
def test_a_box_on_another_site_is_refused_and_nothing_is_stored(
    site: Site, headers: dict[str, str]
) -> None:
    answer = site.client().post("/subscribe", data=_box("victim@example.org"), headers=headers)
    assert answer.status_code == 403 and "Please subscribe on our page" in answer.text
    site.apply()
    assert site.reader("victim@example.org") is None and site.mail_queued() == []


def test_without_origin_or_referer_a_form_needs_its_token(site: Site) -> None:
    answer = site.client().post("/subscribe", data=_box("plain@example.org"))
    assert answer.status_code == 400 and "expired" in answer.text
    # ... and the reader lands on our form, filled in, with a token: one press and it is done.
    assert 'value="plain@example.org"' in answer.text and 'name="csrf_token"' in answer.text
    site.apply()
    assert site.reader("plain@example.org") is None


def test_the_honeypot_guards_the_box_too(site: Site) -> None:
    client = site.client()
    trapped = client.post(
        "/subscribe",
        data=_box("bot@example.org", website="http://spam"),
        headers={"Origin": BLOG, "Referer": POST_URL},
    )
    assert trapped.status_code == 200 and "Check your email" in trapped.text
    site.apply()
    assert site.reader("bot@example.org") is None and site.mail_queued() == []


def test_the_back_link_only_goes_to_an_allowed_origin(site: Site) -> None:
    answer = site.client().post(
        "/subscribe",
        data=_box("r@example.org", return_to="https://evil.example/phish"),
        headers={"Origin": BLOG},
    )
    assert answer.status_code == 200 and "evil.example" not in answer.text
    assert "Back to the page" not in answer.text


def test_the_script_gets_json_readable_by_the_allowed_origin_only(site: Site) -> None:
    client = site.client()
    headers = {"Origin": BLOG, "Accept": "application/json"}
    ok = client.post("/subscribe", data=_box("Js@Example.org"), headers=headers)
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == BLOG
    assert ok.json() == {
        "ok": True,
        "title": "Check your email",
        "message": "We sent a link to Js@Example.org. Open it to confirm your subscription.",
    }
    bad = client.post("/subscribe", data=_box("not-an-address"), headers=headers)
    assert bad.status_code == 400 and bad.json()["ok"] is False
    assert "not valid" in bad.json()["message"]
    site.apply()
    assert site.reader("js@example.org") is not None
    # From a site not on the list: no JSON, no CORS header, nothing stored.
    evil = client.post(
        "/subscribe",
        data=_box("x@example.org"),
        headers={"Origin": "https://evil.example", "Accept": "application/json"},
    )
    assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers


def test_the_box_counts_against_the_redis_limits(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    strict = Site(tmp_path, database_url, redis_url, embed_origins=BLOG, rate_limit_per_ip=2)
    client = strict.client()
    headers = {"Origin": BLOG, "Accept": "application/json"}
    for n in range(2):
        assert client.post("/subscribe", data=_box(f"r{n}@example.org"), headers=headers).is_success
    over = client.post("/subscribe", data=_box("r9@example.org"), headers=headers)
    assert over.status_code == 429 and "from your network" in over.json()["message"]
    assert int(over.headers["retry-after"]) > 0
    strict.app.state.runtime.engine.dispose()
    strict.worker.runtime.engine.dispose()


def test_the_framed_form_may_be_framed_by_allowed_origins_only(site: Site) -> None:
    client = site.client()
    framed = client.get("/embed/form?topic=mexico,migration&frequency=weekly")
    assert framed.status_code == 200
    policy = framed.headers["content-security-policy"]
    assert f"frame-ancestors 'self' {BLOG} https://think.example;" in policy
    assert framed.headers["x-frame-options"] == "SAMEORIGIN"
    assert "set-cookie" not in framed.headers  # a framed page gets no cookie it could not use
    # Every other page still refuses to be framed.
    assert "frame-ancestors 'none'" in client.get("/").headers["content-security-policy"]
    assert client.get("/").headers["x-frame-options"] == "DENY"
    # The framed form posts from our own origin without the cookie: its token is enough.
    token = webforms.TOKEN.search(framed.text)
    assert token is not None
    data = {
        "csrf_token": token.group(1),
        "embed": "frame",
        "email": "framed@example.org",
        "topics": ["mexico", "migration"],
        "frequency": "weekly",
    }
    fresh = site.client()  # no cookie at all
    answer = fresh.post("/subscribe", data=data, headers={"Origin": "http://127.0.0.1:8000"})
    assert answer.status_code == 200 and "Check your email" in answer.text
    assert (
        "frame-ancestors 'self' https://blog.example.org"
        in answer.headers["content-security-policy"]
    )
    # Its token works once (sent again for the same sign-up, the same answer and nothing more),
    # not for another sign-up, and not in a form that does not say it is framed.
    again = fresh.post("/subscribe", data=data, headers={"Origin": "http://127.0.0.1:8000"})
    assert again.status_code == 200 and "Check your email" in again.text
    assert fresh.post("/subscribe", data={**data, "email": "other@example.org"}).status_code == 400
    unframed = {name: value for name, value in data.items() if name != "embed"}
    assert fresh.post("/subscribe", data=unframed).status_code == 400
    site.apply()
    assert site.reader("framed@example.org") is not None
    assert client.get("/embed/form?topic=nope").status_code == 404


def test_a_frameless_token_is_no_good_outside_the_frame(site: Site) -> None:
    framed = site.client().get("/embed/form?topic=mexico")
    token = webforms.TOKEN.search(framed.text)
    assert token is not None
    answer = site.client().post(
        "/subscribe",
        data={"csrf_token": token.group(1), "email": "x@example.org", "topics": ["mexico"]},
    )
    assert answer.status_code == 400 and site.reader("x@example.org") is None


def test_the_console_shows_the_snippets_for_a_choice_of_topics(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    console = Console(tmp_path, database_url, redis_url, embed_origins=BLOG)
    try:
        client = console.signed_in("editor@example.org", role="editor")
        empty = client.get("/admin/embed")
        assert empty.status_code == 200 and "Show the snippets" in empty.text
        assert BLOG in empty.text
        page = client.get("/admin/embed?topic=mexico&topic=refugees&frequency=immediate")
        assert page.status_code == 200
        text = page.text
        assert "action=&#34;http://127.0.0.1:8000/subscribe&#34;" in text
        assert "name=&#34;topics&#34; value=&#34;mexico&#34;" in text
        assert "name=&#34;topics&#34; value=&#34;refugees&#34;" in text
        assert "name=&#34;frequency&#34; value=&#34;immediate&#34;" in text
        assert "http://127.0.0.1:8000/static/embed.js" in text
        assert "/embed/form?topic=mexico,refugees&amp;amp;frequency=immediate" in text
        assert 'href="/admin/embed"' in text  # in the console's navigation
    finally:
        console.close()


def test_embed_script_is_served(site: Site) -> None:
    script = site.client().get("/static/embed.js")
    assert script.status_code == 200 and "data-newsletter-box" in script.text
    assert json.dumps("application/json")[1:-1] in script.text


def test_a_framed_token_posted_from_another_site_is_refused(site: Site) -> None:
    framed = site.client().get("/embed/form?topic=mexico")
    token = webforms.TOKEN.search(framed.text)
    assert token is not None
    answer = site.client().post(
        "/subscribe",
        data={
            "csrf_token": token.group(1),
            "embed": "frame",
            "email": "x@example.org",
            "topics": ["mexico"],
            "frequency": "daily",
        },
        headers={"Origin": "https://evil.example"},
    )
    assert answer.status_code == 403
    site.apply()
    assert site.reader("x@example.org") is None


def test_the_older_box_form_can_be_sent_at_once(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    """The README's old snippet lands on the full form, filled in: pressing Subscribe at once (the
    natural thing to do) signs up, though the form came back sooner than the fill time."""
    slow = Site(tmp_path, database_url, redis_url, form_min_seconds=30)
    client = slow.client()
    filled = client.post("/embed", data={"email": "old.box@example.org", "topic": "mexico"})
    assert filled.status_code == 200 and 'value="old.box@example.org"' in filled.text
    token = webforms.TOKEN.search(filled.text)
    assert token is not None
    sent = client.post(
        "/subscribe",
        data={
            "csrf_token": token.group(1),
            "email": "old.box@example.org",
            "topics": ["mexico"],
            "frequency": "daily",
        },
    )
    assert sent.status_code == 200 and "Check your email" in sent.text
    slow.apply()
    assert slow.reader("old.box@example.org") is not None
    # The subscribe page itself still holds its forms to the fill time.
    fast = webforms.subscribe(client, "fast@example.org", ["mexico"])
    assert "One more step" in fast.text
    slow.app.state.runtime.engine.dispose()
    slow.worker.runtime.engine.dispose()
