"""The demo's blog: `/demo/posts/{number}`, the pages the posts of `newsletter demo` link to.

Each page shows one sample post and the subscribe box under it, as on the publisher's site, so a
link in a demo email leads somewhere real."""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse

from subscriptions.demo import DemoPost, parse_sample_posts, sample_text
from subscriptions.web.runtime import RuntimeDep

router = APIRouter()


@cache
def demo_posts() -> tuple[DemoPost, ...]:
    """The sample posts, numbered from 1 in the order `newsletter demo` adds them."""
    return tuple(parse_sample_posts(sample_text()))


@router.get("/demo/posts/{number}", response_class=HTMLResponse)
def demo_post(runtime: RuntimeDep, number: int = Path(ge=1, le=10_000)) -> HTMLResponse:
    """One sample post with the subscribe box; 404 past the last one."""
    posts = demo_posts()
    if number > len(posts):
        return runtime.page("error.html", status=404, code=404, message=f"No demo post {number}.")
    post = posts[number - 1]
    return runtime.page(
        "demo_post.html", post=post, paragraphs=post.summary.split("\n\n"), number=number
    )
