"""Procedural cartoon faces: the data set of the bundled ``toyfaces`` model.

A face is 19 parameters, each a uniform-ish number in a documented range (``PARAMS``). They come from the
*normalised* latent ``z * rsqrt(mean(z**2) + 1e-8)`` (what the generator's mapping network sees), one
component each through the normal CDF, so the network input carries exactly the face's information.

Drawing: every part is an implicit shape in face-local coordinates (rotated by the head tilt), painted in
a fixed order into a label map at 4x the output size; the 4x4 box average of the one-hot labels gives the
anti-aliased part masks, and the image is masks x per-face part colours. Each part has one flat colour
close to its nominal colour in ``PART_COLORS``, so nearest-colour segmentation (``segment``) recovers the
parts from a rendered *or generated* image.

Coordinates follow the project convention: points are ``(x, y)`` in output pixels, x right, y down,
pixel centres at integers; arrays are ``[row, col]``.
"""

from __future__ import annotations

import math

import numpy as np

# ----------------------------------------------------------------------------
# Tables

# Parts in painting order (later parts cover earlier ones); index = label value.
PARTS = ("background", "hair", "face", "eye_white", "pupil", "nose", "mouth")

# Nominal part colours (RGB uint8). Skin and hair vary per face within +-SKIN/HAIR_VARIATION of these;
# the others are fixed. Far apart in RGB; edge blends between parts are handled by classify() (TOUCHING).
PART_COLORS = {
    "background": (150, 200, 235),  # pale sky blue
    "hair": (120, 70, 30),          # brown
    "face": (240, 195, 150),        # skin
    "eye_white": (255, 255, 255),
    "pupil": (25, 25, 60),          # near-black navy
    "nose": (215, 110, 180),        # pink-violet, off the skin-mouth line
    "mouth": (175, 20, 40),         # crimson
}
SKIN_VARIATION = np.array([-12.0, -14.0, -14.0])  # skin_tone 0 -> nominal + this, 1 -> nominal - this
HAIR_VARIATION = np.array([-25.0, -12.0, -4.0])   # hair_tone 0 -> nominal + this, 1 -> nominal - this

# The small parts the model must learn and that drags move; training up-weights them.
SMALL_PARTS = ("eye_white", "pupil", "nose", "mouth")

# (name, low, high, meaning). Lengths are fractions of the image width W unless said otherwise;
# "ry" is the head's vertical radius.
PARAMS = (
    ("head_x", 0.43, 0.57, "head centre x / W"),
    ("head_y", 0.50, 0.58, "head centre y / W"),
    ("head_ry", 0.27, 0.34, "head vertical radius / W"),
    ("head_aspect", 0.84, 0.96, "head horizontal / vertical radius"),
    ("tilt", -10.0, 10.0, "head roll in degrees, clockwise on screen"),
    ("eye_spacing", 0.40, 0.48, "half the distance between the eye centres / ry (before the per-eye shifts)"),
    ("eye_size", 0.16, 0.22, "eye white vertical radius / ry (horizontal 1.2x, pupil radius 0.55x)"),
    ("gaze_x", -1.0, 1.0, "pupil offset inside the eye white, fraction of the free travel"),
    ("gaze_y", -1.0, 1.0, "pupil offset inside the eye white, fraction of the free travel"),
    ("mouth_width", 0.28, 0.50, "mouth half-width / ry"),
    ("mouth_curve", -1.0, 1.0, "smile (+) or frown (-): middle of the mouth 0.12 ry below (+) its corners"),
    ("mouth_open", 0.0, 1.0, "mouth thickness at the middle: 0.13 ry + 0.17 ry x this"),
    ("hair_depth", 0.25, 0.50, "fringe depth from the top of the head / ry"),
    ("hair_volume", 0.04, 0.16, "hair outline beyond the head / ry"),
    ("skin_tone", 0.0, 1.0, "0 lighter, 1 darker"),
    ("hair_tone", 0.0, 1.0, "0 lighter, 1 darker"),
    # Each eye and the mouth also move on their own, so that a drag of one eye or of one mouth corner can be
    # met by that part alone: without these, the data has no face whose one eye sits elsewhere, and the
    # optimiser meets such drags with gaze or a head shift (docs/models.md, "Drag defaults").
    ("eye_dx_left", -0.12, 0.12, "extra sideways shift of the image-left eye / ry (+ = right on screen)"),
    ("eye_dx_right", -0.12, 0.12, "extra sideways shift of the image-right eye / ry (+ = right on screen)"),
    ("mouth_dx", -0.15, 0.15, "sideways shift of the mouth from the head's centre line / ry"),
)
PARAM_NAMES = tuple(p[0] for p in PARAMS)
NUM_PARAMS = len(PARAMS)  # 19 = the toy model's z_dim

