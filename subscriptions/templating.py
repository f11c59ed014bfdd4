"""Where templates are found: a publisher's override folder first, then the built-in ones."""

from __future__ import annotations

from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

from subscriptions.i18n import SOURCE_LANGUAGE, jinja_callables, language_names
from subscriptions.settings import Environment as AppEnvironment
from subscriptions.settings import Settings

#: Installed wheels carry the top-level templates/ folder here (see pyproject's force-include).
PACKAGED = Path(__file__).parent / "_templates"
#: A source checkout (or an editable install) has it beside the package.
SOURCE = Path(__file__).parent.parent / "templates"


def builtin_templates() -> Path:
    """The folder of built-in templates, packaged or from the source tree."""
    for folder in (PACKAGED, SOURCE):
        if (folder / "web").is_dir():
            return folder
    raise FileNotFoundError(f"templates not found in {PACKAGED} or {SOURCE}")


def template_environment(settings: Settings, area: str) -> Environment:
    """A Jinja2 environment for `web` or `email` templates: autoescaped, strict about undefined names."""
    folders = []
    if settings.templates_dir is not None:
        folders.append(settings.templates_dir / area)
    folders.append(builtin_templates() / area)
    env = Environment(
        loader=ChoiceLoader([FileSystemLoader(str(f)) for f in folders]),
        autoescape=select_autoescape(["html", "htm", "xml"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.i18n"],
        # Outside development a template is read once: checking every file's mtime on every render
        # cost a sign-up about 2 % of its CPU (bench/subscribe.py). Restart after editing templates.
        auto_reload=settings.environment is AppEnvironment.DEVELOPMENT,
    )
    # The source language is the default; a render in another language passes its own callables
    # (`subscriptions.i18n.jinja_callables`), which take precedence over globals. {% trans %}
    # blocks keep their line breaks (not `trimmed`), so an English email is byte for byte as before.
    env.newstyle_gettext = True  # type: ignore[attr-defined]
    env.globals.update(jinja_callables(SOURCE_LANGUAGE))
    env.globals.update(
        languages=language_names(settings.language_list),
        site_name=settings.site_name,
        brand_color=settings.brand_color,
        base_url=settings.base_url,
    )
    return env
