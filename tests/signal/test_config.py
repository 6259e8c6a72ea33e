"""remaphore's config format, parsed as-is, with clear errors and line numbers."""

from __future__ import annotations

import pytest

from tether.signal import core as c
from tether.signal.config import ConfigError, example_config, load_config, parse_config

A = c.SigningKey.from_seed(b"\x01" * 32)
B = c.SigningKey.from_seed(b"\x02" * 32)

GOOD = f"""\
# a remaphore config, as remaphore writes it
server: nats://n1:4222
server: nats://n2:4222   # failover
credentials: /path/to/credentials/file
subject: remaphore
default_identity: {A.public_b58}
destination: com.crypto.us.left
allow_skew: 1h2m3s4ms

[ Identities ]
{A.public_b58} {A.private_b58} [ping, Deploy]
{B.public_b58} {B.private_b58} [*]

[ Peers ]
com.crypto.us.right {B.public_b58} [ping]
com.crypto.eu.any {A.public_b58} [*]
"""


def test_parses_remaphore_format():
    cfg = parse_config(GOOD)
    assert cfg.servers == ["nats://n1:4222", "nats://n2:4222"]
    assert cfg.credentials is None  # the example placeholder means none
    assert cfg.subject == "remaphore"
    assert cfg.default_identity == A.public
    assert cfg.destination == "com.crypto.us.left"
    assert cfg.allow_skew_ns == 3723004 * 10**6
    assert [i.verbs for i in cfg.identities] == [frozenset({"ping", "deploy"}), frozenset({"*"})]
    peers = list(cfg.peers)
    assert [(p.destination, p.public) for p in peers] == [("com.crypto.us.right", B.public), ("com.crypto.eu.any", A.public)]
    assert cfg.identity(None, "ping").key == A
    assert cfg.identity(None, "reboot") is None
    assert cfg.identity(B.public, "reboot").key == B
    assert cfg.warnings == []


def test_defaults():
    cfg = parse_config(f"server: nats://x\ndestination: d\n[ Identities ]\n{A.public_b58} {A.private_b58} [ping]\n")
    assert cfg.allow_skew_ns == 3 * 10**9
    assert cfg.subject == "remaphore"
    assert cfg.default_identity == A.public
    assert cfg.max_handlers == 16 and not cfg.durable


def test_tether_additions():
    cfg = parse_config(GOOD.replace("subject:", "token: s3cret\nmax_handlers: 4\ndurable: yes\nsubject:"))
    assert (cfg.token, cfg.max_handlers, cfg.durable) == ("s3cret", 4, True)


@pytest.mark.parametrize(
    "change, line, words",
    [
        (("subject: remaphore", "subject:"), 5, "subject has no value"),
        (("subject: remaphore", "subject remaphore"), 5, "not a `key: value` line"),
        (("[ Identities ]", "[ Extras ]\nx: 1\n[ Identities ]"), 10, "unknown section [ Extras ]"),
    ],
)
def test_lines_remaphore_skips_are_warnings(change, line, words):
    """remaphore skips an empty `key:`, a line without a colon and an unknown [section] header: tether
    loads the same file, and says what it skipped."""
    cfg = parse_config(GOOD.replace(*change), "/etc/remaphore/remaphore.conf")
    assert any(f"remaphore.conf:{line}:" in w and words in w for w in cfg.warnings), cfg.warnings
    assert cfg.subject == "remaphore" and len(cfg.identities) == 2 and len(list(cfg.peers)) == 2


@pytest.mark.parametrize("old, new", [(f"com.crypto.us.right {B.public_b58}", f"com.crypto.us.right\t{B.public_b58}"),
                                      (f"{A.public_b58} {A.private_b58}", f"{A.public_b58}  {A.private_b58}")])
def test_fields_split_by_tabs_or_several_spaces_load_with_a_warning(old, new):
    """remaphore splits identity and peer lines on single spaces and refuses these (exit 2): tether reads them
    and says so, so a file shared with remaphore nodes gets fixed."""
    assert old in GOOD
    cfg = parse_config(GOOD.replace(old, new), "n.conf")
    assert len(cfg.identities) == 2 and len(list(cfg.peers)) == 2
    assert [w for w in cfg.warnings if "remaphore refuses this line" in w and "one space" in w], cfg.warnings
    assert not parse_config(GOOD, "n.conf").warnings