SUPERSAMPLE = 4
EYE_Y = -0.12                # eye centre height / ry (up is negative)
EYE_ASPECT = 1.2             # eye white horizontal / vertical radius
PUPIL_SIZE = 0.55            # pupil radius / eye white vertical radius
NOSE_Y, NOSE_R = 0.20, (0.11, 0.14)  # nose centre / ry, radii (x, y) / ry
MOUTH_Y = 0.52               # mouth corner-line height / ry
MOUTH_CURVE = 0.12           # |middle - corners| at mouth_curve = +-1, / ry
MOUTH_THICK = (0.13, 0.17)   # mouth thickness at the middle: (base, + x mouth_open), / ry


def _ndtr(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, elementwise."""
    return 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(x, np.float64) / math.sqrt(2.0)))


def normalize_z(z) -> np.ndarray:
    """z [..., z_dim] -> z * rsqrt(mean(z**2) + 1e-8), as the generator's mapping network does."""
    z = np.asarray(z, np.float64)
    return z / np.sqrt(np.mean(z * z, axis=-1, keepdims=True) + 1e-8)


def z_from_seed(seed: int, z_dim: int = NUM_PARAMS) -> np.ndarray:
    """The project seed convention: ``np.random.RandomState(seed).randn(1, z_dim)``, float64 [1, z_dim]."""
    return np.random.RandomState(int(seed)).randn(1, z_dim)


def params_from_z(z) -> dict[str, float]:
    """z [z_dim] or [1, z_dim] (z_dim >= NUM_PARAMS; extra components are ignored) -> face parameters.

    Parameter i = low_i + (high_i - low_i) * Phi(zn_i), with zn the normalised z and Phi the normal CDF.
    """
    z = np.asarray(z, np.float64).reshape(-1)
    if z.size < NUM_PARAMS:
        raise ValueError(f"z needs at least {NUM_PARAMS} components, got {z.size}")
    u = _ndtr(normalize_z(z)[:NUM_PARAMS])
    return {name: float(lo + (hi - lo) * t) for (name, lo, hi, _), t in zip(PARAMS, u)}


def params_from_seed(seed: int, z_dim: int = NUM_PARAMS) -> dict[str, float]:
    return params_from_z(z_from_seed(seed, z_dim))


def face_colors(params: dict) -> np.ndarray:
    """The face's part colours, float [P, 3] in 0..255, rows in ``PARTS`` order."""
    cols = np.array([PART_COLORS[p] for p in PARTS], np.float64)
    cols[PARTS.index("face")] += SKIN_VARIATION * (1.0 - 2.0 * params["skin_tone"])
    cols[PARTS.index("hair")] += HAIR_VARIATION * (1.0 - 2.0 * params["hair_tone"])
    return cols


# ----------------------------------------------------------------------------
# Rendering


def _label_map(p: dict, size: int) -> np.ndarray:
    """Part labels (indices into PARTS) at SUPERSAMPLE x size, uint8 [S*size, S*size]."""
    s = SUPERSAMPLE
    n = size * s
    # Sample positions in output-pixel units (pixel centres at integers).
    t = (np.arange(n, dtype=np.float32) + 0.5) / s - 0.5
    cx, cy, ry = p["head_x"] * size, p["head_y"] * size, p["head_ry"] * size
    rx = p["head_aspect"] * ry
    ca, sa = math.cos(math.radians(p["tilt"])), math.sin(math.radians(p["tilt"]))
    # Face-local coordinates: u along the eyes' line, v down the face.
    u = ca * (t[None, :] - cx) + sa * (t[:, None] - cy)
    v = -sa * (t[None, :] - cx) + ca * (t[:, None] - cy)
    lab = np.zeros((n, n), np.uint8)

    def window(pu, pv, r):
        """Slices of the supersampled grid covering the disc of radius r around local point (pu, pv)."""
        x, y = cx + ca * pu - sa * pv, cy + sa * pu + ca * pv

        def span(q):  # supersampled indices of output coordinates q - r .. q + r, one sample of slack
            lo, hi = math.floor((q - r + 0.5) * s) - 1, math.ceil((q + r + 0.5) * s) + 1
            return slice(min(max(lo, 0), n), min(max(hi, 0), n))

        return span(y), span(x)

    def paint(part, win, inside):
        lab[win][inside] = PARTS.index(part)

    # Hair: an outline a bit larger than the head, down to ear level, then the head, then the fringe.
    hv = p["hair_volume"] * ry
    w = window(0.0, 0.0, ry + 1.5 * hv)
    uu, vv = u[w], v[w]
    paint("hair", w, ((uu / (rx + hv)) ** 2 + ((vv + 0.5 * hv) / (ry + hv)) ** 2 <= 1.0) & (vv <= 0.15 * ry))
    head = (uu / rx) ** 2 + (vv / ry) ** 2 <= 1.0
    paint("face", w, head)
    # Fringe: the head above a hairline that dips toward the temples.
    hairline = -ry * (1.0 - p["hair_depth"]) + 0.35 * ry * (uu / rx) ** 2
    paint("hair", w, head & (vv <= hairline))

    # Eyes: white ellipses with a round pupil that gazes within the white, kept inside the head (an eye
    # shifted far out on a narrow head is cut by the head's outline rather than drawn on the background).
    er = p["eye_size"] * ry
    ew, pr = EYE_ASPECT * er, PUPIL_SIZE * er
    for side, dx in ((-1.0, p["eye_dx_left"]), (1.0, p["eye_dx_right"])):
        eu, ev = (side * p["eye_spacing"] + dx) * ry, EYE_Y * ry
        w = window(eu, ev, ew)
        uu, vv = u[w], v[w]
        white = (((uu - eu) / ew) ** 2 + ((vv - ev) / er) ** 2 <= 1.0) & ((uu / rx) ** 2 + (vv / ry) ** 2 <= 1.0)
        paint("eye_white", w, white)
        pu = eu + p["gaze_x"] * (ew - pr - 0.15 * er)
        pv = ev + p["gaze_y"] * (er - pr - 0.15 * er)
        paint("pupil", w, white & ((uu - pu) ** 2 + (vv - pv) ** 2 <= pr * pr))

    nu, nv = NOSE_R[0] * ry, NOSE_R[1] * ry
    w = window(0.0, NOSE_Y * ry, nv)
    paint("nose", w, (u[w] / nu) ** 2 + ((v[w] - NOSE_Y * ry) / nv) ** 2 <= 1.0)

    # Mouth: a lens between two parabola-like curves; sm in [-1, 1] runs corner to corner.
    mw, mu = p["mouth_width"] * ry, p["mouth_dx"] * ry
    w = window(mu, MOUTH_Y * ry, mw)
    uu, vv = u[w], v[w]
    sm = (uu - mu) / mw
    inner = np.clip(1.0 - sm * sm, 0.0, None)
    centre = MOUTH_Y * ry + p["mouth_curve"] * MOUTH_CURVE * ry * inner
    half = 0.5 * (MOUTH_THICK[0] + MOUTH_THICK[1] * p["mouth_open"]) * ry * np.sqrt(inner)
    paint("mouth", w, (np.abs(sm) <= 1.0) & (np.abs(vv - centre) <= half))
    return lab


_PIXEL_INDEX: dict[int, np.ndarray] = {}


def _pixel_index(size: int) -> np.ndarray:
    """Output-pixel index of each supersampled sample, int64 [S*size * S*size] (cached per size)."""
    if size not in _PIXEL_INDEX:
        i = np.arange(size * SUPERSAMPLE) // SUPERSAMPLE
        _PIXEL_INDEX[size] = (i[:, None] * size + i[None, :]).reshape(-1)
    return _PIXEL_INDEX[size]


def render(params: dict, size: int = 64, masks: bool = False):
    """Draw one face.

    Args:
        params: a dict from ``params_from_z`` (all ``PARAM_NAMES``).
        size: output width = height in pixels.
        masks: also return the anti-aliased part masks.
    Returns:
        image uint8 [size, size, 3] (RGB), or (image, masks float32 [P, size, size]) with P = len(PARTS);
        masks are coverage fractions in [0, 1] that sum to 1 over P, and image = round(colours . masks).
    """
    lab = _label_map(params, size)
    npart = len(PARTS)
    # Box filter of the one-hot labels: count each (output pixel, part) pair among the S x S samples.
    counts = np.bincount(_pixel_index(size) * npart + lab.reshape(-1), minlength=size * size * npart)
    m = counts.reshape(size, size, npart).astype(np.float32) / SUPERSAMPLE**2  # [H, W, P]
    img = np.clip(np.rint(m @ face_colors(params).astype(np.float32)), 0, 255).astype(np.uint8)
    return (img, np.ascontiguousarray(m.transpose(2, 0, 1))) if masks else img


def render_seed(seed: int, size: int = 64, masks: bool = False, z_dim: int = NUM_PARAMS):
    """``render(params_from_seed(seed))``: the procedural target of generator seed ``seed``."""
    return render(params_from_seed(seed, z_dim), size, masks)


# ----------------------------------------------------------------------------
# Segmentation and landmarks (work on rendered and on generated images)


# Parts that touch in a face. An edge pixel is a blend of the two parts that meet there; classify()
# explains each pixel as the nearest point on one of these colour segments, so blends are never taken
# for a third part (a skin-mouth blend is close to no part colour, but nearer the nose than either end).
TOUCHING = (("background", "hair"), ("background", "face"), ("hair", "face"), ("face", "eye_white"),
            ("eye_white", "pupil"), ("face", "pupil"), ("face", "nose"), ("face", "mouth"))


def classify(image: np.ndarray) -> np.ndarray:
    """Part label per pixel by nearest part colour, edge blends of touching parts going to the nearer
    part: uint8 [H, W, 3] -> int [H, W] (indices into PARTS)."""
    x = np.asarray(image, np.float32)[..., :3]
    cols = np.array([PART_COLORS[p] for p in PARTS], np.float32)
    i = np.array([PARTS.index(a) for a, _ in TOUCHING])
    j = np.array([PARTS.index(b) for _, b in TOUCHING])
    a, d = cols[i], cols[j] - cols[i]  # [K, 3] segment starts and directions
    t = np.clip(((x[..., None, :] - a) * d).sum(-1) / (d * d).sum(-1), 0.0, 1.0)  # [H, W, K]
    dist = ((x[..., None, :] - a - t[..., None] * d) ** 2).sum(-1)  # [H, W, K]
    k = dist.argmin(-1)
    tk = np.take_along_axis(t, k[..., None], -1)[..., 0]
    return np.where(tk < 0.5, i[k], j[k])


def components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a bool [H, W] mask, largest first, as bool masks."""
    h, w = mask.shape
    big = np.iinfo(np.int64).max
    lab = np.where(mask, np.arange(h * w).reshape(h, w), big)
    while True:  # min-label propagation; converges in about the largest component's diameter
        p = np.pad(lab, 1, constant_values=big)
        nb = np.minimum.reduce([p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                                for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        new = np.where(mask, nb, big)
        if np.array_equal(new, lab):
            break
        lab = new
    ids, counts = np.unique(lab[mask], return_counts=True)
    return [lab == i for i in ids[np.argsort(-counts, kind="stable")]]


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation of a bool [H, W] mask."""
    h, w = mask.shape
    p = np.pad(mask, 1)
    return np.logical_or.reduce([p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])


def _stats(mask: np.ndarray) -> tuple[float, float, int, tuple[int, int, int, int]]:
    rows, cols = np.nonzero(mask)
    bbox = (int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max()))  # x0, y0, x1, y1 inclusive
    return float(cols.mean()), float(rows.mean()), int(rows.size), bbox


