"""The `newsletter` command line: run the product, migrate, manage topics and posts."""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from sqlalchemy.exc import OperationalError

from subscriptions import digests as digest_ops
from subscriptions import editors as editor_ops
from subscriptions import feeds as feed_ops
from subscriptions import imports
from subscriptions import notices as notice_ops
from subscriptions import posts as post_ops
from subscriptions import topics as topic_ops
from subscriptions import unknowns as unknown_ops
from subscriptions.db import create_db_engine, session_factory, transaction
from subscriptions.errors import ConfigurationError, NewsletterError, ServiceUnavailable
from subscriptions.models import PostStatus
from subscriptions.operations import UnitOfWork
from subscriptions.operations import digests as digests_op

# `*_op`: operations, run in a unit of work (`_unit`); `*_ops` above: the store's modules, for reads.
from subscriptions.operations import feeds as feeds_op
from subscriptions.operations import posts as posts_op
from subscriptions.operations import readers as readers_op
from subscriptions.operations import suppressions as suppressions_op
from subscriptions.operations import team as team_op
from subscriptions.operations import topics as topics_op
from subscriptions.queue import PLAN_POST_ALERTS, QUEUE, TaskQueue
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


def _settings(ctx: click.Context, *, beside_dev: bool = True) -> Settings:
    """The settings, read once per command. With `beside_dev` and no NEWSLETTER_BROKER_URL, the
    broker is the embedded one of a `newsletter dev` running in this directory (var/dev.json), so
    the tasks a command records reach its worker at once."""
    ctx.ensure_object(dict)
    if "settings" not in ctx.obj:
        ctx.obj["settings"] = load_settings()
    settings: Settings = ctx.obj["settings"]
    if beside_dev and not settings.broker_url:
        from subscriptions.supervisor import dev_broker_url

        found = dev_broker_url()
        if found:
            settings = settings.model_copy(update={"broker_url": found})
            ctx.obj["settings"] = settings
    return settings


def _unit(ctx: click.Context) -> UnitOfWork:
    """A unit of work on the configured database and broker (see `subscriptions.operations`)."""
    return _CliUnit(_settings(ctx))


def _queue(ctx: click.Context) -> TaskQueue:
    """A producer on the configured broker (or that of `newsletter dev` running here)."""
    return TaskQueue(_settings(ctx).broker_url)


