"""NIST SPHERE audio (TIMIT's .WAV files), and RIFF WAVE, to which some copies convert them.

A SPHERE file is an ASCII header, "NIST_1A\\n", the header's size in bytes ("   1024\\n"), then
"key -type value" lines up to "end_head", padded to that size, followed by the samples. TIMIT
(LDC93S1) stores uncompressed 16-bit PCM ("sample_coding" absent or "pcm"), one channel, 16 kHz,
little-endian ("sample_byte_format -s2 01"). Other LDC corpora use shorten-compressed SPHERE
("pcm,embedded-shorten-v2.00"): those must first be decompressed with LDC's sph2pipe.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from asymbp.data.layout import Layout

SPHERE_MAGIC = b"NIST_1A"
BYTE_ORDERS = {"01": "<i2", "10": ">i2"}


def _header(layout: Layout, path: Path, data: bytes) -> tuple[dict[str, str], int]:
    """The "key -type value" fields of a SPHERE header (values as text), and its size."""
    lines = data.split(b"\n", 2)
    try:
        size = int(lines[1])
    except (IndexError, ValueError):
        raise layout.corrupt(path, "bad SPHERE header: no header size on its 2nd line") from None
    if len(data) < size:
        raise layout.corrupt(path, f"truncated: {len(data)} bytes, its header declares {size}")
    fields = {}
    for line in data[:size].decode("ascii", "replace").splitlines()[2:]:
        if line.strip() == "end_head":
            return fields, size
        parts = line.split(None, 2)
        if len(parts) == 3:
            fields[parts[0]] = parts[2].strip()
    raise layout.corrupt(path, f"bad SPHERE header: no end_head in its {size} bytes")


def _read_sphere(layout: Layout, path: Path, data: bytes) -> tuple[np.ndarray, int]:
    fields, size = _header(layout, path, data)
    coding = fields.get("sample_coding", "pcm")
    if coding != "pcm":
        raise layout.corrupt(
            path, f"sample_coding {coding!r}: compressed SPHERE; decompress it with LDC's sph2pipe"
        )
    layout_fields = (fields.get("channel_count", "1"), fields.get("sample_n_bytes", "2"))
    order = BYTE_ORDERS.get(fields.get("sample_byte_format", "01"))
    if layout_fields != ("1", "2") or order is None or "sample_count" not in fields:
        raise layout.corrupt(
            path, f"unsupported SPHERE samples {fields}: expected mono 16-bit PCM with a count"
        )
    count, body = int(fields["sample_count"]), data[size:]
    if len(body) < 2 * count:
        raise layout.corrupt(
            path, f"truncated: its header declares {count} samples ({2 * count} bytes), "
            f"it holds {len(body)} bytes of samples",
        )  # fmt: skip
    samples = np.frombuffer(body, dtype=order, count=count)
    return samples, int(fields.get("sample_rate", "16000"))


def _read_riff(layout: Layout, path: Path) -> tuple[np.ndarray, int]:
    try:
        with wave.open(str(path), "rb") as file:
            shape = (file.getnchannels(), file.getsampwidth(), file.getnframes())
            rate, frames = file.getframerate(), file.readframes(file.getnframes())
    except (wave.Error, EOFError, OSError) as error:
        raise layout.corrupt(path, f"not a readable WAVE file ({error})") from None
    if shape[:2] != (1, 2):
        raise layout.corrupt(path, f"{shape[0]} channels of {shape[1]} bytes: expected mono 16 bit")
    if len(frames) < 2 * shape[2]:
        raise layout.corrupt(path, f"truncated: {len(frames)} bytes for {shape[2]} samples")
    return np.frombuffer(frames, dtype="<i2"), rate


def read_audio(layout: Layout, path: Path) -> tuple[np.ndarray, int]:
    """(float32 samples in [-1, 1), sample rate) of a mono 16-bit SPHERE or RIFF WAVE file."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise layout.corrupt(path, f"cannot read it ({error})") from None
    if data.startswith(b"RIFF"):
        samples, rate = _read_riff(layout, path)
    elif data.startswith(SPHERE_MAGIC):
        samples, rate = _read_sphere(layout, path, data)
    else:
        raise layout.corrupt(
            path, f"bad magic number {data[:7]!r}: not a NIST SPHERE ({SPHERE_MAGIC!r}) file"
        )
    return samples.astype(np.float32) / 32768.0, rate
