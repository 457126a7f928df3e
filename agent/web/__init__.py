"""The agent's web pages for requesters, reviewers, officers and administrators (see ``agent.web.app``)."""

from agent.web.app import build_web_app, setup_web

__all__ = ["setup_web", "build_web_app"]