@click.group(cls=NewsletterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="topic-newsletter")
def main() -> None:
    """Self-hosted topic newsletters: subscribe form, digests, provider APIs."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Port to serve on  [default: NEWSLETTER_PORT, 8000]",
)
@click.pass_context
def dev(ctx: click.Context, host: str, port: int | None) -> None:
    """Run everything on one machine: migrate, embedded Redis, web, worker and beat."""
    from subscriptions import supervisor as sv
    from subscriptions.migrate import upgrade

    settings = _settings(ctx, beside_dev=False)
    port = port or settings.port
    if not sv.port_is_free(host, port):
        _fail(f"port {port} on {host} is taken; stop what uses it or pass --port", code=1)
    try:
        upgrade(settings.database_url)
    except OperationalError as exc:
        _fail(f"cannot migrate the database: {_first_line(exc)}")
    from subscriptions.metrics import use_metrics_dir

    use_metrics_dir(settings.metrics_dir, clear=True)  # dev starts every process that counts there
    env = dict(os.environ)
    if "base_url" not in settings.model_fields_set:
        # Links in emails follow --port unless NEWSLETTER_BASE_URL says otherwise (issue #13).
        env["NEWSLETTER_BASE_URL"] = sv.default_base_url(host, port)
    base_url = env.get("NEWSLETTER_BASE_URL", settings.base_url)
    supervisor = sv.Supervisor()
    supervisor.install_signal_handlers()
    var = Path("var")
    try:
        if not settings.broker_url:
            env["NEWSLETTER_BROKER_URL"] = sv.start_embedded_redis(supervisor, var / "redis", env)
            sv.write_dev_file(env["NEWSLETTER_BROKER_URL"])  # for CLI commands run beside dev
        env["NEWSLETTER_SECRET_KEY"] = settings.secret_key
        supervisor.start(
            "web", sv.python_command("web", "--host", host, "--port", str(port)), env, None
        )
        supervisor.start("worker", sv.python_command("worker", "--concurrency", "1"), env, None)
        supervisor.start("beat", sv.python_command("beat"), env, None)
        url = f"http://{host}:{port}/"
        sv.wait_for_http(url + "healthz", supervisor)
        click.echo(f"\n  {settings.site_name} is running at {url}")
        click.echo(f"  Links in emails point to {base_url}.")
        click.echo(f"  Emails go to {settings.email.redacted()}.  Ctrl-C stops everything.\n")
        while (dead := supervisor.dead()) is None:
            time.sleep(0.5)
        supervisor.ignore_signals()
        supervisor.stop()
        _fail(f"{dead.name} exited with code {dead.process.returncode}; stopped the rest")
    except KeyboardInterrupt:
        supervisor.ignore_signals()
        click.echo("\nstopping…", err=True)
        supervisor.stop()
        click.echo("stopped.", err=True)
    except ServiceUnavailable as exc:
        supervisor.ignore_signals()
        supervisor.stop()
        _fail(str(exc))
    finally:
        sv.remove_dev_file()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Port to serve on  [default: NEWSLETTER_PORT, 8000]",
)
@click.option("--workers", default=1, show_default=True, help="Web server processes.")
@click.pass_context
def web(ctx: click.Context, host: str, port: int | None, workers: int) -> None:
    """Serve the web app (reader pages, admin, API, webhooks) with uvicorn."""
    import uvicorn

    from subscriptions.logs import uvicorn_log_config
    from subscriptions.metrics import use_metrics_dir
    from subscriptions.supervisor import base_url_mismatch

    settings = _settings(ctx)
    use_metrics_dir(settings.metrics_dir)
    port = port or settings.port
    if warning := base_url_mismatch(settings.base_url, host, port):
        click.echo(warning, err=True)
    uvicorn.run(
        "subscriptions.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # The app applies forwarded headers itself, from NEWSLETTER_TRUSTED_PROXIES only
        # (uvicorn's own default would trust 127.0.0.1).
        proxy_headers=False,
        log_level=settings.log_level.lower(),
        log_config=uvicorn_log_config(settings.log_format, settings.log_level),
        access_log=False,
    )


@main.command()
@click.option("--concurrency", "-c", default=2, show_default=True, help="Worker processes.")
@click.option("--pool", default="prefork", show_default=True, help="Celery pool (prefork, solo).")
@click.pass_context
def worker(ctx: click.Context, concurrency: int, pool: str) -> None:
    """Run a Celery worker that sends email and does the background work."""
    from subscriptions.metrics import use_metrics_dir

    use_metrics_dir(_settings(ctx).metrics_dir)
    from subscriptions.logs import configure_logging
    from worker.app import create_celery

    configure_logging(_settings(ctx).log_format, _settings(ctx).log_level)
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
    from subscriptions.metrics import use_metrics_dir

    use_metrics_dir(_settings(ctx).metrics_dir)
    from subscriptions.logs import configure_logging
    from worker.app import create_celery

    configure_logging(_settings(ctx).log_format, _settings(ctx).log_level)
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
@click.option(
    "--translation",
    "translations",
    multiple=True,
    metavar="LANG:NAME[:DESCRIPTION]",
    help="The name (and description) in another language, e.g. 'es:México'; repeatable.",
)
@click.pass_context
def topics_add(
    ctx: click.Context, slug: str, name: str, description: str, translations: tuple[str, ...]
) -> None:
    """Create topic SLUG called NAME."""
    given = _translations(translations)
    with _unit(ctx) as uow:
        topic = topics_op.add(
            uow, slug=slug, name=name, description=description, translations=given
        )
    click.echo(f"{topic.slug}\t{topic.name}")


@topics.command("edit")
@click.argument("slug")
@click.option("--name", default=None, help="The new name.")
@click.option("--description", default=None, help="The new description.")
@click.option(
    "--translation",
    "translations",
    multiple=True,
    metavar="LANG:NAME[:DESCRIPTION]",
    help="Replace the name and description in LANG ('es:' removes it); repeatable.",
)
@click.pass_context
def topics_edit(
    ctx: click.Context,
    slug: str,
    name: str | None,
    description: str | None,
    translations: tuple[str, ...],
) -> None:
    """Rename topic SLUG, change its description or its name and description per language (the
    slug stays)."""
    given = _translations(translations, allow_empty=True) if translations else None
    with _unit(ctx) as uow:
        found = topics_op.find(uow, slug)
        topic = topics_op.edit(
            uow, found.id, name=name, description=description, translations=given
        )
    _echo_topic(topic)


@topics.command("translate")
@click.argument("slug")
@click.argument("language")
@click.argument("name")
@click.option("--description", default="", help="The description in LANGUAGE.")
@click.pass_context
def topics_translate(
    ctx: click.Context, slug: str, language: str, name: str, description: str
) -> None:
    """Give topic SLUG its NAME (and description) in LANGUAGE; an empty NAME and description
    remove that language (the default language's name shows instead)."""
    with _unit(ctx) as uow:
        found = topics_op.find(uow, slug)
        topic = topics_op.edit(
            uow, found.id, translations={language: {"name": name, "description": description}}
        )
    _echo_topic(topic)


@topics.command("archive")
@click.argument("slug")
@click.option("--undo", is_flag=True, help="Bring an archived topic back into use.")
@click.pass_context
def topics_archive(ctx: click.Context, slug: str, undo: bool) -> None:
    """Archive topic SLUG: its readers keep their subscription, it receives no more posts, and the
    subscribe form stops offering it."""
    with _unit(ctx) as uow:
        topic = topics_op.archive(uow, topics_op.find(uow, slug).id, archived=not undo)
    click.echo(f"{topic.slug}\t{'archived' if topic.archived else 'in use'}")


def _echo_topic(topic: topic_ops.TopicInfo) -> None:
    names = ", ".join(f"{k}: {v['name']}" for k, v in sorted(topic.translations.items()))
    click.echo(f"{topic.slug}\t{topic.name}\t{names}")


def _translations(
    values: tuple[str, ...], *, allow_empty: bool = False
) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for value in values:
        language, _, rest = value.partition(":")
        name, _, description = rest.partition(":")
        if not language or not (name or allow_empty):
            raise click.BadParameter(
                f"{value!r}: use LANG:NAME[:DESCRIPTION]", param_hint="--translation"
            )
        out[language] = {"name": name, "description": description}
    return out


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
@click.option("--hold", is_flag=True, help="Hold a new post until an editor approves it.")
@click.pass_context
def posts_add(
    ctx: click.Context,
    title: str,
    link: str,
    topic_slugs: tuple[str, ...],
    summary: str,
    guid: str | None,
    hold: bool,
) -> None:
    """Add (or update) a post by hand; a new published post's alerts go out, as from the API."""
    with _unit(ctx) as uow:
        post = posts_op.add(
            uow,
            title=title,
            link=link,
            topics=list(topic_slugs),
            summary=summary,
            guid=guid,
            held=hold,
        )
    click.echo(f"{post.id}\t{'added' if post.created else 'updated'}\t{post.title}")


@posts.command("hold")
@click.argument("post_id", type=int)
@click.pass_context
def posts_hold(ctx: click.Context, post_id: int) -> None:
    """Hold a published post: digests planned from now on leave it out until it is approved."""
    with _unit(ctx) as uow:
        post = posts_op.hold(uow, post_id)
    click.echo(f"{post.id}\theld\t{post.title}")


@posts.command("approve")
@click.argument("post_id", type=int)
@click.pass_context
def posts_approve(ctx: click.Context, post_id: int) -> None:
    """Release a post held for approval; its alerts go out (unless it is a feed's backlog)."""
    with _unit(ctx) as uow:
        post = posts_op.approve(uow, post_id)
    click.echo(f"{post.id}\tapproved\t{post.title}")


@posts.command("list")
@click.option("--limit", default=50, show_default=True)
@click.option("--held", is_flag=True, help="Only posts held for approval.")
@click.pass_context
def posts_list(ctx: click.Context, limit: int, held: bool) -> None:
    """The newest posts: id, published time, status, topics, title."""
    status = PostStatus.HELD if held else None
    with _transaction(ctx) as session:
        for p in post_ops.list_posts(session=session, limit=limit, status=status):
            stamp = p.published_at.strftime("%Y-%m-%d %H:%M")
            click.echo(f"{p.id}\t{stamp}\t{p.status}\t{','.join(p.topics)}\t{p.title}")


@main.group()
def feeds() -> None:
    """RSS and Atom feeds watched for new posts."""


def _mapping(pairs: tuple[str, ...]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        category, sep, slug = pair.rpartition("=")
        if not sep or not category.strip() or not slug.strip():
            raise click.BadParameter(f"{pair!r}: use CATEGORY=SLUG", param_hint="--map")
        mapping[category.strip()] = slug.strip()
    return mapping


def _echo_feed(feed: feed_ops.FeedInfo, state: str | None = None) -> None:
    click.echo(f"{feed.id}\t{state or feed.url}")


@feeds.command("add")
@click.argument("url")
@click.option("--topic", required=True, help="Topic of entries no rule maps.")
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="CATEGORY=SLUG",
    help="Map a category to a topic (repeat).",
)
@click.option("--interval", default=900, show_default=True, help="Seconds between polls.")
@click.option("--hold", is_flag=True, help="Hold new posts until an editor approves them.")
@click.option(
    "--send-latest",
    default=0,
    show_default=True,
    help="On the first poll, mail the newest N entries.",
)
@click.pass_context
def feeds_add(
    ctx: click.Context,
    url: str,
    topic: str,
    maps: tuple[str, ...],
    interval: int,
    hold: bool,
    send_latest: int,
) -> None:
    """Watch the feed at URL; its first poll records the backlog as already seen."""
    with _unit(ctx) as uow:
        feed = feeds_op.add(
            uow,
            url=url,
            topic=topic,
            category_map=_mapping(maps),
            poll_interval_seconds=interval,
            requires_approval=hold,
            send_latest=send_latest,
        )
    _echo_feed(feed)


@feeds.command("edit")
@click.argument("feed_id", type=int)
@click.option("--topic", default=None, help="Topic of entries no rule maps.")
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="CATEGORY=SLUG",
    help="The category rules (repeat); given, they replace all of the feed's rules.",
)
@click.option("--clear-maps", is_flag=True, help="Remove every category rule.")
@click.option("--interval", type=int, default=None, help="Seconds between polls.")
@click.option(
    "--hold/--no-hold", default=None, help="Hold new posts for approval, or publish them."
)
@click.pass_context
def feeds_edit(
    ctx: click.Context,
    feed_id: int,
    topic: str | None,
    maps: tuple[str, ...],
    clear_maps: bool,
    interval: int | None,
    hold: bool | None,
) -> None:
    """Change a feed's default topic, category rules, interval or approval (from its next poll)."""
    rules = {} if clear_maps else (_mapping(maps) if maps else None)
    with _unit(ctx) as uow:
        feed = feeds_op.edit(
            uow,
            feed_id,
            topic=topic,
            category_map=rules,
            poll_interval_seconds=interval,
            requires_approval=hold,
        )
    _echo_feed(feed)


