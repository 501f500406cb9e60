"""``cosell selftest [--live] [--write]``: prove the app against a real tenant, and learn where the
real services answer in another shape than our emulators (issue 15).

``--live`` runs read-only checks against the configured services: both tokens, ``WhoAmI``, one
page of referrals and one referral, the webhook registration, the schema and mapping checks.
``--write`` adds a round trip: a private (Independent) referral and a test opportunity (with
account, contact and solution row), each synced by the engine, both closed as lost, synced again.
Every record is named ``Co-sell Sync selftest <timestamp>``.

Every request the steps make is recorded (``replay.Recorder``, in memory) and then replayed
against fresh in-process emulators seeded with comparable data; ``shapes.compare_shapes`` lists
each status, header and property that differs. Without ``--live`` the same steps run against
in-process emulators only: an offline self-check of the comparison itself (no difference
expected, nothing leaves the process).

Exit status 1 when a step fails; differences in shape are reported, not failures.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import httpx

from shared import crm_schema as crm
from shared import wiring
from shared.cli._context import Context, EngineUnavailable
from shared.cli._output import Output, confirm
from shared.cli._parser import add_command
from shared.cli.selftest.replay import Exchange, Recorder, Rewriter, replay
from shared.cli.selftest.shapes import (
    Difference,
    compare_shapes,
    grouped,
    request_label,
    shape_of,
    summarize,
)
from shared.cli.selftest.steps import (
    Created,
    Facts,
    Steps,
    WriteOptions,
    read_only,
    selftest_name,
    today_utc,
    write_round_trip,
)
from shared.dataverse import DataverseClient
from shared.partner_center import PartnerCenterClient, StaticTokenProvider, TokenProvider
from shared.settings import Settings

EXIT_USAGE = 2
SAMPLE_SOLUTION_ID = "SOL-12345-ABC"  # the sandbox samples' solution (the emulator takes any)
_MARKS = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}


def add_parser(commands: Any) -> None:
    parser = add_command(
        commands,
        "selftest",
        help="check a real tenant (read-only by default) and report where its answers differ "
        "in shape from the emulators'",
        examples=(
            "cosell selftest                      # offline: the emulators only",
            "cosell selftest --live               # read-only against the configured tenant",
            "cosell selftest --live --write --solution-id SOL-12345-ABC",
            "cosell selftest --live --json > selftest.json",
        ),
        notes="--live: tokens, WhoAmI, one page of referrals, the webhook registration, the "
        "schema and mapping checks; nothing is written. --write (with --live) also creates a "
        "private referral and a test opportunity named 'Co-sell Sync selftest <timestamp>', "
        "syncs them, closes both as lost and syncs again; it asks first unless --yes. Partner "
        "Center cannot delete referrals: they stay, closed as lost. Every request is then "
        "replayed against in-process emulators and each difference in status, headers or "
        "properties is listed. Never run in CI. Exit status 1 when a step fails.",
        handler=run,
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="run against the configured Partner Center and Dataverse",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="also create, sync and close (as lost) a test referral and opportunity",
    )
    parser.add_argument("--yes", action="store_true", help="do not ask before --write")
    parser.add_argument(
        "--solution-id",
        metavar="ID",
        help="the Partner Center solution the test deals name (default: the first row of the "
        "solution catalogue table)",
    )
    parser.add_argument(
        "--currency", default="USD", help="ISO 4217 code of the test deals (default USD)"
    )


async def run(ctx: Context) -> int:
    args, out, settings = ctx.args, ctx.out, ctx.settings
    if args.write and not args.live:
        out.error("--write needs --live (offline, the selftest writes nothing)")
        return EXIT_USAGE
    try:
        from shared.cli.selftest.emulators import (
            DATAVERSE_BASE,
            PARTNER_CENTER_API,
            PARTNER_CENTER_WEBHOOKS,
            Emulators,
        )
    except ImportError as exc:
        out.error(
            f"the selftest compares with the sandbox emulators, which need starlette ({exc}); "
            "install requirements-dev.txt"
        )
        return 1
    name = selftest_name(datetime.now(UTC))
    if args.write and not args.yes and not _confirm(out, settings, name):
        out.error("nothing created: --write not confirmed (pass --yes to skip the question)")
        return 1
    recorder = Recorder()
    steps = Steps(recorder)
    created: Created | None = None
    prefix = settings.crm_column_prefix
    async with AsyncExitStack() as stack:
        tokens: TokenProvider
        if args.live:
            writer = wiring.refresh_token_writer(settings)
            if writer is not None:
                stack.push_async_callback(writer.aclose)
            tokens = wiring.partner_center_tokens(settings, on_refresh_token=writer)
            pc_inner: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport()
            dataverse_inner: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport()
            pc = wiring.partner_center_client(
                settings,
                token_provider=tokens,
                transport=recorder.transport("partner center", pc_inner),
            )
            dataverse = wiring.dataverse_client(
                settings, transport=recorder.transport("dataverse", dataverse_inner)
            )
            prefixes = {
                settings.partner_center_api_url: PARTNER_CENTER_API,
                settings.partner_center_webhook_api_url: PARTNER_CENTER_WEBHOOKS,
                settings.dataverse_url: DATAVERSE_BASE,
            }
        else:
            live = await stack.enter_async_context(Emulators(column_prefix=prefix))
            await live.seed(referral=True, registration=True)
            tokens = StaticTokenProvider(wiring.SANDBOX_TOKEN)
            pc = PartnerCenterClient(
                PARTNER_CENTER_API,
                token_provider=tokens,
                webhook_api_url=PARTNER_CENTER_WEBHOOKS,
                transport=recorder.transport("partner center", live.transport("partner center")),
            )
            dataverse = DataverseClient(
                DATAVERSE_BASE,
                token=wiring.SANDBOX_TOKEN,
                transport=recorder.transport("dataverse", live.transport("dataverse")),
                primary_keys=wiring.crm_primary_keys(settings),
            )
            prefixes = {}
        await stack.enter_async_context(pc)
        await stack.enter_async_context(dataverse)
        if not out.json_mode:
            where = "the configured tenant" if args.live else "the in-process emulators (offline)"
            out.note(f"selftest against {where}...")
        facts = await read_only(steps, settings=settings, tokens=tokens, pc=pc, dataverse=dataverse)
        if args.write:
            created = await _write(ctx, steps, name, pc, dataverse)
    differences, replayed = await _compare(
        recorder.exchanges, facts, Rewriter(prefixes), Emulators(column_prefix=prefix)
    )
    _report(
        out,
        steps,
        differences,
        created=created,
        live=args.live,
        recorded=len(recorder.exchanges),
        replayed=replayed,
    )
    return 1 if steps.failed else 0


async def _write(
    ctx: Context, steps: Steps, name: str, pc: PartnerCenterClient, dataverse: DataverseClient
) -> Created:
    settings = ctx.settings
    solution: dict[str, str] = {}

    async def pick_solution() -> str:
        if ctx.args.solution_id:
            solution["id"] = ctx.args.solution_id
            return f"{solution['id']} (--solution-id)"
        schema = crm.crm_schema(settings.crm_column_prefix)
        # The catalogue names its solutions by the same column as the solution rows (SPEC 4.1).
        column = schema.solution_identifier.logical_name
        row = await dataverse.first(schema.solution_detail.entity_set, select=[column])
        if row and row.get(column):
            solution["id"] = str(row[column])
            return f"{solution['id']} (first row of {schema.solution_detail.entity_set})"
        if settings.sandbox:
            solution["id"] = SAMPLE_SOLUTION_ID
            return f"{SAMPLE_SOLUTION_ID} (the sandbox sample)"
        raise RuntimeError(
            f"the solution catalogue ({schema.solution_detail.entity_set}) is empty: "
            "pass --solution-id with one of your Partner Center solutions"
        )

    if not await steps.run("write: pick a solution", pick_solution):
        return Created()
    try:
        import shared.sync  # noqa: F401 - a build without the engine fails here, clearly
    except ImportError as exc:
        raise EngineUnavailable(f"the sync engine is not available: {exc}") from None
    links, history = ctx.links(), ctx.history()
    for store in (links, history):
        await store.create_table()
    engine = wiring.sync_engine(settings, pc=pc, dataverse=dataverse, links=links, history=history)
    options = WriteOptions(name=name, solution_id=solution["id"], currency=ctx.args.currency)
    return await write_round_trip(
        steps,
        settings=settings,
        options=options,
        pc=pc,
        dataverse=dataverse,
        engine=engine,
        today=today_utc(),
    )


async def _compare(
    recorded: list[Exchange], facts: Facts, rewriter: Rewriter, emulators: Any
) -> tuple[list[Difference], int]:
    """Replay against fresh emulators seeded like the tenant; the differences, and how many
    requests were replayed."""
    async with emulators as expected:
        await expected.seed(referral=facts.referral_id is not None, registration=facts.registration)
        answers = await replay(recorded, clients=expected.clients, rewriter=rewriter)
    return differences_of(recorded, answers), sum(a is not None for a in answers)


def differences_of(recorded: list[Exchange], answers: list[Exchange | None]) -> list[Difference]:
    """Each recorded exchange against the emulator's answer to the same request (pure)."""
    found: list[Difference] = []
    for real, answer in zip(recorded, answers, strict=True):
        label = request_label(real.method, real.path, real.query_names)
        if answer is None:
            found.append(
                Difference(real.step, label, "not replayed", "status", str(real.status), "-")
            )
            continue
        found += compare_shapes(
            real.step,
            label,
            shape_of(real.status, real.headers, real.body),
            shape_of(answer.status, answer.headers, answer.body),
        )
    return found


