"""Recording: frames per step, bounded by thinning; GIF/MP4/PNG/latents export; overlay colours."""

from __future__ import annotations

import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from dragnb.drag.recording import HANDLE_COLOR, TARGET_COLOR, Recording, draw_points
from dragnb.session import DragSession


def test_session_records_and_exports(tiny_generator, tmp_path):
    s = DragSession(tiny_generator, seed=0, tolerance=0.5)
    s.add_point(handle=(36, 30), target=(44, 30))
    results = list(s.run(6))
    assert len(s.recording) == len(results) == 6
    assert s.recording.steps() == [r.step for r in results]

    gif = s.export_gif(tmp_path / "drag.gif")
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == 6 and frames.shape[1:3] == (64, 64)

    mp4 = s.export_mp4(tmp_path / "drag.mp4", overlays=False)
    frames = _mp4_frames(mp4)
    assert frames.shape[0] == 6 and frames.shape[1:3] == (64, 64)

    big = s.export_gif(tmp_path / "big.gif", size=128)
    assert iio.imread(big, index=None).shape[1:3] == (128, 128)

    png = s.export_png(tmp_path / "final.png")
    np.testing.assert_array_equal(np.asarray(Image.open(png).convert("RGB")), s.image)
    first = s.recording.export_png(tmp_path / "first.png", index=0)
    np.testing.assert_array_equal(np.asarray(Image.open(first).convert("RGB")), results[0].image)

    lat = np.load(s.export_latents(tmp_path / "ws.npy"))
    assert lat.shape == (6, tiny_generator.num_ws, tiny_generator.w_dim) and lat.dtype == np.float32


def _mp4_frames(path) -> np.ndarray:
    import imageio.v2 as imageio

    with imageio.get_reader(path, format="FFMPEG") as r:
        return np.stack(list(r.iter_data()))


def test_thinning_bounds_the_frame_count(tmp_path):
    rec = Recording(max_frames=4)
    img = np.zeros((8, 8, 3), np.uint8)
    for step in range(21):
        rec.add(step, img + step, [(1, 1)], [(5, 5)])
        assert len(rec) <= 5
    steps = rec.steps()
    assert steps[0] == 0 and steps[-1] == 20  # spans the whole drag, latest frame kept
    gaps = np.diff(steps[:-1])
    assert (gaps == gaps[0]).all()  # evenly spaced
    files = list(rec._dir.iterdir())
    assert len(files) == len(rec)  # dropped frames are deleted from disk
    rec.close()
    assert not rec._dir.exists()


def test_frames_are_written_behind_the_step_exactly(tmp_path):
    """The writer thread keeps each frame's pixels (a copy: the caller may reuse its array) and ws exactly; a
    write that failed is raised at the next read, not lost."""
    rec = Recording()
    img = np.random.default_rng(0).integers(0, 256, (16, 12, 3), dtype=np.uint8)
    ws = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    for step in range(12):
        rec.add(step, img, [(1, 1)], [(5, 5)], ws + step)
        img[0, 0] = 255 - step  # reused by the caller after add()
    assert rec.steps() == list(range(12))
    assert rec.image(3)[0, 0, 0] == 255 - 2 and (rec.image(3)[1:] == img[1:]).all()
    np.testing.assert_array_equal(np.load(rec.export_latents(tmp_path / "ws.npy"))[5], ws[0] + 5)
    rec.close()
    rec.add(12, img, [(1, 1)], [(5, 5)])  # its folder is gone: the write fails on the writer thread
    with pytest.raises(OSError, match="could not be written"):
        rec.flush()


def test_overlay_colours():
    img = np.full((64, 64, 3), 128, np.uint8)
    out = draw_points(img, [(10, 20)], [(50, 40)])
    assert tuple(out[20, 10]) == HANDLE_COLOR  # [row, col] = [y, x]
    assert tuple(out[40, 50]) == TARGET_COLOR
    red = np.full((64, 64, 3), HANDLE_COLOR, np.uint8)  # a red handle on red (lips): its white ring shows it
    ringed = draw_points(red, [(10, 20)], [(50, 40)])
    assert (ringed[20, 7:14] == 255).all(axis=1).any() and (ringed[20, 7:14] == HANDLE_COLOR).all(axis=1).any()
    assert (img == 128).all()  # drawn on a copy


def test_frame_folder_goes_with_close_collection_and_exit(tmp_path):
    """The folder of frames is removed by close(), by garbage collection, and at interpreter exit even when
    something (a widget) keeps the recording alive to the end."""
    import gc
    import subprocess
    import sys

    img = np.zeros((8, 8, 3), np.uint8)
    rec = Recording()
    rec.add(0, img, [(1, 1)], [(5, 5)])
    folder = rec._dir
    assert rec.frames and folder.is_dir()
    rec.close()
    assert not folder.exists()

    rec = Recording()
    rec.add(0, img, [(1, 1)], [(5, 5)])
    folder = rec._dir
    rec.flush()  # a write in flight holds the recording until it is done
    del rec
    gc.collect()
    assert not folder.exists()

    code = ("import numpy as np; from dragnb.drag.recording import Recording\n"
            "KEEP = [Recording()]\n"
            "for i in range(20): KEEP[0].add(i, np.full((64, 64, 3), i, np.uint8), [(1, 1)], [(5, 5)])\n"
            "print(KEEP[0]._dir)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() and not Path(out.strip()).exists()


def test_folders_of_killed_processes_are_swept(tmp_path):
    """A process killed outright leaves its folder; the next process that records deletes it, and leaves the
    folders of processes still running alone."""
    import os
    import subprocess
    import sys
    import tempfile

    from dragnb.drag.recording import PREFIX

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    orphan = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{dead}-"))
    (orphan / "0000001.rgbz").write_bytes(b"x")
    alive = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    try:
        code = "from dragnb.drag.recording import Recording; Recording().close()"
        subprocess.run([sys.executable, "-c", code], check=True)
        assert not orphan.exists()
        assert alive.is_dir()
    finally:
        shutil.rmtree(orphan, ignore_errors=True)
        shutil.rmtree(alive, ignore_errors=True)