@feeds.command("list")
@click.pass_context
def feeds_list(ctx: click.Context) -> None:
    """One feed a line: id, status, failures, default topic, URL, last error or pause reason."""
    with _transaction(ctx) as session:
        for f in feed_ops.list_feeds(session=session):
            state = "paused" if f.paused_reason else f.last_status
            note = f.paused_reason or f.last_error
            click.echo(
                f"{f.id}\t{state}\t{f.consecutive_failures}\t{f.default_topic}\t{f.url}\t{note}"
            )


@feeds.command("poll")
@click.argument("feed_id", type=int, required=False)
@click.option("--all", "poll_all", is_flag=True, help="Poll every feed that is not paused.")
@click.option(
    "--queue",
    "to_worker",
    is_flag=True,
    help="Hand the poll of FEED_ID to a worker, as the console and the API do.",
)
@click.pass_context
def feeds_poll(ctx: click.Context, feed_id: int | None, poll_all: bool, to_worker: bool) -> None:
    """Poll now, in the foreground, and report what was found (or, with --queue, ask a worker)."""
    if (feed_id is None) == (not poll_all):
        raise click.UsageError("give a feed ID or --all")
    if to_worker:
        if feed_id is None:
            raise click.UsageError("--queue takes one feed ID")
        with _unit(ctx) as uow:
            feeds_op.poll_now(uow, feed_id)
        _echo_feed_poll(feed_id, uow.queued)
        return
    from worker.feeds.poll import FetchOptions, poll_feed

    settings = _settings(ctx)
    engine = create_db_engine(settings.database_url)
    sessions = session_factory(engine)
    with sessions() as session:
        ids = (
            [feed_id]
            if feed_id is not None
            else [f.id for f in feed_ops.list_feeds(session=session) if not f.paused_reason]
        )
    options = FetchOptions(
        allow_private=settings.feeds_allow_private_addresses,
        max_bytes=settings.feeds_max_bytes,
        timeout=settings.feeds_timeout_seconds,
    )
    queue = _queue(ctx)
    failed = False
    for one in ids:
        report = poll_feed(sessions, one, options)
        click.echo(report.summary())
        failed = failed or report.status not in ("ok", "not_modified")
        for post_id in report.announce:
            queue.send(PLAN_POST_ALERTS, post_id)
    engine.dispose()
    if failed:
        sys.exit(1)


