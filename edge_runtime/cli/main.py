"""The ``edge-runtime`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Coroutine, Sequence
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from edge_runtime import __version__
from edge_runtime.config.loader import (
    LoadedConfig,
    load_config,
    load_model,
    parse_config,
    resolve_broker,
)
from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.ops.logs import setup_logging
from edge_runtime.ops.stats import RuntimeStats
from edge_runtime.pipelines.registry import default_registry

__all__ = ["main"]

log = logging.getLogger("edge_runtime.cli")


def _load(path: str | None) -> LoadedConfig:
    if path is None:
        text = resources.files("edge_runtime").joinpath("examples/default-site.toml").read_text()
        return parse_config(
            text, source="<embedded default: edge_runtime/examples/default-site.toml>"
        )
    return load_config(path)


def _run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop  # noqa: PLC0415 (optional speed-up; not on every platform)
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def cmd_check(args: argparse.Namespace) -> int:
    loaded = _load(args.config)
    print(orjson.dumps(loaded.plan(), option=orjson.OPT_INDENT_2).decode())
    print(f"OK: {loaded.source} is valid ({len(loaded.pipelines)} pipeline(s))", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    loaded = _load(args.config)
    setup_logging(args.log_format or loaded.site.ops.log_format, loaded.site.ops.log_level)
    return int(_run_async(_run(loaded, args)))


async def _run(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from edge_runtime.runtime.site import SiteRuntime  # noqa: PLC0415

    runtime = SiteRuntime(loaded)
    loop = asyncio.get_running_loop()
    limit = loaded.site.ops.shutdown_timeout_s
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:  # a second signal: the operator does not want to wait
            _exit_now(loop, "a second stop signal", 130)
        runtime.stop()
        # a thread, not the event loop: it must fire even if something blocks the loop
        watchdog = threading.Timer(
            limit, _exit_now, (loop, f"the shutdown still running after {limit:g} s", 3)
        )
        watchdog.daemon = True
        watchdog.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal)
    with contextlib.suppress(NotImplementedError, AttributeError):  # no SIGHUP on Windows
        loop.add_signal_handler(signal.SIGHUP, runtime.reload)
    async with asyncio.TaskGroup() as tg:
        site = tg.create_task(runtime.run(), name="site-runtime")
        helpers = tg.create_task(_helpers(runtime, loaded, args), name="feed-and-tap")
        await site
        helpers.cancel()
    print(f"edge-runtime: {shutdown_line(runtime.stats)}", file=sys.stderr)
    return 0


def _exit_now(loop: asyncio.AbstractEventLoop, why: str, code: int) -> None:
    """End the process at once, after logging what was still running (for the bug report).
    Every summary the site accepted is already durable in its spool."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    log.error(
        "exiting at once on %s; tasks still running: %s",
        why,
        ", ".join(sorted(t.get_name() for t in pending)) or "none",
    )
    for task in pending:
        for line in task.get_stack(limit=3):
            log.error("  %s at %s:%d", task.get_name(), line.f_code.co_filename, line.f_lineno)
    logging.shutdown()
    os._exit(code)


def shutdown_line(stats: RuntimeStats) -> str:
    """What a site did, in one line: messages and readings, camera frames (when a pipeline
    takes frames), summaries and decode errors."""
    parts = [f"{stats.messages_in} messages in", f"{sum(stats.readings_in.values())} readings"]
    frames: Counter[str] = Counter()
    for events in stats.pipeline_events.values():
        frames.update({k: v for k, v in events.items() if k.startswith("frames_")})
    if frames["frames_in"]:
        parts.append(
            f"{frames['frames_in']} camera frames ({frames['frames_inferred']} analysed, "
            f"{frames['frames_skipped']} skipped as latest-frame-wins)"
        )
    parts.append(f"{sum(stats.summaries_out.values())} summaries out")
    parts.append(f"{sum(stats.decode_errors.values())} decode errors")
    return ", ".join(parts)


async def _helpers(runtime: Any, loaded: LoadedConfig, args: argparse.Namespace) -> None:
    """The main job's extras: a real feed into the site broker and a tap on the core broker."""
    from edge_runtime.cli.feed import SummaryTap, feed_akl  # noqa: PLC0415

    feed = args.feed == "akl" or (args.config is None and args.feed != "none")
    # the tap is for people watching: on with --tap, or for the embedded default (a demo)
    tap = args.tap if args.tap is not None else (args.config is None and not args.quiet)
    await runtime.wait_started()
    site = runtime.site_link
    await site.wait_connected()
    async with asyncio.TaskGroup() as tg:
        if tap:
            uplink = loaded.site.uplink
            topic = uplink.topic.replace("{site_id}", loaded.site.site_id)
            link = runtime.uplink_link  # its config has the port an embedded broker picked
            broker = link.config if link is not None else uplink.broker
            tg.create_task(SummaryTap(broker, loaded.site.site_id, topic).run(), name="summary-tap")
        if feed:
            await feed_akl(
                site.config.host,
                site.config.port,
                date.fromisoformat(args.feed_from),
                date.fromisoformat(args.feed_to),
                args.feed_rate,
            )
        if args.duration is not None:
            await asyncio.sleep(args.duration)
            runtime.stop()
        elif feed and args.config is None:
            await asyncio.sleep(3.0)  # let the idle windows close and reach the core
            runtime.stop()


