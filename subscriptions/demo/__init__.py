"""Demo data: the policy institute's topics and the sample posts of its blog."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files

#: (slug, name, description) of the demo topics.
DEMO_TOPICS: list[tuple[str, str, str]] = [
    ("border-security", "Border Security", "Security cooperation and the U.S.-Mexico border."),
    ("migration", "Migration", "Migration policy and the people who move."),
    ("mexico", "Mexico", "U.S.-Mexico relations: trade, security, politics."),
    ("refugees", "Refugees", "Refugee resettlement and protection."),
    ("russia", "Russia", "Russia's politics and foreign policy."),
]

#: A post belongs to each topic whose pattern its title or summary matches.
TOPIC_PATTERNS = {
    "border-security": re.compile(r"\bborder|security\b", re.I),
    "migration": re.compile(r"migra", re.I),
    "mexico": re.compile(r"mexic|\bUS-MX\b", re.I),
    "refugees": re.compile(r"refuge", re.I),
    "russia": re.compile(r"russia", re.I),
}

SUBSCRIBE_BOX = "To receive an email when a new post is available"


@dataclass(frozen=True, slots=True)
class DemoPost:
    title: str
    summary: str
    topics: list[str]


def sample_text() -> str:
    """The sample posts as shipped (a copy of the publisher's blog page)."""
    return files("subscriptions.demo").joinpath("sample-posts.txt").read_text(encoding="utf-8")


def parse_sample_posts(text: str) -> list[DemoPost]:
    """Split the page into posts: a short line without a final full stop is a title; the
    paragraphs under it are its summary. The first line is the page's own heading."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    posts: list[tuple[str, list[str]]] = []
    for paragraph in paragraphs[1:]:
        if paragraph.startswith(SUBSCRIBE_BOX):
            continue
        if len(paragraph) <= 100 and not paragraph.endswith("."):
            posts.append((paragraph, []))
        elif posts:
            posts[-1][1].append(paragraph)
    result = []
    for title, body in posts:
        summary = "\n\n".join(body)
        topics = [
            slug for slug, pattern in TOPIC_PATTERNS.items() if pattern.search(f"{title} {summary}")
        ]
        result.append(DemoPost(title, summary, topics or ["border-security"]))
    return result
