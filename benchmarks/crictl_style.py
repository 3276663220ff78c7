"""A crictl-style CRI client: one process per call, as the original harness used `crictl`.

    crictl_style.py runp   SOCKET API CONFIG.json HANDLER   -> prints the sandbox id
    crictl_style.py inspectp SOCKET API SANDBOX_ID          -> prints the sandbox state (SANDBOX_READY, ...)

CONFIG.json is a PodSandboxConfig in protobuf JSON. Each call starts a Python interpreter, imports
grpc and the CRI messages, dials the socket and makes one RPC, like one `crictl` invocation (a Go
binary starts faster than this interpreter; the comparison in harness_overhead.py says so).
"""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    import grpc
    from google.protobuf import json_format

    from fastiov_lib.cri import _APIS  # the generated CRI modules per API version

    if len(argv) < 4 or argv[0] not in ("runp", "inspectp"):
        print("usage: crictl_style.py runp SOCKET API CONFIG.json HANDLER | inspectp SOCKET API SANDBOX_ID",
              file=sys.stderr)
        return 2
    verb, socket, api = argv[:3]
    pb, grpc_mod = _APIS[api]
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        stub = grpc_mod.RuntimeServiceStub(channel)
        try:
            if verb == "runp":
                with open(argv[3], encoding="utf-8") as f:
                    config = json_format.Parse(f.read(), pb.PodSandboxConfig())
                handler = argv[4] if len(argv) > 4 else ""
                resp = stub.RunPodSandbox(pb.RunPodSandboxRequest(config=config, runtime_handler=handler), timeout=60)
                print(resp.pod_sandbox_id)
            else:
                resp = stub.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=argv[3]), timeout=60)
                print(pb.PodSandboxState.Name(resp.status.state))
        except grpc.RpcError as err:
            print(f"{verb}: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
