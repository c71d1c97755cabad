"""The server's name and version, as ServerMetadata reports them."""

from importlib.metadata import PackageNotFoundError, version

SERVER_NAME = "tensorgate"
try:
    SERVER_VERSION = version("tensorgate")
except PackageNotFoundError:  # running from a source tree that was never installed
    SERVER_VERSION = "0+unknown"
