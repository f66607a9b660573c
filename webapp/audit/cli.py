"""`flask audit verify` and `flask audit head`: check the audit log's hash chain, print its head."""

from __future__ import annotations

import re

import click
from flask.cli import AppGroup

from ..extensions import db
from .chain import current_head, verify

audit_cli = AppGroup("audit", help="Check the audit log's hash chain.")
ANCHOR = re.compile(r"^(\d+):([0-9a-f]{64})$")


def _anchor(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[int, str]]:
    anchors = []
    for value in values:
        match = ANCHOR.match(value.strip().lower())
        if not match:
            raise click.BadParameter(f"{value!r} is not SEQ:HASH (a number, a colon, 64 hex digits)")
        anchors.append((int(match.group(1)), match.group(2)))
    return anchors


@audit_cli.command("verify")
@click.option("--anchor", "anchors", multiple=True, callback=_anchor, metavar="SEQ:HASH",
              help="A head printed earlier by `flask audit head` and kept outside the database.")
def verify_command(anchors: list[tuple[int, str]]) -> None:
    """Check every entry's hash and link and the chain head; exit 1 at the first bad entry."""
    result = verify(db.session, anchors)
    if result.ok:
        click.echo(f"OK: {result.entries} audit entries, chain intact; "
                   f"head {result.head_seq}:{result.head_hash}")
        return
    click.echo(f"FAILED after {result.entries} good entries: {result.problem}", err=True)
    click.echo(f"stored head: {result.head_seq}:{result.head_hash}", err=True)
    raise SystemExit(1)


@audit_cli.command("head")
def head_command() -> None:
    """Print the chain head as SEQ:HASH, to be kept outside the database (an external anchor)."""
    head = current_head(db.session)
    if head is None:
        raise click.ClickException("the audit chain has no head yet (no entries)")
    click.echo(f"{head.seq}:{head.hash}")
