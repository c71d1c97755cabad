"""Offline tools over the server and the client: the benchmark, the model optimizer, the live view."""
