"""Submit and follow dnaembed runs as Ray jobs.

    python -m pipeline.jobs submit --address http://head:8265 [--wait] -- input=... output=...
    python -m pipeline.jobs status|logs|stop JOB_ID --address http://head:8265 [--follow]
    python -m pipeline.jobs list --address http://head:8265

The overrides are checked here, against the same config, before anything is submitted. The
job runs `python -m pipeline ray=cluster <overrides>` in a copy of this checkout
(`working_dir`), with `jobs/runtime_env.yaml`; the driver reserves no GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import DnaEmbedError

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RUNTIME_ENV = REPO / "jobs" / "runtime_env.yaml"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    try:
        # As `ray job submit` does: with RAY_AUTH_MODE unset and a token on this machine
        # (~/.ray/auth_token, RAY_AUTH_TOKEN), send it; clusters enable token auth by default.
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    except ImportError:  # an older Ray without token auth
        pass
    return JobSubmissionClient(address)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_head(
    temp_dir: str, num_cpus: int | None = None, env: dict | None = None, timeout_s: float = 180
) -> tuple[subprocess.Popen, str]:
    """A Ray head on loopback with its dashboard, to try jobs on one machine (and to test
    them): returns the process and the dashboard address. Stop it with `stop_local_head`."""
    cmd = [
        sys.executable,
        "-c",
        "from ray.scripts.scripts import main; main()",
        "start",
        "--head",
        "--block",
        "--port",
        str(_free_port()),
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dash := _free_port()),
        "--include-dashboard",
        "true",
        "--dashboard-agent-listen-port",
        str(_free_port()),
        "--temp-dir",
        temp_dir,
        "--node-ip-address",
        "127.0.0.1",
        "--disable-usage-stats",
    ]
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    address = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client(address).list_jobs()
            return proc, address
        except Exception:  # not up yet
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_local_head(proc)
                raise RuntimeError("the local Ray head did not start") from None
            time.sleep(2)


def stop_local_head(proc: subprocess.Popen, timeout_s: float = 60) -> None:
    """SIGINT stops the head at once (SIGTERM would drain for 30 s); kill if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def runtime_env(path: Path, working_dir: str | None) -> dict:
    """The runtime env file, its working_dir resolved from the current directory."""
    env = yaml.safe_load(path.read_text()) or {}
    wd = working_dir or env.get("working_dir") or "."
    env["working_dir"] = str(Path(wd).resolve())
    return env


def entrypoint(overrides: list[str], python: str = "python") -> str:
    return shlex.join([python, "-m", "pipeline", "ray=cluster", *overrides])


def check_overrides(args: list[str]) -> None:
    """Compose and validate the run's config here, so a typo fails before submission."""
    from pipeline.cli import overrides_and_dirs
    from pipeline.compose import compose, to_config
    from pipeline.config import validate

    overrides, config_dirs = overrides_and_dirs(args)
    validate(to_config(compose(["ray=cluster", *overrides], config_dirs)))


def submit(args: argparse.Namespace) -> int:
    overrides = [a for a in args.overrides if a != "--"]
    check_overrides(overrides)
    env = runtime_env(Path(args.runtime_env), args.working_dir)
    job_id = client(args.address).submit_job(
        entrypoint=entrypoint(overrides, args.python),
        runtime_env=env,
        submission_id=args.submission_id,
        # The driver plans and writes the manifest; every GPU goes to the embed actors.
        entrypoint_num_gpus=0,
        metadata={"app": "dnaembed"},
    )
    print(f"submitted {job_id}")
    if not args.wait:
        print(f"follow it: python -m pipeline.jobs logs {job_id} --follow --address {args.address}")
        return 0
    return wait(args.address, job_id)


def wait(address: str, job_id: str) -> int:
    """Stream the job's logs to the end; 0 if it succeeded."""
    c = client(address)

    async def tail() -> None:
        async for chunk in c.tail_job_logs(job_id):
            print(chunk, end="", flush=True)

    asyncio.run(tail())
    status = _final_status(c, job_id)
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def _final_status(c: Any, job_id: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(c.get_job_status(job_id)).rsplit(".", 1)[-1]
        if status in TERMINAL or time.monotonic() > deadline:
            return status
        time.sleep(1)


def status(args: argparse.Namespace) -> int:
    c = client(args.address)
    info = c.get_job_info(args.job_id)
    state = str(info.status).rsplit(".", 1)[-1]
    print(f"{args.job_id}: {state}" + (f" ({info.message})" if info.message else ""))
    return 0 if state != "FAILED" else 1


def logs(args: argparse.Namespace) -> int:
    if args.follow:
        return wait(args.address, args.job_id)
    print(client(args.address).get_job_logs(args.job_id), end="")
    return 0


def stop(args: argparse.Namespace) -> int:
    stopped = client(args.address).stop_job(args.job_id)
    print(f"{args.job_id}: {'stop requested' if stopped else 'already finished'}")
    return 0


def list_jobs(args: argparse.Namespace) -> int:
    for job in client(args.address).list_jobs():
        state = str(job.status).rsplit(".", 1)[-1]
        print(f"{job.submission_id}\t{state}\t{job.entrypoint}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.jobs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    address = os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("submit", help="submit a run; overrides after --")
    s.add_argument("--address", default=address, help="the dashboard of the cluster's head")
    s.add_argument("--runtime-env", default=str(DEFAULT_RUNTIME_ENV))
    s.add_argument("--working-dir", default=None, help="default: the runtime env's, else .")
    s.add_argument("--submission-id", default=None)
    s.add_argument("--python", default="python", help="python on the cluster's nodes")
    s.add_argument("--wait", action="store_true", help="follow the logs; non-zero if it fails")
    s.add_argument("overrides", nargs=argparse.REMAINDER)
    s.set_defaults(fn=submit)
    for name, fn, helptext in (
        ("status", status, "the job's state"),
        ("logs", logs, "the job's logs"),
        ("stop", stop, "stop the job"),
    ):
        c = sub.add_parser(name, help=helptext)
        c.add_argument("job_id")
        c.add_argument("--address", default=address)
        if name == "logs":
            c.add_argument("--follow", action="store_true")
        c.set_defaults(fn=fn)
    ls = sub.add_parser("list", help="jobs on the cluster")
    ls.add_argument("--address", default=address)
    ls.set_defaults(fn=list_jobs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except DnaEmbedError as e:
        print(f"dnaembed: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
