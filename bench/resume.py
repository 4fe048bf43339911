"""Resumable uploads over cut connections: tus on loopback, against the same upload uncut
and against the form path, same file, same run.

    .venv/bin/python bench/resume.py [--size-mib 500] [--cut-mib 50] [--runs 3]

Scenarios, each on a fresh relay (`amanah serve --no-tor`, one contact):
- form: the no-JavaScript form upload (bench/ingest.py's browser-like client);
- tus, uncut: POST /uploads, then one PATCH with the whole file;
- tus, cut: every `--cut-mib` of body the connection is aborted (RST, as a dropped circuit
  loses what was in flight, not a graceful close), then HEAD asks the relay where it is,
  and a new PATCH carries on from there.
Re-sent bytes are what the client sent in total less the file's size: what the cuts cost.
Wall time runs until the last answer (the relay answers the final PATCH once the drop is
sealed and stored, as it answers the form with its receipt).

Targets (issue 5): re-sent bytes under 2% of the file; uncut tus throughput at least that
of the form path.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest as harness  # noqa: E402  (bench/ingest.py: relay launcher, measurements)

MiB = 1024 * 1024
PIECE = MiB
SEND_BUFFER = 256 * 1024


@dataclass
class Run:
    seconds: float
    sent: int
    cuts: int


def _request(
    port: int,
    head: str,
    body_source: Path | None = None,
    start: int = 0,
    cut_after: int | None = None,
) -> tuple[bytes, int, bool]:
    """Sends one request; streams `body_source` from `start`. With `cut_after`, aborts the
    connection after that many body bytes. Returns (answer head, body bytes sent, cut)."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # What a client has handed to its kernel but not yet sent is lost on a reset and
        # must be sent again. Over Tor, a stream's flow-control window (500 cells, about
        # 250 KB) bounds what is in flight; loopback would otherwise let Linux buffer up to
        # 4 MiB. So this client bounds its send buffer as Tor bounds a circuit.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        sock.settimeout(120)
        sock.connect(("127.0.0.1", port))
        sock.sendall(head.encode())
        if body_source is not None:
            with body_source.open("rb") as f:
                f.seek(start)
                while piece := f.read(PIECE):
                    if cut_after is not None and sent + len(piece) >= cut_after:
                        piece = piece[: cut_after - sent]
                        sock.sendall(piece)
                        sent += len(piece)
                        # RST: whatever was still in flight is lost, as on a dropped circuit.
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        return b"", sent, True
                    sock.sendall(piece)
                    sent += len(piece)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer, sent, False


def _header(answer: bytes, name: str) -> str:
    for line in answer.decode("latin-1").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    raise RuntimeError(f"no {name} in the answer: {answer[:200]!r}")


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def tus_upload(port: int, path: Path, cut_every: int | None) -> Run:
    size = path.stat().st_size
    tus = "Host: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
    start = time.perf_counter()
    answer, _, _ = _request(
        port,
        f"POST /uploads HTTP/1.1\r\n{tus}Upload-Length: {size}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n",
    )
    if _status(answer) != 201:
        raise RuntimeError(f"tus create answered {answer[:200]!r}")
    location = _header(answer, "Location")
    offset, sent, cuts = 0, 0, 0
    for _attempt in range(10_000):
        head = (
            f"PATCH {location} HTTP/1.1\r\n{tus}"
            "Content-Type: application/offset+octet-stream\r\n"
            f"Upload-Offset: {offset}\r\nContent-Length: {size - offset}\r\n"
            "Connection: close\r\n\r\n"
        )
        answer, body_sent, cut = _request(port, head, path, offset, cut_every)
        sent += body_sent
        if not cut:
            if _status(answer) != 204 or int(_header(answer, "Upload-Offset")) != size:
                raise RuntimeError(f"final PATCH answered {answer[:200]!r}")
            return Run(time.perf_counter() - start, sent, cuts)
        cuts += 1
        time.sleep(0.05)  # the relay notices the reset
        answer, _, _ = _request(port, f"HEAD {location} HTTP/1.1\r\n{tus}Connection: close\r\n\r\n")
        offset = int(_header(answer, "Upload-Offset"))
    raise RuntimeError("upload did not finish")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=500)
    parser.add_argument("--cut-mib", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tmp", type=Path, default=None)
    args = parser.parse_args()
    size = args.size_mib * MiB
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        workdir = Path(tmp)
        path = workdir / "video.bin"
        harness.make_input(path, size)
        results: dict[str, list[float]] = {"form": [], "tus": [], "tus-cut": []}
        resent: list[int] = []
        cuts: list[int] = []
        for run in range(args.runs):
            for name in results:
                relay_dir = workdir / f"{name}-{run}"
                relay_dir.mkdir()
                peer = harness.start_amanah(relay_dir, size + MiB)
                try:
                    harness.wait_ready(peer)
                    harness.warm(path)
                    port = int(peer.base.rsplit(":", 1)[1])
                    if name == "form":
                        sample = harness.measure(peer, path)
                        if sample is None:
                            raise SystemExit("bench: the form upload failed")
                        results[name].append(sample.seconds)
                    else:
                        cut = args.cut_mib * MiB if name == "tus-cut" else None
                        done = tus_upload(port, path, cut)
                        results[name].append(done.seconds)
                        if cut:
                            resent.append(done.sent - size)
                            cuts.append(done.cuts)
                        elif done.sent != size:
                            raise SystemExit("bench: an uncut upload re-sent bytes")
                finally:
                    harness.stop(peer)
                harness.log(f"run {run + 1}/{args.runs} {name}: {results[name][-1]:.2f} s")

    def rate(name: str) -> float:
        return size / 1e6 / statistics.median(results[name])

    print(f"resumable upload of {args.size_mib} MiB on loopback, medians of {args.runs} run(s)")
    for name in results:
        print(f"{name:>8}: {statistics.median(results[name]):6.2f} s  {rate(name):6.0f} MB/s")
    worst = max(resent)
    print(
        f"cut every {args.cut_mib} MiB: {statistics.median(cuts):.0f} cuts, re-sent "
        f"{statistics.median(resent) / MiB:.1f} MiB median, {worst / MiB:.1f} MiB worst "
        f"({100 * worst / size:.2f}% of the file)"
    )
    print(
        f"tus uncut / form: {rate('tus') / rate('form'):.2f}x;  tus cut / uncut: "
        f"{rate('tus-cut') / rate('tus'):.2f}x"
    )
    met_resent = worst < 0.02 * size
    met_rate = rate("tus") >= rate("form")
    print(
        f"target re-sent < 2%: {'met' if met_resent else 'MISSED'}; "
        f"target tus uncut >= form: {'met' if met_rate else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
