"""``tether gc``: garbage-collect the hub's blob store."""

from __future__ import annotations

import click

from tether.console import emit_json, emit_object, json_option
from tether.hubclient.hub import Conn
from tether.hubclient.options import client_options


@click.command()
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@client_options()
@json_option
def gc(conn: Conn, dry_run: bool, as_json: bool) -> None:
    """Apply retention rules, then delete blobs no build references (hub admins).

    A blob is kept while a build references it, while a "you already have it"
    answer or an upload holds a lease on it, and for the hub's gc_grace after
    it arrived; the `latest` build of a type is always kept.

    \b
    Examples:
      tether gc --dry-run
      tether gc --json | jq .bytes_freed
    """
    result = conn.client.post("/api/v1/gc", json={"dry_run": dry_run}) or {}
    if as_json:
        emit_json(result)
        return
    builds = result.get("builds_removed", [])
    shown = {**result, "builds_removed": len(builds)}
    emit_object(shown, ["builds_removed", "blobs_removed", "bytes_freed", "dry_run"])
    for name in builds:  # which builds retention takes (or would take): SPACE/PATH
        click.echo(f"  {'would remove' if result.get('dry_run') else 'removed'} {name}")
