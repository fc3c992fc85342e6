"""`chronicle top`: a live terminal view of a running Chronicle, for watching a rebuild or an
incident: commands/s (from the API's /metrics), events/s and the relay's lag (from the log), each
projection's and the saga's state, checkpoint and lag, and the events parked on each."""

from __future__ import annotations

import argparse
import asyncio
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from api.cli.common import Add, settings_from, with_servers


def register(sub: Any, add: Add) -> None:
    top = add(sub, "top", help="a live view of throughput, lag and every projection's state")
    top.add_argument("--api", metavar="URL", help="the API whose /metrics to read (default http://127.0.0.1:PORT)")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true", help="print one frame (measured over one interval) and exit")
    top.add_argument("--svg", metavar="FILE", help="with --once: also save the frame as an SVG image")
    top.set_defaults(run=cmd_top)


@dataclass
class Frame:
    commands_per_s: float | None
    events_per_s: float
    head: int
    relay_lag_events: int
    relay_lag_seconds: float
    projections: list[Any]
    parked: dict[str, int] = field(default_factory=dict)


@dataclass
class Sampler:
    """Rates are differences between two samples: the log's head (events counted between the two
    heads) and the API's `chronicle_commands_total`."""

    settings: Any
    api: str
    last_head: int | None = None
    last_commands: float | None = None
    last_at: float = 0.0

    async def sample(self) -> Frame:
        import psycopg

        from api.cli.projections import known_projections
        from infra.eventstore.recorder import head_position, lags
        from infra.views.operations import statuses

        url = self.settings.require_database_url()
        now = time.monotonic()
        elapsed = max(now - self.last_at, 1e-6)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            head = await head_position(conn)
            events = 0
            if self.last_head is not None and head > self.last_head:
                row = await (
                    await conn.execute(
                        "SELECT count(*) FROM events WHERE notification_id > %s AND notification_id <= %s",
                        (self.last_head, head),
                    )
                ).fetchone()
                events = int(row[0]) if row else 0
            relay = await (await conn.execute("SELECT position FROM relay_state")).fetchone()
            relay_at = int(relay[0]) if relay else 0
            relay_lag = (await lags(conn, [relay_at], 1_000_000))[relay_at]
            parked_rows = await (
                await conn.execute("SELECT projection, count(*) FROM dead_letters WHERE resolved IS NULL GROUP BY 1")
            ).fetchall()
        rows = await statuses(self.settings, known_projections())
        commands = _commands_total(self.api)
        frame = Frame(
            commands_per_s=None
            if commands is None or self.last_commands is None
            else max(0.0, commands - self.last_commands) / elapsed,
            events_per_s=events / elapsed if self.last_head is not None else 0.0,
            head=head,
            relay_lag_events=relay_lag.events,
            relay_lag_seconds=relay_lag.seconds,
            projections=rows,
            parked={str(name): int(n) for name, n in parked_rows},
        )
        self.last_head, self.last_commands, self.last_at = head, commands, now
        return frame


def _commands_total(api: str) -> float | None:
    """The sum of `chronicle_commands_total` on the API's /metrics; None if it does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"{api}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        if family.name == "chronicle_commands"
        for s in family.samples
        if s.name == "chronicle_commands_total"
    )


STATE_STYLE = {"running": "green", "parked": "bold red", "rebuilding": "yellow", "stopped": "dim"}


def render(frame: Frame) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    rate = "–" if frame.commands_per_s is None else f"{frame.commands_per_s:,.0f}"
    head = Text.assemble(
        ("commands/s ", "bold"),
        (f"{rate:>8}", "cyan"),
        ("   events/s ", "bold"),
        (f"{frame.events_per_s:>8,.0f}", "cyan"),
        ("   relay lag ", "bold"),
        (f"{frame.relay_lag_events:,} events, {frame.relay_lag_seconds:.1f}s", _lag_style(frame.relay_lag_seconds)),
    )
    table = Table(expand=True, header_style="bold")
    for column, justify in (
        ("projection", "left"),
        ("kind", "left"),
        ("state", "left"),
        ("lag (events)", "right"),
        ("lag (s)", "right"),
        ("parked", "right"),
        ("owner", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for p in frame.projections:
        table.add_row(
            p.name,
            "saga" if p.kind == "process" else p.kind,
            Text(p.state, STATE_STYLE.get(p.state, "")),
            f"{p.lag_events:,}",
            Text(f"{p.lag_seconds:.1f}", _lag_style(p.lag_seconds)),
            Text(str(frame.parked.get(p.name, 0)), "bold red" if frame.parked.get(p.name) else "dim"),
            p.owner or "–",
        )
    return Panel(Group(head, table), title="chronicle top", subtitle=f"log head {frame.head}")


def _lag_style(seconds: float) -> str:
    return "green" if seconds < 1 else "yellow" if seconds < 10 else "bold red"


def cmd_top(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.live import Live

    settings = with_servers(settings_from(args))
    sampler = Sampler(settings, (args.api or f"http://127.0.0.1:{settings.port}").rstrip("/"))

    async def run() -> None:
        await sampler.sample()
        if args.once:
            await asyncio.sleep(args.interval)
            console = Console(record=bool(args.svg), width=110)
            console.print(render(await sampler.sample()))
            if args.svg:
                console.save_svg(args.svg, title="chronicle top")
            return
        with Live(render(await sampler.sample()), refresh_per_second=4, screen=False) as live:
            while True:
                await asyncio.sleep(args.interval)
                live.update(render(await sampler.sample()))

    asyncio.run(run())
