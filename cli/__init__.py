"""The ``tensorgate`` command line: thin commands over the client, the server, the balancer and the tools."""