def cmd_status(args: argparse.Namespace) -> int:
    url = args.url
    if url is None:
        loaded = _load(args.config)
        port = loaded.site.ops.http_port
        if not port or not loaded.site.ops.http_enabled:
            raise EdgeRuntimeError("the config has no fixed ops.http_port; pass --url")
        url = f"http://{loaded.site.ops.http_host}:{port}"
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=5) as resp:  # noqa: S310
            doc = orjson.loads(resp.read())
    except urllib.error.URLError as exc:
        raise EdgeRuntimeError(f"no running site answers at {url}: {exc.reason}") from exc
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_core(args: argparse.Namespace) -> int:
    from edge_runtime.core import CoreConfig, CoreReceiver  # noqa: PLC0415
    from edge_runtime.core.config import NatsForwardConfig  # noqa: PLC0415
    from edge_runtime.core.receiver import CRASH_AFTER_ENV  # noqa: PLC0415

    config = load_model(CoreConfig, args.config) if args.config else CoreConfig()
    updates: dict[str, Any] = {}
    broker: dict[str, Any] = {}
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        broker.update(host=host or "127.0.0.1", port=int(port))
    if args.client_id:
        broker["client_id"] = args.client_id
    if broker:
        updates["broker"] = config.broker.model_copy(update=broker)
    if args.db:
        updates["database"] = Path(args.db)
    if args.registry:
        updates["registry"] = Path(args.registry)
    if args.nats:
        base = config.nats or NatsForwardConfig()
        updates["nats"] = base.model_copy(update={"url": args.nats})
    given = {n: getattr(args, n) for n in ("store", "share_group", "http_port")}
    given = {n: v for n, v in given.items() if v is not None}
    try:
        CoreConfig.model_validate(given)  # model_copy below does not check them
    except ValidationError as exc:
        raise ConfigError(str(exc), source="the command line") from exc
    config = config.model_copy(update={**updates, **given})
    # the core broker's password_file / password_env, as the site's are resolved
    resolve_broker(config.broker, "broker", args.config or "the command line")
    setup_logging(args.log_format, "INFO")
    crash_after = os.environ.get(CRASH_AFTER_ENV)

    async def serve() -> None:
        receiver = CoreReceiver(config, crash_after=int(crash_after) if crash_after else None)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, receiver.stop)
        await receiver.run()
        print(orjson.dumps(receiver.status(), option=orjson.OPT_INDENT_2).decode())

    _run_async(serve())
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from edge_runtime.identity import provision  # noqa: PLC0415

    client_ca = None
    if args.client_ca_cert or args.client_ca_key:
        if not (args.client_ca_cert and args.client_ca_key):
            raise ConfigError("give both --client-ca-cert and --client-ca-key")
        client_ca = (Path(args.client_ca_cert), Path(args.client_ca_key))
    done = provision(
        args.site_id,
        Path(args.registry),
        Path(args.out),
        ca_file=Path(args.ca) if args.ca else None,
        client_ca=client_ca,
        replace=args.replace,
    )
    print(f"site {done.site_id} registered (key id {done.key_id})")
    print(f"  identity directory (mount as a secret): {done.out}")
    print(f"  core broker: user {done.broker_username!r}, password in {done.out}/broker-password")
    print(f"  core broker password file: {done.password_file}; ACL file: {done.acl_file}")
    if done.client_certificate is not None:
        print(f"  client certificate (CN {done.site_id}): {done.client_certificate}")
    print("site config:")
    print(f'  [identity]\n  dir = "{done.out}"')
    print(f'  [uplink.broker]\n  username = "{done.broker_username}"')
    print(f'  password_file = "{done.out}/broker-password"')
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edge_runtime.demo import DemoOptions, run_demo  # noqa: PLC0415

    setup_logging("text", "WARNING")
    options = DemoOptions(
        short=args.short,
        dashboard=not args.no_dashboard,
        outage_s=args.outage,
        workdir=Path(args.workdir) if args.workdir else None,
        camera=not args.no_camera,
    )
    report = _run_async(run_demo(options))
    return 0 if report.lost == 0 and not report.missing_seqs else 1