def _confirm(out: Output, settings: Settings, name: str) -> bool:
    out.note(
        f"cosell selftest --write creates, in Partner Center ({settings.partner_center_api_url}) "
        f"and Dataverse ({settings.dataverse_url}): a private referral and a test opportunity "
        f"with its account, contact and solution row, all named '{name}'; the sync adds the "
        "opportunity of the referral and the referral of the opportunity. Both deals are then "
        "closed as lost. Partner Center cannot delete referrals: they stay, closed."
    )
    return confirm("Continue?")


def _report(
    out: Output,
    steps: Steps,
    differences: list[Difference],
    *,
    created: Created | None,
    live: bool,
    recorded: int,
    replayed: int,
) -> None:
    rows = grouped(differences)
    ok = not steps.failed
    if out.json_mode:
        out.json(
            {
                "ok": ok,
                "mode": "live" if live else "offline",
                "write": created is not None,
                "steps": [r.row() for r in steps.results],
                "created": dict(created.rows()) if created else {},
                "requests": {"recorded": recorded, "replayed": replayed},
                "summary": summarize(differences),
                "differences": rows,
            }
        )
        return
    for result in steps.results:
        out.line(f"[{_MARKS[result.status]}] {result.name}: {result.detail}")
    if created is not None and created.rows():
        out.line()
        out.pairs(created.rows(), title="Created (find them by the name 'Co-sell Sync selftest'):")
    out.line()
    out.table(
        [
            (
                r["request"],
                r["kind"],
                r["item"],
                r["real"],
                r["emulator"],
                r["steps"][0] + (f" (+{len(r['steps']) - 1})" if len(r["steps"]) > 1 else ""),
            )
            for r in rows
        ],
        ("request", "difference", "status/header/property", "real", "emulator", "step"),
        title=f"Shape of the real answers against the emulators' ({replayed} of {recorded} "
        "requests replayed):",
        empty="(no difference)",
    )
    out.line()
    counts = summarize(differences)
    listed = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) or "no difference"
    failed = sum(r.status == "fail" for r in steps.results)
    out.line(
        f"selftest: {len(steps.results) - failed} of {len(steps.results)} steps ran without "
        f"failing; shapes: {listed}"
    )


__all__ = ["add_parser", "differences_of", "run"]
