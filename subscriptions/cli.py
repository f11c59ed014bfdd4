"""The `newsletter` command line: run the product, migrate, manage topics and posts."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click
from sqlalchemy.exc import OperationalError

from subscriptions import posts as post_ops
from subscriptions import topics as topic_ops
from subscriptions.db import create_db_engine, session_factory, transaction
from subscriptions.errors import ConfigurationError, NewsletterError, ServiceUnavailable
from subscriptions.queue import QUEUE
from subscriptions.settings import Settings, load_settings


class NewsletterGroup(click.Group):
    """Turns this project's errors into one line on stderr instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigurationError as exc:
            _fail(str(exc), code=2)
        except NewsletterError as exc:
            _fail(str(exc))
        except OperationalError as exc:
            _fail(f"database error: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0]


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"newsletter: {message}", err=True)
    sys.exit(code)


def _settings(ctx: click.Context) -> Settings:
    ctx.ensure_object(dict)
    if "settings" not in ctx.obj:
        ctx.obj["settings"] = load_settings()
    settings: Settings = ctx.obj["settings"]
    return settings


@click.group(cls=NewsletterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="topic-newsletter")
def main() -> None:
    """Self-hosted topic newsletters: subscribe form, digests, provider APIs."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.pass_context
def dev(ctx: click.Context, host: str, port: int) -> None:
    """Run everything on one machine: migrate, embedded Redis, web, worker and beat."""
    from subscriptions import supervisor as sv
    from subscriptions.migrate import upgrade

    settings = _settings(ctx)
    if not sv.port_is_free(host, port):
        _fail(f"port {port} on {host} is taken; stop what uses it or pass --port", code=1)
    try:
        upgrade(settings.database_url)
    except OperationalError as exc:
        _fail(f"cannot migrate the database: {_first_line(exc)}")
    env = dict(os.environ)
    supervisor = sv.Supervisor()
    supervisor.install_signal_handlers()
    var = Path("var")
    try:
        if not settings.broker_url:
            env["NEWSLETTER_BROKER_URL"] = sv.start_embedded_redis(supervisor, var / "redis", env)
        env["NEWSLETTER_SECRET_KEY"] = settings.secret_key
        supervisor.start(
            "web", sv.python_command("web", "--host", host, "--port", str(port)), env, None
        )
        supervisor.start("worker", sv.python_command("worker", "--concurrency", "1"), env, None)
        supervisor.start("beat", sv.python_command("beat"), env, None)
        url = f"http://{host}:{port}/"
        sv.wait_for_http(url + "healthz", supervisor)
        click.echo(f"\n  {settings.site_name} is running at {url}")
        click.echo(f"  Emails go to {settings.email.redacted()}.  Ctrl-C stops everything.\n")
        while (dead := supervisor.dead()) is None:
            time.sleep(0.5)
        supervisor.stop()
        _fail(f"{dead.name} exited with code {dead.process.returncode}; stopped the rest")
    except KeyboardInterrupt:
        click.echo("\nstopping…", err=True)
        supervisor.stop()
    except ServiceUnavailable as exc:
        supervisor.stop()
        _fail(str(exc))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, help="Web server processes.")
@click.pass_context
def web(ctx: click.Context, host: str, port: int, workers: int) -> None:
    """Serve the web app (reader pages, admin, API, webhooks) with uvicorn."""
    import uvicorn

    settings = _settings(ctx)
    uvicorn.run(
        "subscriptions.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@main.command()
@click.option("--concurrency", "-c", default=2, show_default=True, help="Worker processes.")
@click.option("--pool", default="prefork", show_default=True, help="Celery pool (prefork, solo).")
@click.pass_context
def worker(ctx: click.Context, concurrency: int, pool: str) -> None:
    """Run a Celery worker that sends email and does the background work."""
    from worker.app import create_celery

    app = create_celery(_settings(ctx))
    app.worker_main(
        ["worker", "--loglevel", _settings(ctx).log_level, "-c", str(concurrency), "-P", pool,
         "-Q", QUEUE, "--without-gossip", "--without-mingle"]
    )  # fmt: skip


@main.command()
@click.option("--schedule-file", default="var/celerybeat-schedule", show_default=True)
@click.pass_context
def beat(ctx: click.Context, schedule_file: str) -> None:
    """Run the scheduler (exactly one per deployment): feed polls, digests, sweeps."""
    from worker.app import create_celery

    Path(schedule_file).parent.mkdir(parents=True, exist_ok=True)
    app = create_celery(_settings(ctx))
    app.start(["beat", "--loglevel", _settings(ctx).log_level, "--schedule", schedule_file])


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Apply the migrations up to REVISION (head by default)."""
    from subscriptions.migrate import upgrade

    upgrade(_settings(ctx).database_url, revision)
    click.echo(f"database at {revision}")