def cmd_reference(args: argparse.Namespace) -> int:
    from edge_runtime.cli.reference import config_reference  # noqa: PLC0415

    text = config_reference(default_registry())
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _add_provision(sub: Any) -> None:
    p = sub.add_parser(
        "provision", help="give a site its keys and broker credentials, register it at the core"
    )
    p.add_argument("site_id", help="the site's id (its site_id and core-broker user name)")
    p.add_argument("--registry", required=True, help="the core's site registry directory")
    p.add_argument("--out", required=True, help="empty directory for the site's identity")
    p.add_argument("--ca", help="the brokers' CA certificate, copied for the site")
    p.add_argument("--client-ca-cert", help="CA certificate to issue an mTLS client certificate")
    p.add_argument("--client-ca-key", help="that CA's private key")
    p.add_argument("--replace", action="store_true", help="new keys for a registered site")
    p.set_defaults(func=cmd_provision)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-runtime", description="Edge stream-processing runtime for smart-city sites."
    )
    parser.add_argument("--version", action="version", version=f"edge-runtime {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a site (no -c: the embedded default with a real feed)")
    p.add_argument("-c", "--config", help="site config (TOML); default: the embedded default")
    p.add_argument("--feed", choices=["akl", "none"], help="publish real Auckland readings")
    p.add_argument("--feed-from", default="2019-01-01", help="first day of the feed")
    p.add_argument("--feed-to", default="2019-01-14", help="last day of the feed")
    p.add_argument("--feed-rate", type=float, default=2000.0, help="readings/s of the feed")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument(
        "--tap",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print each summary as it reaches the core broker (a second client there, with "
        "the uplink's TLS and credentials); default: on only for the embedded default config",
    )
    p.add_argument("--quiet", action="store_true", help="no tap, even for the embedded default")
    p.add_argument("--log-format", choices=["json", "text"], help="override ops.log_format")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate a config and print the resolved plan")
    p.add_argument("-c", "--config", help="site config (TOML); default: the embedded default")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("status", help="show a running site's status")
    p.add_argument("-c", "--config", help="the site's config (to find its ops port)")
    p.add_argument("--url", help="base URL of the site's ops endpoint")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "demo",
        help="the whole story on this machine: real feeds, a site, an uplink outage, a report",
    )
    p.add_argument("--short", action="store_true", help="a run of about a minute (CI)")
    p.add_argument("--no-dashboard", action="store_true", help="status lines instead of a panel")
    p.add_argument("--outage", type=float, help="seconds the uplink is cut (default 10; short 4)")
    p.add_argument("--no-camera", action="store_true", help="sensor pipeline only")
    p.add_argument("--workdir", help="keep recordings, spool and core database here")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("core", help="run the core receiver (dedupe, store, forward to NATS)")
    p.add_argument("-c", "--config", help="core config (TOML, see docs/config-reference.md)")
    p.add_argument("--broker", help="core broker as HOST:PORT (overrides the config)")
    p.add_argument("--db", help="SQLite database path (overrides the config)")
    p.add_argument("--registry", help="site registry: verify signed uplink, sign acks")
    p.add_argument("--nats", help="NATS JetStream URL (the store of record with --store nats)")
    p.add_argument(
        "--store",
        choices=["sqlite", "nats"],
        help="the store of record whose durable write the acknowledgement to the site follows",
    )
    p.add_argument(
        "--share-group",
        help="share the sites' traffic with other receivers ($share/<group>/...); give each "
        "its own --client-id",
    )
    p.add_argument("--client-id", help="MQTT client id (the persistent session is keyed by it)")
    p.add_argument("--http-port", type=int, help="port of /status and /metrics (0 = free)")
    p.add_argument("--log-format", choices=["json", "text"], default="json")
    p.set_defaults(func=cmd_core)

    from edge_runtime.replay.cli import add_commands  # noqa: PLC0415 (keeps --help cheap)

    add_commands(sub)

    _add_provision(sub)

    from edge_runtime.cli.fleet import add_fleet_parser  # noqa: PLC0415 (as above)

    add_fleet_parser(sub)

    from edge_runtime.sizing.command import add_size_parser  # noqa: PLC0415 (as above)

    add_size_parser(sub)

    p = sub.add_parser("config-reference", help="print the config reference (markdown)")
    p.add_argument("-o", "--output", help="write to this file")
    p.set_defaults(func=cmd_reference)
    return parser


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except EdgeRuntimeError as exc:
        print(f"edge-runtime: error: {exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        # what a task group raised: a site that could not start (its spool refused, a TLS
        # file unreadable) is an error of ours, said in one line; anything else is a bug
        errors = _leaves(group)
        if not all(isinstance(error, EdgeRuntimeError) for error in errors):
            raise
        for error in errors:
            print(f"edge-runtime: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
