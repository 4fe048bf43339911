"""Speed, memory and cleanliness of Amanah's sanitizer against mat2, same files, same run.

    .venv/bin/python bench/sanitize.py [--runs 3] [--tmp DIR] [--video-mb 100 500]

Workload (issue 4): H.264 + AAC MP4s (testsrc2 with noise, ~65 Mbit/s, the index at the
end as phones write it) carrying GPS, make, model, software, a creation time and an
encoder string, and a 24-megapixel JPEG carrying EXIF, GPS and XMP. They are made once
into --tmp (ffmpeg, Pillow, exiftool) and reused by later runs; nothing goes into the
repository.

Each tool runs as a whole child process, measured from outside:
- `drop`: `amanah-drop strip FILE -o DIR`, the command a source runs (the relay's
  sandboxed sanitizer: a worker under bubblewrap; for videos PyAV in the worker, for
  pictures Pillow, for audio ffmpeg); its time includes the command's own imports. A
  video's worker reads the source's file and writes the new one itself, and the
  original is not hashed (strip shows no hash);
- `library`: the same sanitizer called from a bare Python process (`Stripping().clean`
  from the file to a file), so the command's imports are not counted; the original is
  hashed meanwhile, as `amanah-drop seal` needs;
- `relay`: the relay's own path, as ingest runs it: the file is first staged (sealed to a
  RAM-only key, not timed), then cleaned from the `SealedReader` into a `SealingWriter`
  (timed by the child: decryption and sealing included). Its output is sealed, so it is
  not judged by exiftool; its plaintext's SHA-256 must equal the library's output's (the
  remux is bit-exact);
- `mat2`: `mat2 FILE` (Debian's mat2: ffmpeg or GdkPixbuf under bubblewrap).
Inputs are read once before each run (page cache), outputs go to --tmp. Medians of --runs;
this machine class is noisy (+-20%), so only ratios taken in the same run mean anything.

Memory, polled every few milliseconds over the whole process tree (the tools spawn
workers, bwrap, ffmpeg):
- `tree RSS`: the largest sum of VmRSS over the live processes of the tree at one instant;
- `top proc`: the largest single VmHWM in the tree, and which program it was;
- `RAM`: the largest sum, at one instant, of RssAnon + RssFile over the tree plus the
  pages of every memfd the tree holds open (counted once). Pages of a memfd are charged
  to the machine but appear in no process's RSS unless mapped, so `tree RSS` alone would
  hide a whole file held in memory.

Cleanliness: exiftool (`-a -G1 -s -u -ee`) on each output, judged by the tests' own rule
(tests/sanitize/judge.py: tags that are neither structural nor neutral), and a byte search
of the output for the identifying strings put into the input.

Targets (issue 4): at least as fast as mat2 per file; video remux under 150 MiB RSS
whatever the file size (shown at two sizes).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest import warm  # noqa: E402 - bench/ingest.py (this script's folder is on sys.path)

from tests.sanitize import judge, processes  # noqa: E402 - the tests' exiftool rule, /proc

DROP = str(Path(sys.executable).parent / "amanah-drop")
MAT2 = shutil.which("mat2") or "/usr/bin/mat2"
MiB = 1024 * 1024
POLL = 0.003

# Identifying values written into the inputs; none may be found in an output.
MAKER, MODEL, SOFTWARE, PERSON, PLACE = (
    "BenchMakerCo",
    "BenchModelZ7",
    "BenchCamApp4",
    "BenchPersonName",
    "BenchPlaceName",
)
MARKERS = (MAKER, MODEL, SOFTWARE, PERSON, PLACE, "x264 - core", "BenchEncoder9")
VIDEO_BYTES_PER_SECOND = 8.2e6  # what the recipe below makes, measured


@dataclass
class Sample:
    seconds: float
    tree_rss: float  # MiB
    top_rss: float  # MiB
    top_name: str
    ram: float  # MiB, memfds included


@dataclass
class Result:
    samples: list[Sample] = field(default_factory=list)
    tags_left: int = -1
    markers_left: tuple[str, ...] = ()
    note: str = ""

    @property
    def seconds(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    def worst(self) -> Sample:
        return max(self.samples, key=lambda s: s.ram)


def measure(command: list[str], cwd: Path) -> Sample:
    """Wall time and memory of one command and everything it starts (bench/drop.py uses
    it too)."""
    return measure_output(command, cwd)[0]


def measure_output(command: list[str], cwd: Path, reported: bool = False) -> tuple[Sample, str]:
    """`measure`, and the command's standard output. With `reported`, the time is the one
    the command prints on its last line (`seconds=...`): the part of its run that is the
    work itself."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    tree_rss = ram = 0
    top: dict[int, tuple[int, str]] = {}
    # A command that writes much to its pipes is not in these benchmarks: polling first,
    # reading at the end, is safe here.
    while process.poll() is None:
        total_rss = total_ram = 0
        memfds: dict[tuple[int, int], int] = {}
        for pid in processes.tree(process.pid):
            status = processes.status(pid)
            if "VmRSS" not in status:
                continue
            rss, hwm = int(status["VmRSS"]), int(status["VmHWM"])
            total_rss += rss
            total_ram += int(status["RssAnon"]) + int(status["RssFile"])
            if hwm > top.get(pid, (0, ""))[0]:
                top[pid] = (hwm, str(status["Name"]))
            processes.memfds(pid, memfds)
        tree_rss = max(tree_rss, total_rss)
        ram = max(ram, total_ram + sum(memfds.values()) // 1024)
        time.sleep(POLL)
    elapsed = time.perf_counter() - start
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"bench: {command[0]} failed ({process.returncode}): {stderr[-400:]}")
    if reported:
        elapsed = float(stdout.strip().splitlines()[-1].removeprefix("seconds="))
    hwm, name = max(top.values(), default=(0, "?"))
    return Sample(elapsed, tree_rss / 1024, hwm / 1024, name, ram / 1024), stdout


