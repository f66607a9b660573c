"""Test media: a video track of a known colour and a collector of received frames."""

from __future__ import annotations

import asyncio
import fractions
import time

import numpy as np
from aiortc import MediaStreamTrack
from av import VideoFrame


class ColourTrack(MediaStreamTrack):
    """320x240 frames of one solid colour at 15 fps."""

    kind = "video"

    def __init__(self, rgb: tuple[int, int, int]) -> None:
        super().__init__()
        self.rgb = rgb
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        self._pts += 6000  # 90 kHz clock / 15 fps
        wait = self._start + self._pts / 90000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        image = np.zeros((240, 320, 3), dtype=np.uint8)
        image[:, :] = self.rgb
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, 90000)
        return frame


async def collect_frames(track, count: int, timeout: float = 20) -> list[np.ndarray]:
    """Receive count decoded frames from a remote track, as RGB arrays."""
    frames = []

    async def run() -> None:
        while len(frames) < count:
            frame = await track.recv()
            frames.append(frame.to_ndarray(format="rgb24"))

    await asyncio.wait_for(run(), timeout)
    return frames


def mean_colour(frame: np.ndarray) -> tuple[int, int, int]:
    """The average colour of a frame's centre."""
    h, w, _ = frame.shape
    centre = frame[h // 4: 3 * h // 4, w // 4: 3 * w // 4]
    return tuple(int(v) for v in centre.reshape(-1, 3).mean(axis=0))


def run_async(coro):
    """asyncio.run() in a thread of its own (Playwright's sync API keeps a loop on the main thread)."""
    import threading

    result: dict = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")
