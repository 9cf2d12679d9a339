"""The web view served by `flowmetal serve` at `/`: server-rendered pages (Jinja2
templates and static files in this package, no build step) over the same library
functions as the API, behind a login with an API token. See doc/web.md."""

from flowmetal.server.web.pages import routes

__all__ = ["routes"]
