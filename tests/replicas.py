"""Several hub processes on one database and one blob store, behind a real load balancer.

:class:`ReplicaSet` starts N ``tether hub`` processes (:class:`~tests.hubproc.HubProcess`)
on one PostgreSQL database and one blob store (a shared directory, or an S3 bucket
prefix), all at once as an operator's orchestrator would, and a Debian ``nginx`` in
front of them with its own configuration on loopback: the one docs/hub.md gives for a
production layout (round-robin over the replicas, no affinity of any kind, request
bodies and answers streamed), with loopback addresses. It offers the same
helpers as one :class:`HubProcess` (``url``, ``admin_token``, ``client()``,
``make_user()`` ...), so a test written for one hub runs through the balancer as well.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.hubproc import HubHelpers, HubProcess, free_port, wait_healthy

NGINX = "/usr/sbin/nginx"

DOCS = Path(__file__).resolve().parents[1] / "docs" / "hub.md"

# nginx's frame around docs/hub.md's balancer block: its own files, on loopback, no service
_NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{site}
}}
"""


def documented_site(ports: list[int], listen: int) -> str:
    """docs/hub.md's nginx block for a production layout, as the tests run it: the
    replicas' loopback addresses for the two documented ones (and as many more as
    there are), plain HTTP on loopback for the TLS listener, and the public name as
    the Host the hubs see."""
    text = DOCS.read_text()
    block = re.search(r"<!-- balancer-config -->\n```nginx\n(.*?)```", text, re.S)
    assert block, "docs/hub.md lost its balancer-config block"
    lines = []
    for line in block.group(1).splitlines():
        if "server 10.0.0.11:8580" in line:
            lines += [line.replace("10.0.0.11:8580", f"127.0.0.1:{p}") for p in ports]
        elif "server 10.0.0.12:8580" in line or line.strip().startswith("ssl_"):
            continue
        elif line.strip() == "listen 443 ssl;":
            lines.append(line.replace("443 ssl", f"127.0.0.1:{listen}"))
        elif line.strip() == "proxy_set_header Host $http_host;":
            # the hubs' public name, whatever Host a test's raw client or relay sends
            lines.append(line.replace("$http_host", f"127.0.0.1:{listen}"))
        else:
            lines.append(line)
    return "\n".join(lines)


class Balancer:
    """nginx round-robin over ``ports`` on a free loopback port; only its own process is stopped."""

    def __init__(self, workdir: Path, ports: list[int], port: int | None = None):
        self.dir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        # nginx started by root runs its worker as another user unless told otherwise;
        # the worker then could not reach the test's private temp directory
        user = "user root;" if os.geteuid() == 0 else ""
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(_NGINX_CONF.format(dir=self.dir, user=user, site=documented_site(ports, self.port)))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> "Balancer":
        if not Path(NGINX).exists():
            raise RuntimeError("nginx is missing: run `make test` (scripts/install-system-deps installs it)")
        self.proc = subprocess.Popen([NGINX, "-c", str(self.conf), "-p", str(self.dir), "-e", str(self.dir / "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        if wait_healthy(self.proc, self.url, timeout, log=lambda: (self.dir / "error.log").read_text(errors="replace")):
            return self
        self.stop()
        raise RuntimeError("nginx did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class ReplicaSet(HubHelpers):
    """``n`` hubs on ``database_url`` sharing one blob store, started together, behind a
    :class:`Balancer`. ``url`` is the balancer's; ``replicas`` the hubs themselves."""

    def __init__(self, workdir: Path, database_url: str, *, n: int = 2, env: dict[str, str] | None = None,
                 args: Callable[[int], list[str]] | None = None, listeners: tuple[str, ...] = ()):
        self.workdir = workdir
        self.database_url = database_url
        self.port = free_port()  # the balancer's: the URL clients use, and the hubs' public URL
        env = {"TETHER_PUBLIC_URL": f"http://127.0.0.1:{self.port}", **(env or {})}
        # the filesystem store is a directory every replica reaches (NFS, a shared volume)
        env.setdefault("TETHER_BLOB_STORE", str(workdir / "shared-blobs"))
        self.replicas = []
        for i in range(n):
            (workdir / f"r{i}").mkdir(parents=True, exist_ok=True)
            self.replicas.append(HubProcess(workdir / f"r{i}" / "data", database_url=database_url, env=env,
                                            args=args(i) if args else None, listeners=listeners))
        self.balancer: Balancer | None = None
        self.verify = True
        self.url = ""

    def start(self) -> "ReplicaSet":
        try:
            with ThreadPoolExecutor(len(self.replicas)) as pool:  # together, as an orchestrator would
                list(pool.map(lambda r: r.start(timeout=120), self.replicas))
            self.balancer = Balancer(self.workdir / "nginx", [r.port for r in self.replicas], self.port).start()
        except BaseException:
            self.stop()
            raise
        self.url = self.balancer.url
        for r in self.replicas:
            r.token_dir = self.data_dir
        return self

    @property
    def data_dir(self) -> Path:
        """The data directory of the replica that created ``admin`` (the others made no token)."""
        made = [r.data_dir for r in self.replicas if (r.data_dir / "admin.token").exists()]
        return made[0] if made else self.replicas[0].data_dir

    @property
    def blob_dir(self) -> Path:
        return self.replicas[0].blob_dir

    def log_text(self) -> str:
        return "\n".join(r.log_text() for r in self.replicas)

    def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
        for r in self.replicas:
            r.stop()

