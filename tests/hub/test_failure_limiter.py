"""The failed-authentication limiter limits failures, not successes; behind a trusted proxy
it counts per client (X-Forwarded-For), and it believes that header from no one else."""

from __future__ import annotations

BAD = "tth_0123456789abcdef_" + "B" * 43


def _statuses(hub, token: str, n: int, forwarded: str | None = None) -> list[int]:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    with hub.client(token) as c:
        return [c.get("/api/v1/whoami", headers=headers).status_code for _ in range(n)]


def test_bad_tokens_do_not_lock_out_good_ones_from_the_same_source(start_hub):
    h = start_hub(env={"TETHER_AUTH_FAILURES_PER_MINUTE": "3"})
    assert _statuses(h, BAD, 5) == [401, 401, 401, 429, 429]
    # the broken client's neighbour (same address: a NAT) is still served, again and again
    assert _statuses(h, h.admin_token, 3) == [200, 200, 200]
    assert _statuses(h, BAD, 1) == [429]  # and the broken client is still told to back off
    with h.client() as c:  # no token at all from the limited source: refused as before
        assert c.get("/api/v1/whoami").status_code == 429


def test_behind_a_trusted_proxy_each_client_has_its_own_count(start_hub):
    proxied = start_hub(env={"TETHER_AUTH_FAILURES_PER_MINUTE": "3", "TETHER_FORWARDED_ALLOW_IPS": "127.0.0.1"})
    assert _statuses(proxied, BAD, 4, "10.0.0.1") == [401, 401, 401, 429]
    assert _statuses(proxied, BAD, 1, "10.0.0.2") == [401]  # another client behind the proxy
    # a client cannot leave its count by naming another address first: the proxy appends the real one
    assert _statuses(proxied, BAD, 1, "10.9.9.9, 10.0.0.1") == [429]
    assert _statuses(proxied, proxied.admin_token, 1, "10.0.0.1") == [200]

    direct = start_hub(env={"TETHER_AUTH_FAILURES_PER_MINUTE": "3"})  # no trusted proxy: the header is ignored
    assert _statuses(direct, BAD, 3, "10.0.0.1") == [401, 401, 401]
    assert _statuses(direct, BAD, 1, "10.0.0.2") == [429]


def test_a_trusted_proxy_that_is_no_address_is_refused_at_start(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "TETHER_FORWARDED_ALLOW_IPS": "127.0.0.1, 10.0.0.l"}  # a typo: l for 1
    r = subprocess.run([sys.executable, "-m", "tether", "hub", "--data", str(tmp_path / "data"),
                        "--listen", "127.0.0.1:0"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "'10.0.0.l' is not an address or a network" in r.stderr, r.stderr
