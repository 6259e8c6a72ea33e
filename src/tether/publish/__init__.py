"""Publishing build artifacts: content-addressed blobs, atomic builds, downloads."""
