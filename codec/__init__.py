"""The tensor codec shared by the client and the server: OIP datatypes and numpy, raw and typed contents,
and the request/response messages built from them. Depends on numpy and the generated protobufs only."""