def test_unknown_section_header_keeps_the_section_it_was_in():
    # as remaphore's parser: the header changes nothing, the peer after it is still a peer
    cfg = parse_config(GOOD.replace(f"com.crypto.eu.any {A.public_b58} [*]",
                                    f"[ Later ]\ncom.crypto.eu.any {A.public_b58} [*]"))
    assert [p.destination for p in cfg.peers] == ["com.crypto.us.right", "com.crypto.eu.any"]
    assert "as part of [ Peers ]" in cfg.warnings[0]


def test_unknown_keys_are_ignored_with_a_warning():
    cfg = parse_config(GOOD.replace("subject:", "colour: blue\nsubject:"))
    assert cfg.warnings and "colour" in cfg.warnings[0] and ":5:" in cfg.warnings[0]


@pytest.mark.parametrize(
    "change, line, words",
    [
        (("allow_skew: 1h2m3s4ms", "allow_skew: soon"), 8, "duration"),
        ((f"default_identity: {A.public_b58}", "default_identity: 0OIl"), 6, "base58"),
        ((f"default_identity: {A.public_b58}", "default_identity: 111"), 6, "32 bytes"),
        ((f"{A.private_b58} [ping, Deploy]", f"{A.private_b58[:-3]} [ping]"), 11, "private key"),
        ((f"{A.private_b58} [ping, Deploy]", f"{B.private_b58} [ping]"), 11, "does not belong"),
        ((f"{A.private_b58} [ping, Deploy]", f"{A.private_b58} ping"), 11, "bracketed"),
        ((f"{A.private_b58} [ping, Deploy]", ""), 11, "publickey privatekey"),
        ((f"com.crypto.us.right {B.public_b58}", f"com.crypto.us.right {B.public_b58[:-2]}"), 15, "peer key"),
        # remaphore reads on in the section it was in after an unknown header: so do we
        (("[ Peers ]", "[ Friends ]"), 15, "bad identity"),
        (("destination: com.crypto.us.left", "destination: a,b"), 7, "comma"),
    ],
)
def test_errors_name_the_line(change, line, words):
    text = GOOD.replace(*change)
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "/etc/remaphore/remaphore.conf")
    assert exc.value.line == line, str(exc.value)
    assert f"remaphore.conf:{line}:" in str(exc.value)
    assert words in str(exc.value)


@pytest.mark.parametrize(
    "drop, words",
    [("server:", "server"), ("destination:", "destination"), ("[ Identities ]", "identit")],
)
def test_required(drop, words):
    text = "\n".join(l for l in GOOD.splitlines() if not l.startswith(drop))
    if drop == "[ Identities ]":
        text = text.replace(f"{A.public_b58} {A.private_b58}", "# ").replace(f"{B.public_b58} {B.private_b58} [*]", "")
        text = "\n".join(l for l in text.splitlines() if "[ping, Deploy]" not in l)
        text = text.replace(f"default_identity: {A.public_b58}\n", "")
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    assert words in str(exc.value)


def test_default_identity_must_be_an_identity():
    other = c.SigningKey.from_seed(b"\x03" * 32)
    with pytest.raises(ConfigError, match="default_identity"):
        parse_config(GOOD.replace(f"default_identity: {A.public_b58}", f"default_identity: {other.public_b58}"))


def test_load_config_missing_file_and_creds(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.conf"))
    p = tmp_path / "r.conf"
    p.write_text(GOOD.replace("/path/to/credentials/file", str(tmp_path / "missing.creds")))
    with pytest.raises(ConfigError, match="credentials file"):
        load_config(str(p))
    creds = tmp_path / "x.creds"
    creds.write_text("x")
    p.write_text(GOOD.replace("/path/to/credentials/file", str(creds)))
    assert load_config(str(p)).credentials == str(creds)


def test_example_config_parses_and_has_fresh_key():
    one, two = example_config(), example_config()
    assert one != two
    cfg = parse_config(one)
    assert cfg.identities[0].key.public == cfg.default_identity
    assert cfg.identities[0].verbs == frozenset({"ping"})
    assert cfg.allow_skew_ns == 5 * 10**9