def _echo_feed_poll(feed_id: int, queued: bool) -> None:
    if queued:
        click.echo(f"{feed_id}\tpoll queued")
    else:
        click.echo(f"{feed_id}\tnot queued (the broker cannot be reached); polled when due")


@feeds.command("pause")
@click.argument("feed_id", type=int)
@click.option(
    "--reason", default="", help="Why, for editors  [default: paused by the command line]"
)
@click.pass_context
def feeds_pause(ctx: click.Context, feed_id: int, reason: str) -> None:
    """Stop polling a feed."""
    with _unit(ctx) as uow:
        feeds_op.pause(uow, feed_id, reason=reason, by="the command line")
    click.echo(f"{feed_id}\tpaused")


@feeds.command("resume")
@click.argument("feed_id", type=int)
@click.pass_context
def feeds_resume(ctx: click.Context, feed_id: int) -> None:
    """Poll a paused feed again (its failure count starts over)."""
    with _unit(ctx) as uow:
        feeds_op.resume(uow, feed_id)
    click.echo(f"{feed_id}\tresumed")


@main.group()
def suppressions() -> None:
    """Addresses no email may go to (bounces, complaints, an editor's word)."""


@suppressions.command("add")
@click.argument("email")
@click.option("--reason", required=True, help="What happened, who asked.")
@click.pass_context
def suppressions_add(ctx: click.Context, email: str, reason: str) -> None:
    """Suppress EMAIL at once, on every topic (an address already suppressed keeps its reason)."""
    with _unit(ctx) as uow:
        entry, created = suppressions_op.add(uow, email=email, reason=reason, by="the command line")
    click.echo(f"{entry.id}\t{'added' if created else 'already suppressed'}\t{entry.hash_prefix}")


