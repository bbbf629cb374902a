"""`python -m sixfold.healthcheck [HOST:]PORT`: exit 0 when the gRPC health service says SERVING.

Used as the container healthcheck; works for storage nodes, the writer and readers alike.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sixfold import tls

# Inside the container check's own 10 s: on a loaded 2-core machine (load 15 in a CI run) a
# node answered too late for 2 s, and four containers stayed unhealthy for over a minute.
HEALTH_TIMEOUT_S = 4.0


def check(address: str, service: str = "") -> bool:
    with tls.channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=HEALTH_TIMEOUT_S
            )
        except grpc.RpcError as err:
            print(f"{address}: {err.code().name}: {err.details()}", file=sys.stderr)
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m sixfold.healthcheck [HOST:]PORT", file=sys.stderr)
        return 2
    address = argv[0] if ":" in argv[0] else f"127.0.0.1:{argv[0]}"
    return 0 if check(address) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
