#!/usr/bin/env python3
"""Side-by-side RESP benchmark: redis-server vs the mapchaos sidecar.

Starts Debian's redis-server and `mapchaos sidecar` (release build) on loopback,
runs the same redis-benchmark load on both in one run, and prints throughput,
p50/p99 and the sidecar/Redis ratios. Each row alternates the two servers so
that machine noise hits both alike. Then runs the same `mapchaos run --target`
storm against each and prints its ops/s, p99 and verdict side by side.

    python3 bench/resp_vs_redis.py            # 50 clients, -P 1 and -P 16
    python3 bench/resp_vs_redis.py --requests 2000000 --rounds 3
"""

import argparse
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORM_SPEC = ROOT / "manifests" / "examples" / "delete-storm.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, name: str) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{name} exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{name} did not listen on {port} within 30 s")


def require(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        sys.exit(f"{tool} not found: install Debian's redis-server and redis-tools")
    return path


def run_load(port: int, args: argparse.Namespace, pipeline: int, command: list[str]) -> dict:
    cmd = [
        "redis-benchmark", "-p", str(port), "-c", str(args.clients), "-n", str(args.requests),
        "-r", str(args.keyspace), "-P", str(pipeline), "--csv",
    ] + command
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    if len(rows) != 1:
        sys.exit(f"unexpected redis-benchmark output for {cmd}: {out}")
    row = rows[0]
    return {"rps": float(row["rps"]), "p50": float(row["p50_latency_ms"]), "p99": float(row["p99_latency_ms"])}


def median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=500_000)
    parser.add_argument("--keyspace", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs per row and server; the median is reported")
    parser.add_argument("--storm-duration", default="5s", help="duration of the mapchaos run comparison")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--no-build", action="store_true", help="use the existing target/release/mapchaos")
    args = parser.parse_args()

    require("redis-server")
    require("redis-benchmark")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "mapchaos"], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    mapchaos = target / "release" / "mapchaos"

    redis_port, sidecar_port = free_port(), free_port()
    servers = {
        "redis": subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL),
        "sidecar": subprocess.Popen(
            [str(mapchaos), "sidecar", "--resp-addr", f"127.0.0.1:{sidecar_port}",
             "--http-addr", "127.0.0.1:0", "--log", "warn"],
            stdout=subprocess.DEVNULL),
    }
    ports = {"redis": redis_port, "sidecar": sidecar_port}
    try:
        for name, proc in servers.items():
            wait_for_port(ports[name], proc, name)
        loads = [("SET", ["-t", "set"]), ("GET", ["-t", "get"]), ("DEL", ["DEL", "key:__rand_int__"])]
        results = []
        print(f"redis-benchmark: {args.clients} clients, {args.requests} requests, "
              f"{args.keyspace} random keys, median of {args.rounds} rounds\n")
        header = f"{'load':<10}{'redis ops/s':>14}{'sidecar ops/s':>15}{'ratio':>8}" \
                 f"{'redis p50/p99 ms':>19}{'sidecar p50/p99 ms':>21}{'p99 ratio':>11}"
        print(header)
        print("-" * len(header))
        for pipeline in (1, 16):
            for label, command in loads:
                samples = {"redis": [], "sidecar": []}
                for _ in range(args.rounds):
                    for name in ("redis", "sidecar"):
                        samples[name].append(run_load(ports[name], args, pipeline, command))
                row = {"load": f"{label} -P {pipeline}"}
                for name in ("redis", "sidecar"):
                    row[name] = {k: median([s[k] for s in samples[name]]) for k in ("rps", "p50", "p99")}
                row["ratio"] = row["sidecar"]["rps"] / row["redis"]["rps"]
                row["p99_ratio"] = row["sidecar"]["p99"] / max(row["redis"]["p99"], 1e-9)
                results.append(row)
                r, s = row["redis"], row["sidecar"]
                print(f"{row['load']:<10}{r['rps']:>14,.0f}{s['rps']:>15,.0f}{row['ratio']:>7.2f}x"
                      f"{r['p50']:>10.3f}/{r['p99']:<8.3f}{s['p50']:>11.3f}/{s['p99']:<9.3f}"
                      f"{row['p99_ratio']:>9.2f}x")
        print(f"\nmapchaos run --target, same storm on both ({STORM_SPEC.name}, {args.storm_duration}, seed 1)\n")
        header = f"{'server':<10}{'ops/s':>14}{'p50 µs':>10}{'p99 µs':>10}{'exposures':>14}{'verdict':>14}"
        print(header)
        print("-" * len(header))
        storms = {}
        for name in ("redis", "sidecar"):
            out = subprocess.run(
                [str(mapchaos), "run", str(STORM_SPEC), "--target", f"redis://127.0.0.1:{ports[name]}",
                 "--output", "json", "--quiet", "--seed", "1", "--duration", args.storm_duration],
                capture_output=True, text=True)
            if out.returncode not in (0, 1, 3):
                sys.exit(f"mapchaos run against {name} failed ({out.returncode}): {out.stderr}")
            report = json.loads(out.stdout)
            storms[name] = report
            exposures = sum(report["check"]["exposures"].values()) if report.get("check") else 0
            print(f"{name:<10}{report['opsPerSecond']:>14,.0f}{report['latency']['p50Micros']:>10}"
                  f"{report['latency']['p99Micros']:>10}{exposures:>14,}{report['verdict']:>14}")
        ratio = storms["sidecar"]["opsPerSecond"] / storms["redis"]["opsPerSecond"]
        p99_ratio = storms["sidecar"]["latency"]["p99Micros"] / max(storms["redis"]["latency"]["p99Micros"], 1)
        print(f"{'ratio':<10}{ratio:>13.2}x{'':>10}{p99_ratio:>9.2}x")
        if args.json:
            args.json.write_text(json.dumps({"redis_benchmark": results, "storm": storms}, indent=2))
    finally:
        for proc in servers.values():
            proc.send_signal(signal.SIGTERM)
        for proc in servers.values():
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
