"""The one client stack for talking to a hub: :mod:`.transport` (HTTP/1.1 on the
standard library), :mod:`.retry` (the retry policy), :mod:`.errors`, :mod:`.config`
(where the hub, token and CA bundle come from), :mod:`.hub` (a thin typed client and
the lazy connection a command uses) and :mod:`.options` (their click options).

Nothing is imported here: ``tether --help`` and ``tether publish`` import only the
modules they use.
"""