# Parts that come in pairs are split into left/right (smaller/larger x on the image).
PAIRED = ("eye_white", "pupil")
SEGMENT_KEYS = ("background", "hair", "face", "eye_white_left", "eye_white_right", "pupil_left",
                "pupil_right", "nose", "mouth")


def segment(image: np.ndarray, min_area: int = 2) -> dict:
    """Find the parts of a face image by nearest part colour.

    Args:
        image: uint8 [H, W, 3].
        min_area: components smaller than this many pixels are ignored (stray blend pixels).
    Returns:
        {key: (centroid_x, centroid_y, area_px, (x0, y0, x1, y1))} for the keys of ``SEGMENT_KEYS`` that
        were found. Small parts use their largest connected component (pairs: the two largest; pupils
        touching an eye white first), so a few stray pixels of the same colour elsewhere do not move the
        centroid; background, hair and face use all their pixels.
    """
    lab = classify(image)
    out = {}
    for i, part in enumerate(PARTS):
        mask = lab == i
        if not mask.any():
            continue
        if part in ("background", "hair", "face"):
            out[part] = _stats(mask)
            continue
        comps = [c for c in components(mask) if c.sum() >= min_area]
        if part == "pupil":
            # A pupil sits in an eye white: prefer dark blobs touching one over, say, a dark pixel run
            # where hair, skin and background meet.
            white = _dilate(lab == PARTS.index("eye_white"))
            comps = [c for c in comps if (c & white).any()] + [c for c in comps if not (c & white).any()]
        if part in PAIRED:
            pair = sorted((_stats(c) for c in comps[:2]), key=lambda st: st[0])
            if len(pair) == 2:
                out[f"{part}_left"], out[f"{part}_right"] = pair
            elif len(pair) == 1:  # one found: call it by the side of the face it is on
                face_x = out["face"][0] if "face" in out else image.shape[1] / 2
                out[f"{part}_left" if pair[0][0] < face_x else f"{part}_right"] = pair[0]
        elif comps:
            out[part] = _stats(comps[0])
    return out