@main.group()
def topics() -> None:
    """Topics readers can subscribe to."""


@topics.command("add")
@click.argument("slug")
@click.argument("name")
@click.option("--description", default="", help="One sentence shown on the subscribe form.")
@click.pass_context
def topics_add(ctx: click.Context, slug: str, name: str, description: str) -> None:
    """Create topic SLUG called NAME."""
    with _transaction(ctx) as session:
        topic = topic_ops.add_topic(session=session, slug=slug, name=name, description=description)
    click.echo(f"{topic.slug}\t{topic.name}")


@topics.command("list")
@click.option("--all", "include_archived", is_flag=True, help="Include archived topics.")
@click.pass_context
def topics_list(ctx: click.Context, include_archived: bool) -> None:
    """One topic a line: slug, name, description."""
    with _transaction(ctx) as session:
        for t in topic_ops.list_topics(session=session, include_archived=include_archived):
            click.echo(f"{t.slug}\t{t.name}\t{t.description}")


@main.group()
def posts() -> None:
    """Posts that digests and alerts carry."""


@posts.command("add")
@click.argument("title")
@click.option("--link", required=True, help="The post's URL.")
@click.option("--topic", "topic_slugs", multiple=True, required=True, help="Topic slug (repeat).")
@click.option("--summary", default="", help="A short summary.")
@click.option("--guid", default=None, help="The post's stable id (defaults to the link).")
@click.pass_context
def posts_add(
    ctx: click.Context,
    title: str,
    link: str,
    topic_slugs: tuple[str, ...],
    summary: str,
    guid: str | None,
) -> None:
    """Add (or update) a post by hand."""
    with _transaction(ctx) as session:
        post = post_ops.add_post(
            session=session,
            title=title,
            link=link,
            topics=list(topic_slugs),
            summary=summary,
            guid=guid,
        )
    click.echo(f"{post.id}\t{'added' if post.created else 'updated'}\t{post.title}")


@posts.command("list")
@click.option("--limit", default=50, show_default=True)
@click.pass_context
def posts_list(ctx: click.Context, limit: int) -> None:
    """The newest posts: id, published time, topics, title."""
    with _transaction(ctx) as session:
        for p in post_ops.list_posts(session=session, limit=limit):
            stamp = p.published_at.strftime("%Y-%m-%d %H:%M")
            click.echo(f"{p.id}\t{stamp}\t{','.join(p.topics)}\t{p.title}")


@main.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Load the demo topics and the sample posts (safe to run twice)."""
    from subscriptions.demo import DEMO_TOPICS, parse_sample_posts, sample_text
    from subscriptions.migrate import upgrade

    settings = _settings(ctx)
    upgrade(settings.database_url)
    with _transaction(ctx) as session:
        existing = {t.slug for t in topic_ops.list_topics(session=session, include_archived=True)}
        for slug, name, description in DEMO_TOPICS:
            if slug not in existing:
                topic_ops.add_topic(session=session, slug=slug, name=name, description=description)
        added = 0
        for number, post in enumerate(parse_sample_posts(sample_text()), start=1):
            info = post_ops.add_post(
                session=session,
                title=post.title,
                link=f"{settings.base_url}/demo/posts/{number}",
                topics=post.topics,
                summary=post.summary,
            )
            added += info.created
    click.echo(f"{len(DEMO_TOPICS)} topics, {added} new posts")


class _transaction:
    """A short-lived engine and one transaction, for a CLI command."""

    def __init__(self, ctx: click.Context) -> None:
        self._engine = create_db_engine(_settings(ctx).database_url)
        self._cm = transaction(session_factory(self._engine))

    def __enter__(self) -> Any:
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            self._cm.__exit__(*exc)
        finally:
            self._engine.dispose()


if __name__ == "__main__":
    main()
