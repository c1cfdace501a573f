"""Peak memory of the ingest pipeline's analysis step on a long file, against the imports.

    python -m bench.analysis_memory [--minutes 60] [--max-seconds 120] [--columns 1800]
    python -m bench.analysis_memory --wav long.wav     # an existing file, kept

Writes a ``--minutes`` long 44.1 kHz 16-bit stereo WAV (noise with a click every half
second, ten seconds at a time, never whole in memory; 635 MB for 60 minutes) in a
temporary directory, then runs each of these in a fresh interpreter, ``--rounds`` times:

- **imports**: imports numpy, soundfile and ``tasks.ingest.analysis`` and reads nothing;
- **features**: ``read_audio`` + ``extract_features`` on the middle ``--max-seconds``;
- **analyse**: ``tasks.ingest.analysis.analyse(path, max_seconds, columns)``, the step
  the pipeline runs: the whole-file streaming pass and the features of the excerpt.

Each child prints its own peak RSS (VmHWM); the table gives the median over the rounds and
each run's growth over the imports'. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

RATE = 44_100
CHANNELS = 2
BYTES_PER_FRAME = CHANNELS * 2  # PCM_16
WRITE_BLOCK_SECONDS = 10

# Run in the child: nothing but the imports before the work, so that its high-water mark
# is the imports' plus the work's and nothing of this process's.
CHILD = """
import resource, sys, time
from pathlib import Path
import numpy, soundfile
from tasks.analysis.audio_features import extract_features, read_audio
from tasks.ingest.analysis import analyse
what, path = sys.argv[1], Path(sys.argv[2])
max_seconds, columns = float(sys.argv[3]), int(sys.argv[4])
started = time.perf_counter()
if what == "features":
    extract_features(*read_audio(path, max_seconds))
elif what == "analyse":
    analyse(path, max_seconds=max_seconds, columns=columns)
took = time.perf_counter() - started
try:
    status = Path("/proc/self/status").read_text().splitlines()
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print(peak_kib, took)
"""

RUNS = ("imports", "features", "analyse")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_wav(path: Path, minutes: float, seed: int = 1) -> None:
    """Noise at -20 dBFS and a 10 ms burst every half second, the channels unlike."""
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * RATE)
    block = WRITE_BLOCK_SECONDS * RATE
    beat = RATE // 2
    burst = np.exp(-np.arange(RATE // 100) / (0.002 * RATE))
    with soundfile.SoundFile(path, "w", RATE, CHANNELS, subtype="PCM_16") as out:
        for start in range(0, total, block):
            frames = min(block, total - start)
            signal = 0.1 * rng.standard_normal((frames, CHANNELS))
            # block is a whole number of beats, so every block's bursts sit at the same offsets
            for offset in range(0, frames, beat):
                end = min(offset + len(burst), frames)
                signal[offset:end, 0] += 0.8 * burst[: end - offset]
                signal[offset:end, 1] += 0.6 * burst[: end - offset]
            out.write(np.clip(signal, -1, 1).astype(np.float32))


def peak_of(what: str, path: Path, max_seconds: float, columns: int) -> tuple[float, float]:
    """One fresh interpreter's peak RSS in MB and the seconds its work took."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, what, str(path), str(max_seconds), str(columns)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    peak_kib, took = done.stdout.split()[-2:]
    return int(peak_kib) / 1024, float(took)


def measure(path: Path, args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    peaks: dict[str, list[float]] = {what: [] for what in RUNS}
    seconds: dict[str, list[float]] = {what: [] for what in RUNS}
    for round_ in range(args.rounds):
        for what in RUNS:  # interleaved, so a drift in the machine touches every run alike
            peak, took = peak_of(what, path, args.max_seconds, args.columns)
            log(f"round {round_ + 1}: {what}: {peak:.1f} MB, {took:.2f} s")
            peaks[what].append(peak)
            seconds[what].append(took)
    return {
        what: (statistics.median(peaks[what]), statistics.median(seconds[what])) for what in RUNS
    }


def table(path: Path, figures: dict[str, tuple[float, float]], args: argparse.Namespace) -> str:
    info = soundfile.info(str(path))
    base = figures["imports"][0]
    lines = [
        f"{path.name}: {info.duration / 60:.1f} min, {info.samplerate} Hz, "
        f"{info.channels} channels, {path.stat().st_size / 1e6:.0f} MB on disk; "
        f"excerpt {args.max_seconds:g} s, {args.columns} columns; "
        f"median of {args.rounds} fresh interpreters each",
        "",
        f"{'run':<10}{'peak RSS MB':>13}{'over imports':>14}{'seconds':>10}",
    ]
    for what in RUNS:
        peak, took = figures[what]
        growth = f"{peak - base:>14.1f}" if what != "imports" else f"{'':>14}"
        lines.append(f"{what:<10}{peak:>13.1f}{growth}{took:>10.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the WAV written")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="excerpt analysed")
    parser.add_argument("--columns", type=int, default=1800, help="waveform columns")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wav", type=Path, help="measure this file instead of writing one")
    parser.add_argument("--directory", type=Path, help="where to write the WAV (default: temp)")
    args = parser.parse_args()
    if args.wav is not None:
        print(table(args.wav, measure(args.wav, args), args))
        return
    with tempfile.TemporaryDirectory(dir=args.directory) as directory:
        path = Path(directory) / f"bench-{args.minutes:g}min.wav"
        needed = int(args.minutes * 60 * RATE) * BYTES_PER_FRAME
        free = shutil.disk_usage(directory).free
        if free < needed + (1 << 30):  # a gigabyte to spare for everyone else
            parser.error(
                f"{directory} has {free / 1e9:.1f} GB free; the WAV needs {needed / 1e9:.1f} GB "
                "and a gigabyte to spare (--directory, --minutes)"
            )
        log(f"writing {needed / 1e6:.0f} MB to {path}")
        write_wav(path, args.minutes)
        print(table(path, measure(path, args), args))


if __name__ == "__main__":
    main()