@suppressions.command("list")
@click.option("--email", default="", help="Find this address (hashed first).")
@click.option("--limit", default=50, show_default=True)
@click.pass_context
def suppressions_list(ctx: click.Context, email: str, limit: int) -> None:
    """Newest first: id, time, reason, hash prefix, detail."""
    from subscriptions import suppressions as suppression_store

    with _transaction(ctx) as session:
        found = suppression_store.list_suppressions(session=session, email=email, limit=limit)
    for s in found.items:
        stamp = s.created_at.strftime("%Y-%m-%d %H:%M")
        click.echo(f"{s.id}\t{stamp}\t{s.reason}\t{s.hash_prefix}\t{s.detail}")


@suppressions.command("remove")
@click.argument("suppression_id", type=int)
@click.pass_context
def suppressions_remove(ctx: click.Context, suppression_id: int) -> None:
    """Take an entry off the list: the address may sign up again (nothing is resumed)."""
    with _unit(ctx) as uow:
        entry = suppressions_op.remove(uow, suppression_id)
    click.echo(f"{entry.id}\tremoved\t{entry.hash_prefix}")


@main.group()
def editors() -> None:
    """Editors and their API tokens."""


@editors.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(editor_ops.ROLES), default="editor", show_default=True)
@click.option("--name", default="", help="How the console names this editor.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of stdin (for scripts) instead of a prompt.",
)
@click.pass_context
def editors_create(
    ctx: click.Context, email: str, role: str, name: str, password_stdin: bool
) -> None:
    """Make a console account for EMAIL; the password is asked for (never an argument)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _unit(ctx) as uow:
        info = team_op.add_editor(uow, email=email, password=password, name=name, role=role)
    click.echo(f"{info.id}\t{info.email}\t{info.role}")


@editors.command("change")
@click.argument("editor_id", type=int)
@click.option("--role", type=click.Choice(editor_ops.ROLES), help="Give this role.")
@click.option("--lock", "action", flag_value="lock", help="Lock the account (ends its sessions).")
@click.option("--unlock", "action", flag_value="unlock", help="Unlock the account.")
@click.option("--sign-out", "action", flag_value="sign-out", help="End every session.")
@click.pass_context
def editors_change(
    ctx: click.Context, editor_id: int, role: str | None, action: str | None
) -> None:
    """Change editor EDITOR_ID as the console's Team page does: a role, lock or unlock, or sign
    out everywhere (the last admin stays an unlocked admin)."""
    if (role is None) == (action is None):
        raise click.UsageError("give one of --role, --lock, --unlock or --sign-out")
    with _unit(ctx) as uow:
        message = team_op.change_editor(uow, editor_id, action=action or "role", role=role)
    click.echo(message)


@editors.command("list")
@click.pass_context
def editors_list(ctx: click.Context) -> None:
    """One editor a line: id, address, role, name, last sign-in, state."""
    with _transaction(ctx) as session:
        for e in editor_ops.list_editors(session=session):
            seen = e.last_login_at.strftime("%Y-%m-%d %H:%M") if e.last_login_at else "never"
            state = "disabled" if e.disabled else "active"
            click.echo(f"{e.id}\t{e.email}\t{e.role}\t{e.name}\t{seen}\t{state}")


@editors.command("create-token")
@click.argument("name")
@click.option("--role", type=click.Choice(editor_ops.ROLES), default="editor", show_default=True)
@click.pass_context
def editors_create_token(ctx: click.Context, name: str, role: str) -> None:
    """Make an API bearer token called NAME; it is printed once and stored only as a hash."""
    with _unit(ctx) as uow:
        info, plain = team_op.create_token(uow, name=name, role=role)
    click.echo(
        f"token {info.id} ({info.role}) for {info.name}; shown once, keep it safe:", err=True
    )
    click.echo(plain)


@editors.command("list-tokens")
@click.pass_context
def editors_list_tokens(ctx: click.Context) -> None:
    """One token a line: id, name, role, created, last used, revoked."""
    with _transaction(ctx) as session:
        for t in editor_ops.list_tokens(session=session):
            used = t.last_used_at.strftime("%Y-%m-%d %H:%M") if t.last_used_at else "never"
            state = "revoked" if t.revoked else "active"
            click.echo(f"{t.id}\t{t.name}\t{t.role}\t{t.created_at:%Y-%m-%d}\t{used}\t{state}")


@editors.command("revoke-token")
@click.argument("token_id", type=int)
@click.pass_context
def editors_revoke_token(ctx: click.Context, token_id: int) -> None:
    """Revoke token TOKEN_ID at once."""
    with _unit(ctx) as uow:
        info = team_op.revoke_token(uow, token_id)
    click.echo(f"{info.id}\trevoked\t{info.name}")


@main.group()
def digest() -> None:
    """Editors' digests: create, preview, send, schedule, cancel, status."""


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use ISO 8601, e.g. 2026-12-01T09:00+00:00", param_hint=name
        ) from None
    if moment.tzinfo is None:
        raise click.BadParameter(f"{value!r}: give a time zone, e.g. +00:00", param_hint=name)
    return moment


