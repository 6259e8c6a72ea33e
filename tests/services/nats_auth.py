"""NATS servers that really require credentials, made the way a site makes them.

* :class:`OperatorAuth`: operator/JWT ("decentralised") mode. An operator, an
  account and users, as nkeys and JWTs signed the way ``nsc`` signs them
  (``tether.signal.natsauth``); the server trusts the operator and preloads the
  account (``resolver: MEMORY``); clients bring a ``.creds`` file.
* :func:`nkey_user_config`: a server whose one user is an nkey (clients sign
  the nonce with the seed, ``nkey_seed:`` in a signal config).
* :class:`TlsFiles`: a throw-away CA, a server certificate for 127.0.0.1 and a
  client certificate; :meth:`TlsFiles.server_config` makes the server *verify*
  client certificates, so a client without one is refused.

Every secret file is written 0600. Use with :class:`tests.services.nats.NatsServer`::

    auth = OperatorAuth(tmp_path)
    with NatsServer(tmp_path / "srv", config=auth.server_config()) as srv:
        creds = auth.user_creds("node1")          # path to a .creds file
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pathlib
import time

from tether.signal import natsauth


def _secret(path: pathlib.Path, text: str | bytes) -> pathlib.Path:
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


class OperatorAuth:
    """An operator and one account; users made on demand."""

    def __init__(self, base_dir: pathlib.Path, *, name: str = "test"):
        self.dir = pathlib.Path(base_dir) / "nsc"
        self.dir.mkdir(parents=True, exist_ok=True)
        now = int(time.time())
        self.operator = natsauth.new_key("operator")
        self.account = natsauth.new_key("account")
        self.operator_jwt = natsauth.operator_jwt(self.operator, name=f"{name}-op", issued_at=now)
        self.account_jwt = natsauth.account_jwt(self.operator, self.account, name=f"{name}-acct", issued_at=now)
        # JetStream in operator mode needs a system account
        self.system = natsauth.new_key("account")
        self.system_jwt = natsauth.account_jwt(self.operator, self.system, name="SYS", issued_at=now, limits={})

    def server_config(self, jetstream_dir: pathlib.Path | None = None) -> str:
        op = self.dir / "operator.jwt"
        op.write_text(self.operator_jwt)
        js = f"jetstream {{ store_dir: {jetstream_dir} }}\n" if jetstream_dir else ""
        return (f"operator: {op}\nsystem_account: {self.system.public}\nresolver: MEMORY\n"
                f"resolver_preload: {{\n  {self.account.public}: {self.account_jwt}\n"
                f"  {self.system.public}: {self.system_jwt}\n}}\n{js}")

    def user_creds(self, name: str, *, signer: natsauth.NKey | None = None, expires: int | None = None) -> pathlib.Path:
        """A ``.creds`` file for a new user of the account (``signer``: sign with another key, which the server refuses)."""
        user = natsauth.new_key("user")
        jwt = natsauth.user_jwt(signer or self.account, user, name=name, issued_at=int(time.time()) - 60,
                                expires=expires)
        return _secret(self.dir / f"{name}.creds", natsauth.creds_file(jwt, user))


def nkey_user_config(base_dir: pathlib.Path) -> tuple[str, pathlib.Path]:
    """(server config with one nkey user, path of that user's seed file)."""
    user = natsauth.new_key("user")
    seed = _secret(pathlib.Path(base_dir) / "user.nk", user.seed + "\n")
    return f"authorization {{\n  users = [ {{ nkey: {user.public} }} ]\n}}\n", seed


class TlsFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""

    def __init__(self, base_dir: pathlib.Path):
        from cryptography.hazmat.primitives.asymmetric import ec

        self.dir = pathlib.Path(base_dir) / "tls"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = self.dir / "ca.pem"
        self.ca.write_bytes(self._cert("test nats CA", self._ca_key, ca=True))
        self.server_cert, self.server_key = self._leaf("127.0.0.1", server=True)
        self.client_cert, self.client_key = self._leaf("signal-node", server=False)

    def _cert(self, cn: str, key, *, ca: bool = False, server: bool = False, public=None) -> bytes:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.timezone.utc)
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test nats CA")]))
             .public_key(public or key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        if not ca:
            b = b.add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def _leaf(self, cn: str, *, server: bool) -> tuple[pathlib.Path, pathlib.Path]:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        name = "server" if server else "client"
        cert = self.dir / f"{name}.pem"
        cert.write_bytes(self._cert(cn, self._ca_key, server=server, public=key.public_key()))
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        return cert, _secret(self.dir / f"{name}.key", pem)

    def server_config(self) -> str:
        """TLS required, and a client certificate signed by the CA required too (``verify: true``)."""
        return (f"tls {{\n  cert_file: {self.server_cert}\n  key_file: {self.server_key}\n"
                f"  ca_file: {self.ca}\n  verify: true\n  timeout: 2\n}}\n")
