"""The demo data parsed from the sample blog page."""

from __future__ import annotations

from subscriptions.demo import DEMO_TOPICS, parse_sample_posts, sample_text


def test_sample_posts_parse_into_titled_posts_with_known_topics() -> None:
    posts = parse_sample_posts(sample_text())
    titles = [p.title for p in posts]
    assert titles[0].startswith("Charting a New Course Part 3")
    assert "Infographic | Managing the US-MX Border" in titles
    # The page's own heading and its subscribe box are not posts.
    assert "Border Security" not in titles
    assert not any(t.startswith("To receive an email") for t in titles)
    assert len(posts) == 9
    slugs = {slug for slug, _, _ in DEMO_TOPICS}
    assert all(p.topics and set(p.topics) <= slugs for p in posts)
    refugees = next(p for p in posts if p.title.startswith("8 Misguided"))
    assert "refugees" in refugees.topics
