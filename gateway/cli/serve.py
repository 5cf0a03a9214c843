"""`clearout-gateway serve`: run the gateway until SIGTERM, draining first.

A misconfiguration ends it with one line on stderr and exit code 2.  On
SIGTERM/SIGINT readiness turns false at once, the listener stays open for
GATEWAY_DRAIN_DELAY_SECONDS so load balancers stop routing here, then
in-flight requests get GATEWAY_SHUTDOWN_GRACE_SECONDS to finish.  SIGHUP
reloads the teams file without a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys

import structlog
from aiohttp import web

from gateway import logging as gateway_logging
from gateway.cli.settings_help import HelpSettings
from gateway.http.app import create_app, load_teams
from gateway.http.handlers import ops
from gateway.http.keys import LIFECYCLE, METRICS, TEAMS
from gateway.http.protocol import make_runner
from gateway.http.teams_reload import reload_teams
from gateway.settings import ConfigError, Settings
from gateway.teams import SANDBOX_DEMO_KEY, TeamDirectory, TeamsFileError

EXIT_CONFIG = 2
log = structlog.get_logger("gateway")


EPILOG = """\
Every setting comes from the environment (GATEWAY_*, CLEAROUT_API_TOKEN[_FILE]);
`clearout-gateway serve --help-settings` lists each one with its default and
meaning.  Examples:
  GATEWAY_SANDBOX=1 clearout-gateway serve --host 127.0.0.1   # no Clearout token needed
  CLEAROUT_API_TOKEN_FILE=/run/secrets/clearout GATEWAY_TEAMS_FILE=teams.yaml \\
      GATEWAY_REDIS_URL=redis://redis:6379/0 clearout-gateway serve
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve", help="run the gateway (settings from environment)",
        description="Run the gateway until SIGTERM, draining first; SIGHUP reloads the teams file.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    serve.add_argument("--host", help="listen address (GATEWAY_HOST)")
    serve.add_argument("--port", type=int, help="listen port (GATEWAY_PORT)")
    serve.add_argument(
        "--help-settings", action=HelpSettings,
        help="list every setting (environment variable, default, meaning) and exit",
    )  # fmt: skip
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        settings = dataclasses.replace(settings, **overrides)
        teams = load_teams(settings)
    except (ConfigError, TeamsFileError) as exc:
        print(f"clearout-gateway: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    gateway_logging.configure(settings.log_format, settings.secrets)
    if settings.sandbox and settings.teams_file is None:
        print(f"clearout-gateway: sandbox demo team key: {SANDBOX_DEMO_KEY}", flush=True)
    try:
        asyncio.run(_run(settings, teams))
    except OSError as exc:
        print(f"clearout-gateway: cannot listen: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


async def _run(settings: Settings, teams: TeamDirectory) -> None:
    app = create_app(settings, teams=teams)
    runners, sites = await _listeners(app, settings)
    # Signal handlers go in before the port opens: a SIGHUP (or SIGTERM) sent
    # as soon as the port answers must reach them, not the default action
    # (which for SIGHUP ends the process).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload_teams, app)
    try:
        for site in sites:
            await site.start()
    except OSError:
        for each in runners:
            await each.cleanup()
        raise
    log.info(
        "listening",
        addresses=[f"{a[0]}:{a[1]}" for a in runners[0].addresses],
        sandbox=settings.sandbox,
        teams=len(app[TEAMS].registry.teams),
    )
    await stop.wait()
    await _drain(app, settings, runners)


async def _listeners(
    app: web.Application, settings: Settings
) -> tuple[list[web.AppRunner], list[web.TCPSite]]:
    runner = make_runner(app, settings, shutdown_timeout=settings.shutdown_grace)
    await runner.setup()
    runners: list[web.AppRunner] = [runner]
    sites = [web.TCPSite(runner, settings.host, settings.port, reuse_address=True)]
    if settings.metrics_port is not None:
        metrics_runner = await _metrics_runner(app)
        runners.append(metrics_runner)
        sites.append(
            web.TCPSite(metrics_runner, settings.host, settings.metrics_port, reuse_address=True)
        )
    return runners, sites


async def _drain(app: web.Application, settings: Settings, runners: list[web.AppRunner]) -> None:
    app[LIFECYCLE].draining = True
    app[METRICS].ready.set(0)
    log.info("draining", delay_s=settings.drain_delay, grace_s=settings.shutdown_grace)
    await asyncio.sleep(settings.drain_delay)
    for each in runners:
        await each.cleanup()
    log.info("stopped")


async def _metrics_runner(app: web.Application) -> web.AppRunner:
    """A second, metrics-only listener (GATEWAY_METRICS_PORT) sharing the app's registry."""
    metrics_app = web.Application()
    metrics_app[METRICS] = app[METRICS]
    metrics_app.router.add_get("/metrics", ops.metrics_text)
    metrics_runner = web.AppRunner(metrics_app, access_log=None)
    await metrics_runner.setup()
    return metrics_runner


def _reload_teams(app: web.Application) -> None:
    reload_teams(app, "SIGHUP")