# --- the inputs ----------------------------------------------------------------------------


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def make_video(path: Path, megabytes: int) -> None:
    """An H.264 + AAC MP4 of about `megabytes` MB with camera metadata and its index (moov)
    at the end, as phones write it."""
    seconds = max(1.0, megabytes * 1e6 / VIDEO_BYTES_PER_SECOND)
    partial = path.with_suffix(".partial.mp4")
    _run(
        "ffmpeg", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds:.2f}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds:.2f}",
        "-vf", "noise=alls=7:allf=t",
        "-c:v", "libx264", "-preset", "ultrafast", "-qp", "20", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k",
        "-movflags", "use_metadata_tags",
        "-metadata", f"com.apple.quicktime.make={MAKER}",
        "-metadata", f"com.apple.quicktime.model={MODEL}",
        "-metadata", f"com.apple.quicktime.software={SOFTWARE}",
        "-metadata", f"com.apple.quicktime.author={PERSON}",
        "-metadata", f"com.apple.quicktime.location.name={PLACE}",
        "-metadata", "com.apple.quicktime.location.ISO6709=+31.5017+034.4668+012.000/",
        "-metadata", "creation_time=2024-05-06T07:08:09Z",
        str(partial),
    )  # fmt: skip
    # ffmpeg writes its own name as the encoder tag; put a camera's there instead.
    _run("exiftool", "-q", "-overwrite_original", "-ItemList:Encoder=BenchEncoder9", str(partial))
    partial.rename(path)


def make_jpeg(path: Path) -> None:
    """A 6000x4000 JPEG (24 MP) with EXIF, GPS and XMP."""
    from PIL import Image  # noqa: PLC0415 - only when the file is made

    size = (6000, 4000)
    gradient = Image.linear_gradient("L").resize(size)
    noise = Image.effect_noise(size, 24)
    picture = Image.merge("RGB", (gradient, noise, gradient.rotate(90).resize(size)))
    partial = path.with_suffix(".partial.jpg")
    picture.save(partial, quality=92)
    _run(
        "exiftool", "-q", "-q", "-overwrite_original", "-n",
        f"-Make={MAKER}", f"-Model={MODEL}", f"-Software={SOFTWARE}", f"-Artist={PERSON}",
        f"-ImageDescription={PLACE}", "-SerialNumber=SN-55102938",
        "-GPSLatitude=31.5017", "-GPSLatitudeRef=N", "-GPSLongitude=34.4668",
        "-GPSLongitudeRef=E", "-GPSAltitude=12", "-DateTimeOriginal=2024:05:06 07:08:09",
        f"-XMP-dc:Creator={PERSON}", f"-XMP-photoshop:City={PLACE}",
        f"-XMP-tiff:Make={MAKER}",
        str(partial),
    )  # fmt: skip
    partial.rename(path)


