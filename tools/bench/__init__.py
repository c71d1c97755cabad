"""``tensorgate bench``: a load generator and its yardsticks, so every result reads as a ratio.

- :mod:`payload`: serialized requests with fresh random inputs, built cheaply;
- :mod:`load`: closed- and open-loop load over grpc.aio, from generator processes;
- :mod:`cpu`: CPU seconds of a process tree, read from ``/proc``;
- :mod:`servers`: starting and stopping the server under test and the echo server;
- :mod:`echo`: the do-nothing gRPC server, the floor of gRPC and Python overhead;
- :mod:`limit`: in-process ONNX Runtime at batch sizes 1 to 64, the ceiling;
- :mod:`repository`: a temporary repository copy with dynamic batching off;
- :mod:`scenario`: the plan of a benchmark, from a TOML file and flags;
- :mod:`runner`: runs a plan; :mod:`summary` turns measurements into figures and ratios;
- :mod:`report`: the table, the JSON and the PNG; :mod:`progress`: the progress bar.
"""
