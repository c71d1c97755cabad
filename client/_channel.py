"""Opening the clients' channels: plaintext or TLS, with the channel options and the retry policy."""

from __future__ import annotations

import grpc
import grpc.aio

from tensorgate.client._options import ChannelOptions, RetryPolicy
from tensorgate.client._security import TlsConfig


def channel_arguments(
    options: ChannelOptions, retry: RetryPolicy, tls: TlsConfig | None
) -> list[tuple[str, str | int]]:
    arguments: list[tuple[str, str | int]] = [*options.grpc_options(), *retry.channel_options()]
    if tls is not None:
        arguments += tls.channel_options()
    return arguments


def open_channel(
    target: str, options: ChannelOptions, retry: RetryPolicy, tls: TlsConfig | None
) -> grpc.Channel:
    arguments = channel_arguments(options, retry, tls)
    if tls is None:
        return grpc.insecure_channel(target, options=arguments, compression=options.compression)
    return grpc.secure_channel(
        target, tls.credentials(), options=arguments, compression=options.compression
    )


def open_aio_channel(
    target: str, options: ChannelOptions, retry: RetryPolicy, tls: TlsConfig | None
) -> grpc.aio.Channel:
    arguments = channel_arguments(options, retry, tls)
    if tls is None:
        return grpc.aio.insecure_channel(target, options=arguments, compression=options.compression)
    return grpc.aio.secure_channel(
        target, tls.credentials(), options=arguments, compression=options.compression
    )
