"""Sealing on the source's device: `amanah-drop seal` (strip, tar and age in one stream,
nothing readable on disk) against the same work done with stock tools, same file, same run.

    .venv/bin/python bench/drop.py [--size-mb 100] [--runs 3] [--tmp DIR]

Peers, each measured as a process tree (wall time; peak RAM with memfds, as
bench/sanitize.py measures it):
- amanah-drop seal: fetches and verifies the relay's directory (a loopback relay,
  `amanah serve --no-tor`, one contact), strips the video in the sandboxed worker into
  RAM, and streams the tar into our age encryptor, writing only ciphertext;
- strip + tar | age: `amanah-drop strip` writes the cleaned video to disk (plaintext on
  disk: what the streamed design avoids), then `tar c | age -r` (the Go age tool) seals it.
The cleaning is the same in both; what differs is the sealing and the disk round trip.
The input is an H.264 MP4 with camera metadata, made once (bench/sanitize.py's recipe).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest  # noqa: E402  (bench/ingest.py: the relay launcher)
import sanitize  # noqa: E402  (bench/sanitize.py: the video recipe, process-tree memory)

from crypto.card import MemberIdentity  # noqa: E402

BIN = Path(sys.executable).parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=100, help="video size (default 100)")
    parser.add_argument("--runs", type=int, default=3, help="runs per peer (median)")
    parser.add_argument("--tmp", type=Path, default=None, help="where to work (default: /tmp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="amanah-bench-drop-") as tmp:
        work = Path(tmp)
        video = work / "video.mp4"
        sanitize.make_video(video, args.size_mb)
        size = video.stat().st_size
        relay = ingest.start_amanah(work, 4 << 30)
        try:
            ingest.wait_ready(relay)
            member = MemberIdentity.parse_file_text((work / "member.txt").read_text())
            recipient = str(member.identity.recipient)
            ours = [f"{BIN}/amanah-drop", "seal", "--relay", relay.base, str(video)]
            ours += ["-o", str(work / "out" / "drop.age"), "--state", str(work / "state")]
            stock = (
                f"{BIN}/amanah-drop strip {video} -o {work / 'clean'} > /dev/null && "
                f"tar c -C {work / 'clean'} . | age -r {recipient} -o {work / 'out' / 'p.age'}"
            )
            results: dict[str, list[sanitize.Sample]] = {
                "amanah-drop seal": [],
                "strip+tar|age": [],
            }
            for _ in range(args.runs):
                for name, command in (
                    ("amanah-drop seal", ours),
                    ("strip+tar|age", ["sh", "-c", stock]),
                ):
                    shutil.rmtree(work / "out", ignore_errors=True)
                    shutil.rmtree(work / "clean", ignore_errors=True)
                    (work / "out").mkdir()
                    results[name].append(sanitize.measure(command, work))
        finally:
            ingest.stop(relay)
    print(f"input: {size / 1e6:.1f} MB MP4, {args.runs} run(s), medians")
    print(f"{'peer':<18} {'seconds':>8} {'MB/s':>7} {'peak RAM MiB':>13}")
    medians = {}
    for name, samples in results.items():
        seconds = statistics.median(s.seconds for s in samples)
        ram = max(s.ram for s in samples)
        medians[name] = (seconds, ram)
        print(f"{name:<18} {seconds:8.2f} {size / 1e6 / seconds:7.1f} {ram:13.0f}")
    (ours_s, ours_ram), (peer_s, peer_ram) = medians.values()
    print(f"ratio (ours / stock): time {ours_s / peer_s:.2f}, peak RAM {ours_ram / peer_ram:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
