"""Write a seeded numpy archive of synthetic signal windows for `--dataset npz:PATH`.

    python make_signals.py OUT.npz [--per-class N] [--seed S]

Each example is 0.53 s of sound at 8 kHz: noise, plus for five of the six
classes an event somewhere in the window (a steady low or high tone, a
rising or falling chirp, or two to four short tone bursts) at a random
start, length, frequency and signal-to-noise ratio. As keyword-spotting
front ends do, the waveform becomes a framed log-energy spectrogram: frames
of 32 ms every 16 ms (Hann window, numpy's FFT), the energy summed into 16
frequency bands of equal width, in decibels, clipped to a 60 dB range and
quantized to uint8.

Layout in the archive (docs/your-data.md): x_train, x_test uint8
(N, 16, 1, 32) = (N, bands as channels, 1, frames as width); y_train, y_test
int64 labels 0..5; class_names. The file is written under a temporary name
and renamed, so an interrupted run leaves no half-written archive.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

RATE = 8000  # samples per second
FRAME, HOP, N_FRAMES, N_BANDS = 256, 128, 32, 16
LENGTH = FRAME + (N_FRAMES - 1) * HOP  # 4,224 samples: exactly 32 frames
DB_RANGE = 60.0
CLASSES = ("noise", "low-tone", "high-tone", "up-chirp", "down-chirp", "bursts")


def _tone(freq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sine whose frequency follows ``freq`` (Hz per sample), random phase."""
    return np.sin(2 * np.pi * np.cumsum(freq) / RATE + rng.uniform(0, 2 * np.pi))


def _event(label: int, rng: np.random.Generator) -> np.ndarray:
    """The class's event, zero outside it, at unit amplitude."""
    out = np.zeros(LENGTH)
    if label == 0:
        return out
    n = int(rng.uniform(0.4, 0.8) * LENGTH)
    start = int(rng.integers(0, LENGTH - n + 1))
    if label in (1, 2):
        f = rng.uniform(250, 700) if label == 1 else rng.uniform(1800, 3200)
        freq = np.full(n, f)
    elif label in (3, 4):
        lo, hi = rng.uniform(300, 900), rng.uniform(2500, 3600)
        freq = np.linspace(lo, hi, n) if label == 3 else np.linspace(hi, lo, n)
    else:
        freq = np.zeros(n)
        for _ in range(int(rng.integers(2, 5))):
            b = int(rng.uniform(0.04, 0.08) * RATE)
            at = int(rng.integers(0, n - b))
            freq[at : at + b] = rng.uniform(400, 3400)
    wave = _tone(freq, rng) * (freq > 0)
    ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / 80)  # 10 ms fade in and out
    out[start : start + n] = wave * ramp
    return out


def example(label: int, rng: np.random.Generator) -> np.ndarray:
    """One window's waveform: the event at a random SNR (3..20 dB) over coloured noise."""
    noise = rng.normal(size=LENGTH)
    noise = np.convolve(noise, np.ones(int(rng.integers(1, 4))) / 2, mode="same")  # some low-pass
    event = _event(label, rng)
    snr_db = rng.uniform(3, 20)
    gain = 0.0
    if event.any():  # the event's power, where it sounds, snr_db above the noise's
        gain = np.sqrt(np.mean(noise**2) * 10 ** (snr_db / 10) / np.mean(event[event != 0] ** 2))
    return (event * gain + noise) * rng.uniform(0.1, 1.0)  # and a random level


def features(wave: np.ndarray) -> np.ndarray:
    """Framed log-energy spectrogram: uint8 (N_BANDS, 1, N_FRAMES), louder = larger."""
    frames = np.lib.stride_tricks.sliding_window_view(wave, FRAME)[::HOP] * np.hanning(FRAME)
    power = np.abs(np.fft.rfft(frames, axis=1)[:, 1:]) ** 2  # (32, 128), the DC bin left out
    bands = power.reshape(N_FRAMES, N_BANDS, -1).sum(axis=2).T  # (16, 32): 250 Hz per band
    db = 10 * np.log10(bands + 1e-10)
    db = np.clip(db - (db.max() - DB_RANGE), 0, DB_RANGE)  # the loudest cell is the top of the range
    return np.rint(db * (255 / DB_RANGE)).astype(np.uint8)[:, None, :]


def make(per_class: int, seed: int) -> dict[str, np.ndarray]:
    """The archive's arrays: ``per_class`` examples of each class, a fifth of them to test."""
    rng = np.random.default_rng(seed)
    n_test = max(1, per_class // 5)
    split: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], [])}
    for label in range(len(CLASSES)):
        for i in range(per_class):
            xs, ys = split["test" if i < n_test else "train"]
            xs.append(features(example(label, rng)))
            ys.append(label)
    arrays = {}
    for name, (xs, ys) in split.items():
        order = rng.permutation(len(ys))
        arrays[f"x_{name}"] = np.stack(xs)[order]
        arrays[f"y_{name}"] = np.asarray(ys, dtype=np.int64)[order]
    arrays["class_names"] = np.asarray(CLASSES)
    return arrays


def save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help=".npz file to write (replaced if it exists)")
    p.add_argument("--per-class", type=int, default=500, help="examples of each class (default 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of everything random (default 0)")
    args = p.parse_args(argv)
    if args.per_class < 2:
        p.error("--per-class must be at least 2")
    arrays = make(args.per_class, args.seed)
    save(args.out, arrays)
    x = arrays["x_train"]
    print(
        f"{args.out}: {len(x)} train and {len(arrays['x_test'])} test windows, {len(CLASSES)} classes, "
        f"uint8 {tuple(x.shape[1:])} (bands, 1, frames)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
