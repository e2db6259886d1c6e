"""On the GPU machine: install what Ray Serve needs and the image lacks, from .whl/serve.

The GPU kit (../shared/gpu) carries Ray without its `serve` extra. This starts Ray Serve with a
trivial app, reads which module is missing, installs that module's wheel (no dependencies)
into --target, and tries again; only what is missing is installed, so nothing the image or the
kit has is shadowed.

    python3 benchmarks/harness/serve_deps.py --wheels .whl/serve --target /tmp/serve-extras
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

# Import name -> wheel name prefix, where they differ.
WHEELS = {
    "grpc": "grpcio-",
    "grpc_reflection": "grpcio_reflection-",
    "google.protobuf": "protobuf-",
    "google.api_core": "google_api_core-",
    "google.api": "googleapis_common_protos-",
    "google.rpc": "googleapis_common_protos-",
    "proto": "proto_plus-",
    "opencensus.common.runtime_context": "opencensus_context-",
}

PROBE = """
import socket, urllib.request
import ray
from fastapi import FastAPI
from ray import serve
ray.init(num_cpus=1, include_dashboard=False)
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
serve.start(http_options={"port": port})
app = FastAPI()
@serve.deployment
@serve.ingress(app)
class A:
    @app.get("/")
    def root(self):
        return "ok"
serve.run(A.bind())
print("SERVE-OK", urllib.request.urlopen(f"http://127.0.0.1:{port}/").read())
serve.shutdown()
"""
MISSING = re.compile(r"No module named '([\w.]+)'")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheels", default=".whl/serve")
    ap.add_argument("--target", default="/tmp/serve-extras")
    a = ap.parse_args()
    wheels = sorted(Path(a.wheels).glob("*.whl"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), a.target]))
    installed: list[str] = []
    for _ in range(20):
        r = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300
        )
        out = r.stdout + r.stderr
        if "SERVE-OK" in out:
            print(f"ray serve works; installed: {installed or 'nothing'}")
            return 0
        m = MISSING.search(out)
        if not m:
            print(out[-3000:])
            print("ray serve fails for another reason than a missing module")
            return 1
        name = m.group(1)
        prefix = next(
            (w for k, w in WHEELS.items() if name == k or name.startswith(k + ".")),
            name.split(".")[0].replace("-", "_") + "-",
        )
        match = [w for w in wheels if w.name.lower().startswith(prefix.lower())]
        if not match or match[0].name in installed:
            print(f"missing {name}: no wheel for it in {a.wheels} (looked for {prefix}*)")
            return 1
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
             "--no-compile", "--target", a.target, str(match[0])],
            check=True,
        )  # fmt: skip
        installed.append(match[0].name)
    print("gave up after 20 modules")
    return 1


if __name__ == "__main__":
    sys.exit(main())
