"""The posts `newsletter demo` loads link to pages that exist: /demo/posts/N, one per sample post."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select

from subscriptions.demo import parse_sample_posts, sample_text
from subscriptions.models import Post
from tests.consoles import Console
from tests.integration.conftest import newsletter
from tests.integration.test_cli import _clean_env


def test_every_demo_post_links_to_a_page_that_exists(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    console = Console(tmp_path, database_url, redis_url)
    try:
        newsletter("demo", env=_clean_env(NEWSLETTER_DATABASE_URL=database_url), cwd=tmp_path)
        with console.sessions() as session:
            posts = session.execute(select(Post.link, Post.title)).all()
        assert len(posts) == len(parse_sample_posts(sample_text())) > 0
        client = console.client()
        for link, title in posts:
            path = urlsplit(link).path
            assert path.startswith("/demo/posts/"), link
            page = client.get(path)
            assert page.status_code == 200, link
            assert title.replace("'", "&#39;") in page.text or title in page.text
            assert 'href="/"' in page.text  # the subscribe box under the post
        assert client.get(f"/demo/posts/{len(posts) + 1}").status_code == 404
        assert client.get("/demo/posts/0").status_code in (400, 422)
    finally:
        console.close()