def _print_digest(summary: digest_ops.DigestSummary) -> None:
    counts = " ".join(f"{k}={v}" for k, v in sorted(summary.counts.items()))
    click.echo(f"{summary.id}\t{summary.status}\t{summary.subject}\t{summary.audience}\t{counts}")


@digest.command("create")
@click.option("--subject", required=True)
@click.option("--intro", default="", help="Introduction in Markdown.")
@click.option(
    "--intro-file", type=click.File(encoding="utf-8"), help="Read the introduction from a file."
)
@click.option("--post", "post_ids", multiple=True, type=int, help="A post id (repeat).")
@click.option(
    "--topic", "topic_slugs", multiple=True, help="Take the posts of this topic (repeat)."
)
@click.option("--since", help="Start of the window for --topic (ISO 8601 with a zone).")
@click.option("--until", help="End of the window for --topic (default: now).")
@click.option(
    "--audience",
    "audience",
    multiple=True,
    help="Send to readers of this topic (repeat); default: the chosen topics, or the chosen "
    "posts' topics.",
)
@click.option("--everyone", is_flag=True, help="Send to every active reader, every post.")
@click.option(
    "--for-everyone",
    "for_everyone",
    is_flag=True,
    help="Each reader of the audience gets every post (default: the posts of their topics).",
)
@click.pass_context
def digest_create(
    ctx: click.Context,
    subject: str,
    intro: str,
    intro_file: Any,
    post_ids: tuple[int, ...],
    topic_slugs: tuple[str, ...],
    since: str | None,
    until: str | None,
    audience: tuple[str, ...],
    everyone: bool,
    for_everyone: bool,
) -> None:
    """Compose a draft digest from posts, or from topics and a time window."""
    with _unit(ctx) as uow:
        summary = digests_op.compose(
            uow,
            subject=subject,
            intro_markdown=intro_file.read() if intro_file else intro,
            post_ids=list(post_ids),
            topics=list(topic_slugs),
            since=_when(since, "--since"),
            until=_when(until, "--until"),
            audience_topics=list(audience),
            everyone=everyone,
            for_everyone=for_everyone,
        )
    _print_digest(summary)


@digest.command("preview")
@click.argument("digest_id", type=int)
@click.option(
    "--reader", "reader_email", help="Render as this reader (default: the first active one)."
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the HTML here.",
)
@click.pass_context
def digest_preview(
    ctx: click.Context, digest_id: int, reader_email: str | None, html_file: str | None
) -> None:
    """Show the subject and text of a digest as READER gets it (and write the HTML with --html)."""
    with _unit(ctx) as uow:
        shown = digests_op.preview(uow, _settings(ctx), digest_id, email=reader_email)
    click.echo(f"rendered as {shown.reader}", err=True)
    click.echo(f"Subject: {shown.subject}\n\n{shown.text}")
    if html_file:
        Path(html_file).write_text(shown.html, encoding="utf-8")
        click.echo(f"HTML written to {html_file}", err=True)


def _confirm_options(command: Any) -> Any:
    command = click.option(
        "--expect-count",
        "expect_count",
        type=click.IntRange(min=0),
        help="With --yes: the recipient count you checked; refused if it is no longer true.",
    )(command)
    return click.option("--yes", is_flag=True, help="Do not ask (needs --expect-count N).")(command)


def _confirmed_count(
    ctx: click.Context, digest_id: int, what: str, yes: bool, expect_count: int | None
) -> int:
    """Print the recipient count and have it confirmed: by --yes with --expect-count, or asked."""
    with _transaction(ctx) as session:
        summary = digest_ops.summarize(session=session, digest_id=digest_id)
        count = digest_ops.count_audience(session=session, digest_id=digest_id)
    topics = ", ".join(f"{name} {n}" for name, n in count.by_topic) or "-"
    frequencies = ", ".join(f"{f} {n}" for f, n in sorted(count.by_frequency.items())) or "-"
    click.echo(
        f'Digest {digest_id} "{summary.subject}": {count.total} recipients '
        f"({summary.audience}; by topic: {topics}; by frequency: {frequencies})"
    )
    if yes:
        if expect_count is None:
            raise click.UsageError("--yes needs --expect-count N (the count you checked)")
        return expect_count
    if expect_count is not None and expect_count != count.total:
        _fail(f"the audience is {count.total} readers now, not {expect_count}")
    click.confirm(f'{what} "{summary.subject}" to {count.total} readers?', abort=True)
    return count.total


