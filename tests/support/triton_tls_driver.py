"""tritonclient.grpc over TLS with a bearer token (ssl=True, root_certificates, an authorization
header), against a tensorgate server; prints one JSON object of what it saw.

Its own process, for the reason given in triton_compat_driver.py.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def main(target: str, root_certificates: str, token: str) -> dict[str, object]:
    client = triton.InferenceServerClient(target, ssl=True, root_certificates=root_certificates)
    headers = {"authorization": f"Bearer {token}"}
    seen: dict[str, object] = {
        "live": client.is_server_live(headers=headers),
        "model_ready": client.is_model_ready("add", headers=headers),
    }
    x = triton.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), np.float32))
    result = client.infer("add", [x], headers=headers)
    seen["y"] = result.as_numpy("y").tolist()
    try:
        client.is_server_live()
        seen["without_token"] = "OK"
    except InferenceServerException as error:
        seen["without_token"] = str(error.status())
    return seen


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