def mouth_corners(image: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """((x, y) left corner, (x, y) right corner): the leftmost and rightmost columns of the mouth's largest
    component, y the mean row of its pixels in that column. None if no mouth is found."""
    lab = classify(image)
    comps = components(lab == PARTS.index("mouth"))
    if not comps:
        return None
    rows, cols = np.nonzero(comps[0])
    xl, xr = cols.min(), cols.max()
    return (float(xl), float(rows[cols == xl].mean())), (float(xr), float(rows[cols == xr].mean()))


def head_coverage(image: np.ndarray) -> np.ndarray:
    """Fraction of each pixel covered by the head (hair or face) rather than background, from where its
    colour lies between the background colour and the hair or skin colour (whichever fits better).
    Meaningful at the head's outline; float [H, W] in [0, 1]."""
    x = np.asarray(image, np.float32)[..., :3]
    bg = np.array(PART_COLORS["background"], np.float32)
    best_t, best_r = None, None
    for part in ("hair", "face"):
        d = np.array(PART_COLORS[part], np.float32) - bg
        t = np.clip(((x - bg) * d).sum(-1) / (d * d).sum(), 0.0, 1.0)
        r = ((x - bg - t[..., None] * d) ** 2).sum(-1)
        best_t, best_r = (t, r) if best_t is None else (np.where(r < best_r, t, best_t), np.minimum(r, best_r))
    return best_t


def head_top(image: np.ndarray) -> tuple[float, float] | None:
    """(x, y) of the top of the head (hair or face), y to a fraction of a pixel: in each column, the
    background above the head's outline summed from the image top; the column where it is least wins.
    None if no head is found."""
    c = head_coverage(image)
    h, w = c.shape
    solid = c >= 0.9
    has = solid.any(0)
    if not has.any():
        return None
    first = np.where(has, solid.argmax(0), h)  # first solid row per column
    rows = np.arange(h)[:, None]
    # Edge y of a column: top of the first solid pixel, raised by the partial coverage just above it.
    partial = np.where(rows < first[None], c, 0.0).sum(0)
    top = np.where(has, first - 0.5 - partial, np.inf)
    x = int(np.argmin(top))
    near = np.nonzero(top <= top[x] + 0.1)[0]
    return float(near.mean()), float(top[x])


def eye_centres(image: np.ndarray) -> dict:
    """{"left": (x, y), "right": (x, y)} eye-white centroids (pupil included), for the eyes found."""
    lab = classify(image)
    eye = (lab == PARTS.index("eye_white")) | (lab == PARTS.index("pupil"))
    found = sorted((_stats(c)[:2] for c in components(eye)[:2] if c.sum() >= 2), key=lambda p: p[0])
    if len(found) == 2:
        return {"left": found[0], "right": found[1]}
    return {}


def part_centroids_from_masks(masks: np.ndarray) -> dict:
    """Exact coverage-weighted centroids (x, y) from render masks [P, H, W] (pairs split at the head's
    x centroid). Used to check ``segment`` on renders."""
    h, w = masks.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    face = masks[PARTS.index("face")]
    split = (face * xx).sum() / face.sum()
    out = {}
    for i, part in enumerate(PARTS):
        m = masks[i].astype(np.float64)
        if part in PAIRED:
            for side, sel in (("left", xx < split), ("right", xx >= split)):
                ms = m * sel
                if ms.sum() > 0:
                    out[f"{part}_{side}"] = ((ms * xx).sum() / ms.sum(), (ms * yy).sum() / ms.sum())
        elif m.sum() > 0:
            out[part] = ((m * xx).sum() / m.sum(), (m * yy).sum() / m.sum())
    return out