@digest.command("send")
@click.argument("digest_id", type=int)
@click.option("--test-to", help="Only send a test copy to this editor address.")
@click.option(
    "--as-reader", help="For --test-to: render as this reader (default: the first active one)."
)
@_confirm_options
@click.pass_context
def digest_send(
    ctx: click.Context,
    digest_id: int,
    test_to: str | None,
    as_reader: str | None,
    yes: bool,
    expect_count: int | None,
) -> None:
    """Send a draft digest now (the worker sends it), or a test copy with --test-to.

    Prints the recipient count and asks; `--yes --expect-count N` sends without asking, only if
    the count is still N."""
    settings = _settings(ctx)
    if test_to:
        _send_test(ctx, settings, digest_id, test_to, as_reader)
        return
    expected = _confirmed_count(ctx, digest_id, "Send now", yes, expect_count)
    with _unit(ctx) as uow:
        summary = digests_op.send_now(uow, digest_id, expected_count=expected)
    _print_digest(summary)


def _send_test(
    ctx: click.Context, settings: Settings, digest_id: int, to: str, as_reader: str | None
) -> None:
    with _unit(ctx) as uow:
        sent = digests_op.send_test(uow, settings, digest_id, to=to, as_reader=as_reader)
    click.echo(f"test copy sent to {sent.to} (rendered as {sent.as_reader})")


@digest.command("schedule")
@click.argument("digest_id", type=int)
@click.option("--at", "at", required=True, help="When (ISO 8601 with a zone).")
@_confirm_options
@click.pass_context
def digest_schedule(
    ctx: click.Context, digest_id: int, at: str, yes: bool, expect_count: int | None
) -> None:
    """Send a draft digest at a given time (prints the recipient count and asks, as `send`)."""
    moment = _when(at, "--at")
    assert moment is not None
    expected = _confirmed_count(ctx, digest_id, f"Schedule for {at}", yes, expect_count)
    with _unit(ctx) as uow:
        summary = digests_op.schedule(uow, digest_id, at=moment, expected_count=expected)
    _print_digest(summary)


@digest.command("cancel")
@click.argument("digest_id", type=int)
@click.pass_context
def digest_cancel(ctx: click.Context, digest_id: int) -> None:
    """Cancel a draft, scheduled or sending digest (what was sent stays sent)."""
    with _unit(ctx) as uow:
        summary = digests_op.cancel(uow, digest_id)
    _print_digest(summary)


@digest.command("status")
@click.argument("digest_id", type=int)
@click.pass_context
def digest_status(ctx: click.Context, digest_id: int) -> None:
    """A digest's state, its deliveries by status, and why any outcome is unknown."""
    with _transaction(ctx) as session:
        _print_digest(digest_ops.summarize(session=session, digest_id=digest_id))
        found = unknown_ops.unknown_report(session=session, digest_id=digest_id)
    for reason, count in sorted(found.reasons.items()):
        click.echo(f"unknown\t{count}\t{reason}")
    if found.open:
        click.echo(
            f"{found.open} unknown: `newsletter digest unknown {digest_id} --resend` (a reader"
            " may get two copies) or `--close`"
        )


@digest.command("unknown")
@click.argument("digest_id", type=int)
@click.option("--resend", "action", flag_value="resend", help="Send them again (may duplicate).")
@click.option("--close", "action", flag_value="close", help="Leave them unsent, close the notice.")
@click.option("--yes", is_flag=True, help="Do not ask before resending.")
@click.pass_context
def digest_unknown(ctx: click.Context, digest_id: int, action: str | None, yes: bool) -> None:
    """Resend or close a digest's deliveries whose outcome is unknown."""
    if action is None:
        raise click.UsageError("say --resend or --close")
    if action == "resend" and not yes:
        click.confirm(
            "The provider may have sent these already: resending can give a reader two copies."
            " Resend?",
            abort=True,
        )
    with _unit(ctx) as uow:
        changed = digests_op.settle_unknown(uow, digest_id, action=action)
    click.echo(f"{changed} deliveries {'queued again' if action == 'resend' else 'closed'}")


@main.group()
def readers() -> None:
    """Readers: import from CSV, export as CSV, erase, change a reader's language."""


@readers.command("import")
@click.argument("csv_file", type=click.File("rb"))
@click.option("--consent", is_flag=True, help="They agreed to receive email: import them active.")
@click.option("--strict", is_flag=True, help="Write nothing when any row is bad (exit 1).")
@click.option("--dry-run", "dry_run", is_flag=True, help="Check and report only.")
@click.pass_context
def readers_import(
    ctx: click.Context, csv_file: Any, consent: bool, strict: bool, dry_run: bool
) -> None:
    """Import readers from CSV_FILE ('-' for stdin); every row is checked first, then the valid
    ones are written together. Prints the summary and one line per bad or skipped row."""
    data = csv_file.read(imports.MAX_BYTES + 1)
    with _unit(ctx) as uow:
        report = readers_op.import_csv(
            uow, data, consent=consent, by="command line", strict=strict, dry_run=dry_run
        )
    for issue in report.bad:
        click.echo(f"bad\t{issue.row}\t{issue.email}\t{issue.reason}")
    for issue in report.skipped:
        click.echo(f"skipped\t{issue.row}\t{issue.email}\t{issue.reason}")
    click.echo(report.summary)
    if strict and report.bad:
        _fail(f"{len(report.bad)} bad rows: nothing imported")


