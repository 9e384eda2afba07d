"""Recording of a drag: every step's frame and points, kept on disk so memory stays bounded; GIF/MP4/PNG export.

Frames are files in a temporary folder: the pixels zlib-compressed (level 1,
lossless); RAM holds only the points and step indices. A writer thread compresses and writes them (and
deletes thinned ones, in order) behind the step that made them, so a step does not wait for them; zlib
compresses without holding Python's GIL, so the writer does not hold up the step thread either. At most
``PENDING`` frames wait in memory, and every reader waits for the writes first. When more than
``max_frames`` frames have been kept, every other one is dropped and from then on only every 2nd (4th, ...)
step is kept, so a long drag still spans its whole length; the latest frame is always kept.

The folder goes with the recording: on :meth:`Recording.close`, when it is garbage collected, or at the latest
when the interpreter exits (a widget keeps its session alive to the end). A process killed outright (a kernel
restart that had to kill) cannot clean up: its folder is named after its process id, and the next recording made
on the machine deletes the folders of processes that no longer exist.

Overlays: handle points red, targets blue, an arrow from each handle to its target (Pillow drawing).
Points are (x, y) image pixels, as everywhere in the public API.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HANDLE_COLOR = (230, 30, 30)
TARGET_COLOR = (30, 80, 240)
PENDING = 8  # frames waiting for the writer at most: a step waits beyond it (a slow disk), memory stays bounded
PREFIX = "dragnb-frames-"  # + "<pid>-" + mkdtemp's random part


def draw_points(image: np.ndarray, handles_xy, targets_xy) -> np.ndarray:
    """uint8 [H, W, 3] with each handle (red), target (blue), ringed white, and an arrow handle -> target drawn
    on a copy."""
    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    draw = ImageDraw.Draw(im)
    size = min(im.size)
    r = max(1.5, size / 64)          # point radius, pixels
    width = max(1, round(size / 256))  # arrow line width
    for (hx, hy), (tx, ty) in zip(np.reshape(handles_xy, (-1, 2)), np.reshape(targets_xy, (-1, 2))):
        d = np.array([tx - hx, ty - hy], dtype=np.float64)
        n = np.hypot(*d)
        if n > 0:
            u = d / n
            head = min(3 * r, n)  # arrowhead length
            base = np.array([tx, ty]) - u * head
            perp = np.array([-u[1], u[0]]) * head * 0.5
            draw.line([(hx, hy), tuple(base)], fill=(255, 255, 255), width=width)
            draw.polygon([(tx, ty), tuple(base + perp), tuple(base - perp)], fill=(255, 255, 255))
        # A white ring around each point: red handles stay visible on red lips, blue targets on blue eyes.
        ring = max(1, round(r / 3))
        draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=HANDLE_COLOR, outline=(255, 255, 255), width=ring)
        draw.ellipse([tx - r, ty - r, tx + r, ty + r], fill=TARGET_COLOR, outline=(255, 255, 255), width=ring)
    return np.asarray(im)


def _write_image(path: Path, image: np.ndarray) -> None:
    """uint8 [H, W, C] -> ``path``: H, W, C as int32, then the zlib-compressed pixels."""
    path.write_bytes(np.array(image.shape, np.int32).tobytes() + zlib.compress(image.tobytes(), 1))


def _remove_tree(path: Path) -> None:
    """Delete a frame folder; a second pass if a write still in flight created a file during the first."""
    for _ in range(2):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (PermissionError), or not a pid we can ask about
        return True
    return True


_swept = False


def _sweep_orphans() -> None:
    """Once per process: delete the frame folders of processes that no longer exist (killed without cleaning up).
    Only folders this user owns can be deleted; a reused pid keeps its folder (harmless: the next sweep after that
    process gets it)."""
    global _swept
    if _swept or os.name == "nt":  # Windows' os.kill(pid, 0) would terminate the process, not probe it
        return
    _swept = True
    try:
        entries = list(Path(tempfile.gettempdir()).glob(PREFIX + "*-*"))
    except OSError:
        return
    for path in entries:
        pid = path.name[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            _remove_tree(path)


def _read_image(path: Path) -> np.ndarray:
    """What :func:`_write_image` wrote, as uint8 [H, W, C]."""
    data = path.read_bytes()
    shape = tuple(int(v) for v in np.frombuffer(data[:12], np.int32))
    return np.frombuffer(zlib.decompress(data[12:]), np.uint8).reshape(shape)


@dataclass
class Frame:
    step: int                # session step index of this frame
    handles_xy: np.ndarray   # float [P, 2] handles shown in the frame (tracked at that step)
    targets_xy: np.ndarray   # float [P, 2]
    file: Path               # the image (no overlays): see _write_image
    ws_file: Path | None     # .npy of the ws [1, num_ws, w_dim] that produced the image


class Recording:
    """The frames of a session's drags; bounded memory (files on disk) and bounded count (thinning).

    Args:
        max_frames: most frames kept; beyond it the recording thins itself (see the module docstring).
    """

    def __init__(self, max_frames: int = 2000):
        if max_frames < 2:
            raise ValueError("max_frames must be >= 2")
        self.max_frames = max_frames
        _sweep_orphans()
        self._dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        # Runs once: at close(), at garbage collection, or at interpreter exit (it holds no reference to self).
        self._remove_dir = weakref.finalize(self, _remove_tree, self._dir)
        self._frames: list[Frame] = []
        self._stride = 1       # keep every stride-th offered frame
        self._offered = 0      # frames offered since the last clear
        self._counter = 0      # unique file names
        self._tail: Frame | None = None  # the latest offered frame when thinning skipped it
        self._writer: ThreadPoolExecutor | None = None  # one thread: file work in the order it was asked for
        self._room = threading.BoundedSemaphore(PENDING)
        self._error: BaseException | None = None        # the first failed file operation, raised by a reader

    def __len__(self) -> int:
        return len(self._frames) + (self._tail is not None)

    @property
    def frames(self) -> list[Frame]:
        """The kept frames in step order (the latest always included), their files written."""
        frames = self._frames + ([self._tail] if self._tail is not None else [])
        self.flush()
        return frames

    def flush(self) -> None:
        """Wait until every frame asked for so far is on disk; raise the first file error since the last flush."""
        if self._writer is not None:
            self._writer.submit(lambda: None).result()  # one FIFO thread: done after everything before it
        error, self._error = self._error, None
        if error is not None:
            raise OSError(f"a recorded frame could not be written: {error}") from error

    def _in_writer(self, fn, *args, pending: bool = False) -> None:
        """Run ``fn(*args)`` on the writer thread, after the file work asked for before (``pending``: it holds
        a frame in memory, one of the ``PENDING`` allowed)."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="dragnb-recording")
        if pending:
            self._room.acquire()

        def run():
            try:
                fn(*args)
            except Exception as e:  # kept for the next reader: the step that asked has returned
                self._error = self._error or e
            finally:
                if pending:
                    self._room.release()

        self._writer.submit(run)

    @staticmethod
    def _write(stem: Path, image: np.ndarray, ws: np.ndarray | None) -> None:
        _write_image(stem.with_suffix(".rgbz"), image)
        if ws is not None:
            np.save(stem.with_suffix(".npy"), ws)

    def add(self, step: int, image: np.ndarray, handles_xy, targets_xy, ws: np.ndarray | None = None) -> None:
        """Keep one frame: ``image`` uint8 [H, W, 3], points (x, y) [P, 2], optionally the ws that made it
        (copies: the caller may reuse its arrays; the files are written behind)."""
        self._counter += 1
        stem = self._dir / f"{self._counter:07d}"
        ws = None if ws is None else np.array(ws, dtype=np.float32)
        self._in_writer(self._write, stem, np.array(image, dtype=np.uint8), ws, pending=True)
        ws_file = None if ws is None else stem.with_suffix(".npy")
        frame = Frame(step, np.array(handles_xy, float).reshape(-1, 2), np.array(targets_xy, float).reshape(-1, 2),
                      stem.with_suffix(".rgbz"), ws_file)
        keep = self._offered % self._stride == 0
        self._offered += 1
        if self._tail is not None:
            self._delete(self._tail)
            self._tail = None
        if not keep:
            self._tail = frame
            return
        self._frames.append(frame)
        if len(self._frames) > self.max_frames:
            for f in self._frames[1::2]:
                self._delete(f)
            self._frames = self._frames[::2]
            self._stride *= 2  # kept frames stay at offered indices 0, stride, 2 stride, ...

    def clear(self) -> None:
        for f in self._frames + ([self._tail] if self._tail is not None else []):
            self._delete(f)
        self._frames, self._tail = [], None
        self._stride, self._offered = 1, 0

    def close(self, wait: bool = True) -> None:
        """Stop the writer (``wait``: after its work) and delete the frame folder (also done when the recording
        is garbage collected)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=wait, cancel_futures=not wait)
        self._remove_dir()
        self._frames, self._tail = [], None

    def _delete(self, frame: Frame) -> None:
        """Delete a frame's files once its writes are done (on the writer thread, in order)."""
        self._in_writer(self._unlink, frame.file, frame.ws_file)

    @staticmethod
    def _unlink(*paths) -> None:
        for p in paths:
            if p is not None:
                p.unlink(missing_ok=True)

    # ------------------------------------------------------------------ reading

    def image(self, index: int = -1, overlays: bool = False, size: int | None = None) -> np.ndarray:
        """Frame ``index`` as uint8 [H, W, 3]; ``size`` rescales the longer side to that many pixels."""
        frames = self.frames
        if not frames:
            raise ValueError("the recording is empty: run some steps first")
        f = frames[index]
        img = Image.fromarray(_read_image(f.file)).convert("RGB")
        scale = 1.0
        if size is not None and size != max(img.size):
            scale = size / max(img.size)
            new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            img = img.resize(new, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST)
        arr = np.asarray(img)
        if overlays:  # drawn after scaling so the marks stay crisp; pixel centres scale as (p + 0.5) s - 0.5
            arr = draw_points(arr, (f.handles_xy + 0.5) * scale - 0.5, (f.targets_xy + 0.5) * scale - 0.5)
        return arr

    def _images(self, overlays: bool, size: int | None):
        for i in range(len(self.frames)):
            yield self.image(i, overlays, size)

    # ------------------------------------------------------------------ export

    def export_gif(self, path, overlays: bool = True, fps: float = 10, size: int | None = None) -> Path:
        """Animated GIF of all kept frames, looping.

        Pillow merges consecutive frames that are pixel-identical (after palette reduction) into one longer frame.
        """
        path = Path(path)
        images = [Image.fromarray(a) for a in self._images(overlays, size)]
        if not images:
            raise ValueError("the recording is empty: run some steps first")
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        return path

    def export_mp4(self, path, overlays: bool = True, fps: float = 10, size: int | None = None) -> Path:
        """H.264 MP4 of all kept frames (imageio's ffmpeg plugin); odd sizes are padded by one edge pixel."""
        import imageio.v2 as imageio

        path = Path(path)
        if not self.frames:
            raise ValueError("the recording is empty: run some steps first")
        writer = imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    macro_block_size=1, ffmpeg_log_level="error")
        try:
            for a in self._images(overlays, size):
                h, w = a.shape[:2]
                # yuv420p needs even sizes.
                a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                writer.append_data(a)
        finally:
            writer.close()
        return path

    def export_png(self, path, index: int = -1, overlays: bool = False, size: int | None = None) -> Path:
        """One frame (default: the latest) as PNG."""
        path = Path(path)
        Image.fromarray(self.image(index, overlays, size)).save(path)
        return path

    def export_latents(self, path) -> Path:
        """float32 [T, num_ws, w_dim] .npy of the ws of every kept frame (frames recorded without ws are skipped)."""
        files = [f.ws_file for f in self.frames if f.ws_file is not None]
        if not files:
            raise ValueError("the recording holds no latents")
        path = Path(path)
        np.save(path, np.concatenate([np.load(p) for p in files], axis=0))
        return path

    def steps(self) -> list[int]:
        """Session step index of each kept frame."""
        return [f.step for f in self.frames]