def inputs(folder: Path, video_sizes: list[int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for megabytes in video_sizes:
        path = folder / f"video-{megabytes}mb.mp4"
        if not path.exists():
            print(f"bench: making {path} ...", file=sys.stderr)
            make_video(path, megabytes)
        made.append(path)
    path = folder / "photo-24mp.jpg"
    if not path.exists():
        print(f"bench: making {path} ...", file=sys.stderr)
        make_jpeg(path)
    made.append(path)
    return made


# --- the tools -----------------------------------------------------------------------------


def run_drop(source: Path, workdir: Path) -> tuple[Sample, Path | str]:
    out = workdir / "ours"
    shutil.rmtree(out, ignore_errors=True)
    sample = measure([DROP, "strip", str(source), "-o", str(out)], workdir)
    (result,) = out.iterdir()
    return sample, result


_LIBRARY = """
import sys
sys.path.insert(0, sys.argv[1])
from relay.sanitize import SNIFF_BYTES, Stripping, detect
with open(sys.argv[2], "rb") as src, open(sys.argv[3], "xb") as dst:
    Stripping().clean(detect(src.read(SNIFF_BYTES)), src, dst)
"""


def run_library(source: Path, workdir: Path) -> tuple[Sample, Path | str]:
    out = workdir / f"library{source.suffix}"
    out.unlink(missing_ok=True)
    sample = measure([sys.executable, "-c", _LIBRARY, str(ROOT), str(source), str(out)], workdir)
    return sample, out


_RELAY = """
import hashlib, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from crypto.keys import Identity
from relay.sanitize import SNIFF_BYTES, Stripping, detect
from relay.staging import SealingWriter
from tests.sanitize.relaypath import stage

class Hashing:
    def __init__(self, inner):
        self.inner, self.digest = inner, hashlib.sha256()
    def write(self, data):
        self.digest.update(data)
        return self.inner.write(data)

staged = stage(Path(sys.argv[2]), Path(sys.argv[3]))
recipient = Identity.generate().recipient
start = time.perf_counter()
with staged.open() as reader, open(sys.argv[4], "wb") as sink:
    sealing = SealingWriter(sink, [recipient])
    hashing = Hashing(sealing)
    Stripping().clean(detect(reader.read(SNIFF_BYTES)), reader, hashing)
    sealing.finish()
elapsed = time.perf_counter() - start
staged.discard()
print(hashing.digest.hexdigest())
print(f"seconds={elapsed}")
"""


def run_relay(source: Path, workdir: Path) -> tuple[Sample, Path | str]:
    """The relay's path; returns the SHA-256 of the plaintext it sealed, not a file."""
    sealed = workdir / "relay.age"
    command = [sys.executable, "-c", _RELAY, str(ROOT), str(source), str(workdir / "staging")]
    sample, stdout = measure_output([*command, str(sealed)], workdir, reported=True)
    sealed.unlink()
    return sample, stdout.split()[0]


def run_mat2(source: Path, workdir: Path) -> tuple[Sample, Path | str]:
    """mat2 writes NAME.cleaned.EXT next to its input: the input is linked into a folder
    of its own."""
    folder = workdir / "mat2"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    link = folder / source.name
    link.symlink_to(source)
    sample = measure([MAT2, str(link)], workdir)
    return sample, folder / f"{source.stem}.cleaned{source.suffix}"


def markers_in(path: Path) -> tuple[str, ...]:
    """Which MARKERS occur in the file's bytes (ASCII or UTF-16), read in windows."""
    patterns = {m: [m.encode(e) for e in ("utf-8", "utf-16-le", "utf-16-be")] for m in MARKERS}
    overlap = max(len(p) for ps in patterns.values() for p in ps)
    found: set[str] = set()
    tail = b""
    with path.open("rb") as file:
        while block := file.read(8 * MiB):
            window = tail + block
            found |= {m for m, ps in patterns.items() if any(p in window for p in ps)}
            tail = window[-overlap:]
    return tuple(sorted(found))


TOOLS = {"drop": run_drop, "library": run_library, "relay": run_relay, "mat2": run_mat2}
OURS = ("drop", "library", "relay")


def bench_file(source: Path, runs: int, workdir: Path) -> dict[str, Result]:
    results = {name: Result() for name in TOOLS}
    outputs: dict[str, Path | str] = {}
    for _ in range(runs):
        for name, tool in TOOLS.items():
            warm(source)
            sample, outputs[name] = tool(source, workdir)
            results[name].samples.append(sample)
    results["input"] = Result(tags_left=len(judge.unexpected_tags(source)))
    results["input"].markers_left = markers_in(source)
    library = outputs["library"]
    assert isinstance(library, Path)
    same = outputs["relay"] == hashlib.sha256(library.read_bytes()).hexdigest()
    results["relay"].note = "same bytes as library" if same else "NOT the library's bytes"
    for name, output in outputs.items():
        if isinstance(output, Path):
            results[name].tags_left = len(judge.unexpected_tags(output))
            results[name].markers_left = markers_in(output)
            output.unlink()
    return results


# --- the report ----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--video-mb", type=int, nargs="+", default=[100, 500], help="video sizes (MB)"
    )
    args = parser.parse_args()
    if not Path(MAT2).exists():
        raise SystemExit("bench: mat2 is not installed (Debian: apt-get install mat2)")
    version = subprocess.run([MAT2, "--version"], capture_output=True, text=True).stdout
    files = inputs(args.tmp / "amanah-bench-sanitize", sorted(args.video_mb))
    table: dict[Path, dict[str, Result]] = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for source in files:
            print(f"bench: {source.name} ...", file=sys.stderr)
            table[source] = bench_file(source, args.runs, Path(tmp))

    print(f"amanah (this checkout) against {version.strip()}; medians of {args.runs}")
    print("MB/s over the input's size; memory in MiB, worst run; tags: exiftool, judged as")
    print("the tests judge (input's count first); strings: identifying values found in bytes")
    print()
    header = f"{'file':<18} {'MB':>5} {'tool':<7} {'s':>6} {'MB/s':>6} {'tree RSS':>8}"
    print(f"{header} {'top proc':>17} {'RAM':>6} {'tags':>4}  strings left")
    for source, results in table.items():
        size = source.stat().st_size
        print(
            f"{source.name:<18} {size / 1e6:>5.0f} {'input':<7} {'':>6} {'':>6} {'':>8} "
            f"{'':>17} {'':>6} {results['input'].tags_left:>4}  "
            f"{', '.join(results['input'].markers_left)}"
        )
        for name in TOOLS:
            result = results[name]
            worst = result.worst()
            top = f"{worst.top_rss:.0f} {worst.top_name[:12]}"
            tags = "-" if result.tags_left < 0 else str(result.tags_left)
            left = result.note or ", ".join(result.markers_left) or "none"
            row = f"{source.name:<18} {size / 1e6:>5.0f} {name:<7} {result.seconds:>6.2f}"
            row += f" {size / 1e6 / result.seconds:>6.0f} {worst.tree_rss:>8.0f} {top:>17}"
            print(row + f" {worst.ram:>6.0f} {tags:>4}  {left}")
    print()
    met = True
    for source, results in table.items():
        ratios = {name: results["mat2"].seconds / results[name].seconds for name in OURS}
        met &= ratios["drop"] >= 1.0
        shown = ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items())
        print(f"{source.name}: speed against mat2: {shown} (target: drop >= 1.00)")
    videos = [s for s in table if s.suffix == ".mp4"]
    for source in videos:
        size_mb = source.stat().st_size / 1e6
        for name in OURS:
            worst = table[source][name].worst()
            print(
                f"{name} video at {size_mb:.0f} MB: tree RSS {worst.tree_rss:.0f} MiB, "
                f"RAM with memfds {worst.ram:.0f} MiB (target < 150, flat)"
            )
            met &= worst.tree_rss < 150 and worst.ram < 150
    clean = all(table[s][n].tags_left == 0 for s in table for n in ("drop", "library"))
    clean &= not any(table[s][n].markers_left for s in table for n in OURS)
    clean &= all(table[s]["relay"].note == "same bytes as library" for s in table)
    print("amanah outputs clean by the tests' rule:", "yes" if clean else "NO")
    print("targets (speed >= mat2 per file, video RAM < 150 MiB):", "met" if met else "MISSED")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