@readers.command("export")
@click.option("--query", "-q", default="", help="Part of the address.")
@click.option("--status", type=click.Choice(readers_op.STATUSES), help="Only readers so.")
@click.option("--topic", help="Only readers of this topic (slug).")
@click.option(
    "--output", "-o", type=click.File("w", encoding="utf-8"), default="-", help="Default: stdout."
)
@click.pass_context
def readers_export(
    ctx: click.Context, query: str, status: str | None, topic: str | None, output: Any
) -> None:
    """The matching readers as CSV (the import's columns plus status)."""
    with _unit(ctx) as uow:
        for chunk in readers_op.export_csv(uow, query=query, status=status, topic=topic):
            output.write(chunk)


@readers.command("erase")
@click.argument("reader_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_context
def readers_erase(ctx: click.Context, reader_id: int, yes: bool) -> None:
    """Erase reader READER_ID and everything tied to them; only a hash of the address stays, on
    the suppression list."""
    if not yes:
        click.confirm(f"Erase reader {reader_id} for good?", abort=True)
    with _unit(ctx) as uow:
        readers_op.erase(uow, reader_id)
    click.echo(f"{reader_id}\terased")


@readers.command("language")
@click.argument("reader_id", type=int)
@click.argument("language")
@click.pass_context
def readers_language(ctx: click.Context, reader_id: int, language: str) -> None:
    """Send reader READER_ID's emails and pages in LANGUAGE (one of NEWSLETTER_LANGUAGES)."""
    offered = _settings(ctx).language_list
    with _unit(ctx) as uow:
        chosen = readers_op.set_language(uow, reader_id, language=language, offered=offered)
    click.echo(f"{reader_id}\t{chosen}")


@main.command("notices")
@click.pass_context
def notices_list(ctx: click.Context) -> None:
    """What editors must act on: sending paused, requests a provider refused."""
    with _transaction(ctx) as session:
        found = notice_ops.open_notices(session=session)
    for n in found:
        click.echo(f"{n.id}\t{n.created_at:%Y-%m-%d %H:%M}\t{n.kind}\t{n.message}")
    if not found:
        click.echo("no open notices")


@main.group()
def sending() -> None:
    """Pause or resume all sending (the provider refused the account, or an editor decided)."""


@sending.command("pause")
@click.option(
    "--reason", default="", help="Why, for the other editors  [default: paused by an editor]"
)
@click.pass_context
def sending_pause(ctx: click.Context, reason: str) -> None:
    """Stop all sending now; planned emails wait."""
    with _unit(ctx) as uow:
        digests_op.pause_sending(uow, reason=reason, by="an editor")
    click.echo("sending paused")


@sending.command("resume")
@click.pass_context
def sending_resume(ctx: click.Context) -> None:
    """Resume sending; waiting emails go out with the next dispatch."""
    with _unit(ctx) as uow:
        closed = digests_op.resume_sending(uow)
    click.echo("sending resumed" if closed else "sending was not paused")


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


class _CliUnit(UnitOfWork):
    """A unit of work on a short-lived engine, disposed of when the unit ends."""

    def __init__(self, settings: Settings) -> None:
        self._engine = create_db_engine(settings.database_url)
        super().__init__(session_factory(self._engine), TaskQueue(settings.broker_url))
        # `settings` comes from `_settings`, so a broker of `newsletter dev` running here counts.

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._engine.dispose()


@main.group()
def ledger() -> None:
    """The delivery ledger: archive the per-reader rows of old digests."""


@ledger.command("archive")
@click.option(
    "--older-than",
    "older_than",
    required=True,
    help="Archive digests finished longer ago than this: 90d, 12h, 30m.",
)
@click.option(
    "--chunk",
    type=click.IntRange(1024, 1_000_000),
    default=16 * 1024,
    show_default=True,
    help="Reader ids moved per transaction.",
)
@click.option(
    "--max-chunks",
    type=click.IntRange(1),
    help="Stop after this many transactions (the next run continues).",
)
@click.pass_context
def ledger_archive(ctx: click.Context, older_than: str, chunk: int, max_chunks: int | None) -> None:
    """Move finished digests' deliveries into the compact archive (the audit still reads them)."""
    from subscriptions import ledger_archive as archive_ops

    try:
        age = archive_ops.parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    engine = create_db_engine(_settings(ctx).database_url)
    try:
        report = archive_ops.archive_ledger(
            sessions=session_factory(engine), older_than=age, chunk=chunk, limit=max_chunks
        )
    finally:
        engine.dispose()
    click.echo(
        f"{len(report.digests)} digests archived, {report.moved} deliveries moved"
        f" in {report.chunks} transactions"
    )
    for digest_id, why in report.skipped.items():
        click.echo(f"digest {digest_id} skipped: {why}")


if __name__ == "__main__":
    main()
