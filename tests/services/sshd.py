"""A throw-away OpenSSH server for tests and benchmarks.

Uses Debian's ``openssh-server`` (``/usr/sbin/sshd``). Everything it needs
lives under ``base_dir``: its own ``sshd_config``, a host key generated with
``ssh-keygen``, one ``authorized_keys/<user>`` file per user, the pid file, a
``known_hosts`` file for clients and the server's log. It listens on a free
port on 127.0.0.1 only, allows public-key logins only (``UsePAM no``,
``PasswordAuthentication no``) and permits UNIX-socket forwarding (for log
sync and forward tests).

sshd reads a user's ``authorized_keys`` as that user, so ``base_dir`` and its
parents get the "others may traverse" bit (``o+x``) where it is missing, and
the ``authorized_keys`` directory and files are world-readable (public keys
only). ``StrictModes no`` lets sshd accept them under a root-owned temp dir.

The server runs in the foreground (``sshd -D -e``); ``stop()`` signals only the
pid this object started. Starting sshd needs root (it must switch to the
logging-in user), so does :func:`ensure_user`.

Usage::

    with SshServer(tmp_path / "sshd") as sshd:
        user = ensure_user("tetherbench")
        key = make_key(tmp_path / "id_ed25519")
        sshd.authorize(user, key.with_suffix(".pub").read_text())
        subprocess.run([*sshd.ssh_argv(user, key), "true"], check=True)
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Self

from tests.hubproc import free_port, port_taken

SSHD = "/usr/sbin/sshd"
HOST = "127.0.0.1"


class SshdError(RuntimeError):
    """The test sshd could not be set up, started or used."""


def port_accepts(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def sshd_available() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh") is not None and shutil.which("ssh-keygen") is not None


def make_key(path: pathlib.Path | str, comment: str = "tether-test") -> pathlib.Path:
    """A fresh passphrase-less ed25519 key at ``path`` (and ``path.pub``); returns ``path``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    return path


def ensure_user(name: str) -> str:
    """Create local user ``name`` (``useradd -m``, shell /bin/sh) if missing; return ``name``.

    A new account gets the password field ``*`` (``usermod -p '*'``): no password
    works, but the account is not locked, so sshd (without PAM) lets its keys in.
    An existing account is left as it is.
    """
    try:
        pwd.getpwnam(name)
        return name
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise SshdError(f"user {name!r} does not exist and only root can create it")
    made = subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=False, capture_output=True, text=True, timeout=30)
    if made.returncode != 0:
        try:
            pwd.getpwnam(name)  # another test process created it meanwhile
            return name
        except KeyError:
            raise SshdError(f"useradd {name} failed: {made.stderr.strip()}") from None
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True, timeout=30)
    return name


@contextlib.contextmanager
def temporary_user(name: str) -> Iterator[str]:
    """:func:`ensure_user` for the length of a ``with``: an account this call created is
    removed again on exit (``userdel -r``: the account, its group and its home), so a
    test run leaves no account behind that could log in. An account that existed
    before is left as it was."""
    try:
        pwd.getpwnam(name)
        existed = True
    except KeyError:
        existed = False
    yield ensure_user(name)
    if not existed:
        remove_user(name)


def remove_user(name: str) -> None:
    """Remove local account ``name`` with its home (its processes must have ended)."""
    for _ in range(50):  # a process of the account may still be exiting (sshd's session)
        done = subprocess.run(["userdel", "-r", name], check=False, capture_output=True, text=True, timeout=30)
        if done.returncode in (0, 6, 12):  # removed; no such user; removed, but the home was gone
            return
        time.sleep(0.1)
    raise SshdError(f"userdel -r {name} failed: {done.stderr.strip()}")


