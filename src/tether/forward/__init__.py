"""Forward: serve a compute node's web app through the hub's gateway, over SSH."""
