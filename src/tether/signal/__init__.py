"""Signal: a remote semaphore over NATS, wire-compatible with remaphore.

``core`` is the sans-IO protocol (envelope, matcher, filters, output);
``config`` parses remaphore's config file; ``transport`` talks to NATS;
``cli`` is ``tether signal`` / ``remaphore``.
"""
