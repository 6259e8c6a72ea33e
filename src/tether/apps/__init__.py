"""Apps: per-user sandboxed web apps behind the gateway.

``sandbox`` (with ``cgroups``, ``netns``, ``netpolicy``, ``selftest``, ``relay``) is the OS
layer: bubblewrap, namespaces, cgroups, nftables. It needs root and knows nothing of the
database or HTTP; the service builds the capability on top of it.
"""