def _make_traversable(path: pathlib.Path) -> None:
    """Add o+x to ``path`` and its parents where missing (no read or write bits)."""
    for p in [path, *path.parents]:
        st = p.stat()
        if not st.st_mode & stat.S_IXOTH:
            os.chmod(p, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


class SshServer:
    """One sshd under ``base_dir`` on a free 127.0.0.1 port; public-key logins only."""

    def __init__(self, base_dir: pathlib.Path | str) -> None:
        self.base_dir = pathlib.Path(base_dir).resolve()
        self.config_path = self.base_dir / "sshd_config"
        self.host_key = self.base_dir / "ssh_host_ed25519_key"
        self.keys_dir = self.base_dir / "authorized_keys"
        self.pid_file = self.base_dir / "sshd.pid"
        self.known_hosts = self.base_dir / "known_hosts"
        self.log_path = self.base_dir / "sshd.log"
        self._port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None

    # -- public API ---------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise SshdError("sshd has not been started")
        return self._port

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def host_key_pub(self) -> str:
        """The server's public host key line (``ssh-ed25519 AAAA... comment``)."""
        return self.host_key.with_suffix(".pub").read_text().strip()

    def known_hosts_line(self) -> str:
        """A ``known_hosts`` line for this server: ``[127.0.0.1]:PORT ssh-ed25519 AAAA...``."""
        kind, blob = self.host_key_pub.split()[:2]
        return f"[{HOST}]:{self.port} {kind} {blob}"

    def authorize(self, user: str, pubkey_line: str) -> None:
        """Append a public key line (options allowed, e.g. ``command="..."``) to ``user``'s keys."""
        line = pubkey_line.strip()
        if not line or "\n" in line:
            raise ValueError("authorize() takes exactly one authorized_keys line")
        path = self.keys_dir / user
        with open(path, "a") as fh:
            fh.write(line + "\n")
        os.chmod(path, 0o644)

    def ssh_argv(self, user: str, key_path: pathlib.Path | str) -> list[str]:
        """``ssh`` argv reaching this server as ``user`` with ``key_path``; append a command."""
        return ["ssh", *self.ssh_options(key_path), "-l", user, HOST]

    def ssh_options(self, key_path: pathlib.Path | str) -> list[str]:
        """The options of :meth:`ssh_argv` without host and user (e.g. for ``rsync -e``)."""
        return [
            "-p", str(self.port),
            "-i", str(key_path),
            "-F", "/dev/null",  # no user or system ssh_config gets a say
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10",
            "-o", "LogLevel=ERROR",
        ]

    def start(self, timeout: float = 20) -> SshServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        if not os.path.exists(SSHD):
            raise SshdError(f"{SSHD} not found: install Debian's openssh-server (scripts/install-system-deps)")
        if os.geteuid() != 0:
            raise SshdError("the test sshd must run as root (it switches to the logging-in user)")
        self._prepare()
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
        last = ""
        for _attempt in range(3):  # the free port may be taken between pick and bind
            self._port = free_port()
            self._write_config(self._port)
            check = subprocess.run([SSHD, "-t", "-f", str(self.config_path)], check=False, capture_output=True, text=True,
                                   timeout=30)
            if check.returncode != 0:
                raise SshdError(f"sshd -t rejected {self.config_path}:\n{check.stderr}")
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            since = self._log.tell()
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config_path)],
                                         stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
            # ours once it says it listens (another program may have taken the port, and accept too)
            listening = f"Server listening on {HOST} port {self._port}."
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                said = self.log_path.read_bytes()[since:].decode(errors="replace")
                if port_taken(said):
                    break  # start it on another port
                if listening in said and port_accepts(self._port):
                    self.known_hosts.write_text(self.known_hosts_line() + "\n")
                    return self
                time.sleep(0.05)
            last = self.log_text()
            self.stop()
        self._port = None
        raise SshdError(f"sshd did not come up:\n{last}")

    def stop(self) -> None:
        """Stop the sshd this object started (by its pid); safe to call more than once.

        Sessions still open (children of the listener) end with their clients.
        """
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SshServer(base_dir={str(self.base_dir)!r}, port={self._port}, pid={self.pid})"

    # -- internals ----------------------------------------------------------

    def _prepare(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        _make_traversable(self.base_dir)
        self.keys_dir.mkdir(exist_ok=True)
        os.chmod(self.keys_dir, 0o755)
        if not self.host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tether-test-host",
                            "-f", str(self.host_key)], check=True, capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=30)

    def _write_config(self, port: int) -> None:
        def q(p: pathlib.Path) -> str:
            s = str(p)
            if any(c in s for c in ' "\t\n%'):
                raise SshdError(f"path {s!r} cannot go into sshd_config unquoted; use a plainer base_dir")
            return s

        lines = [
            f"Port {port}",
            f"ListenAddress {HOST}",
            f"HostKey {q(self.host_key)}",
            f"PidFile {q(self.pid_file)}",
            f"AuthorizedKeysFile {q(self.keys_dir)}/%u",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin no",
            "AllowTcpForwarding yes",
            "AllowStreamLocalForwarding yes",
            "StreamLocalBindUnlink yes",
            "X11Forwarding no",
            "PrintMotd no",
            "UseDNS no",
            "LogLevel INFO",
            "Subsystem sftp internal-sftp",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
