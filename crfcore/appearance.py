"""Appearance-model unaries: colour models learned from a rough mask (and brush strokes), GrabCut-style, multi-class.

A drawn mask is right far inside its regions and doubtful near its outlines, within its *roughness* ρ (pixels). After
GrabCut (Rother, Kolmogorov & Blake 2004, "GrabCut: interactive foreground extraction using iterated graph cuts",
SIGGRAPH, §3), each class c gets a Gaussian mixture colour model fitted on the pixels it surely holds, and inside the
uncertain zone the colours decide between the classes that are near. In DESIGN.md §3 notation, for a pixel x with
mask label l (void: none) and a class c present in the mask:

    d_c(x)    Euclidean distance [px] from x to the nearest pixel labelled c (0 on c's own pixels)
    t_c(x)    depth of a pixel of c: its distance to the nearest pixel not labelled c (image border excluded)
    m_c(x)    c's own width near x: the largest depth of c within ρ/κ of x (a 3 px pole: m ≈ 2; a wall: m ≫ ρ)
    ρ_c(x)    c's reach: min(κ · m_c, ρ) taken at x's nearest pixel of c; κ = ``thin_fraction``
    zone      t_l(x) ≤ ρ_l(x): x is doubted (void pixels always are)
    cand(x)   {l} ∪ {c : d_c(x) ≤ ρ_c(x)}: the classes x may belong to (all modelled classes when none is near)
    unknown   pixels the mask leaves unannotated (void, gaps between polygons): in the zone, and every class's
              reach there is at least ν·ρ (ν = ``void_reach``), so a class the polygons lost nearby (a pole between
              two simplified regions) is a candidate and its prior is wide: the colours and the CRF decide
    conf_c    pixels of c with t_c > ρ_c, or on c's ridge (t_c ≥ m_c): the model's training pixels

So the zone and the models respect each region's own width: a region thinner than the zone keeps its core as
training pixels and is doubted only at its edge pixels (poles, wires and legs are not swallowed). In the zone::

    s_c(x) = -d_c(x)² / (2 (σ ρ_c(x))²) + w · max(log P(I_x | c) - logsumexp_{k ∈ cand} log P(I_x | k), -L)
    n_c(x) = softmax over cand(x) of s_c(x)        (0 outside cand)

with σ = ``prior_width``, w = ``colour_weight`` and L = ``LOG_RATIO_CLIP``; outside it n = onehot(l). As
:func:`crfcore.unary.from_labels`, the probabilities are ``p_c = r + (confidence - r) n_c``, ``r = (1 -
confidence)/(C - 1)``; painted stroke pixels are one-hot (hard) and train their class's model. P(I | c) is a
K-component full-covariance Gaussian mixture in RGB (0..255); with ``position_weight`` > 0 it is the conditional
P(colour | position) of a mixture over (R, G, B, s·x, s·y), s = position_weight·255/max(H, W): one model per class
whose components follow the class across the image (street scenes, where a class changes colour with place).

:func:`estimate_roughness` reads ρ from the image and the mask: the ``ROUGHNESS_PERCENTILE``-th percentile of the
distances from the mask's outline pixels to the nearest strong colour edge (Canny, :func:`edge_roughness`), refined
by the sagitta of the outline's polygon where the mask was drawn as one (:func:`outline_sagitta`).

Everything is seeded and deterministic; mixtures are fitted and evaluated in torch on the image's device; distance
transforms run on the CPU (SciPy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["ColourModels", "MaskGeometry", "LOG_RATIO_CLIP", "ROUGHNESS_PERCENTILE", "mask_geometry",
           "fit_colour_models", "colour_log_likelihood", "colour_calibration", "appearance_probs",
           "estimate_roughness", "edge_roughness", "outline_sagitta", "fill_unknown", "CALIBRATION_GRID", "SAGITTA_SCALE",
           "SAGITTA_TRUST", "POLYGON_SAGITTA"]

LOG_RATIO_CLIP = 12.0
"""L: a class's colour log-likelihood ratio against the best candidate is clipped at −L (nats), so one outlier colour
cannot outweigh the prior without bound."""

CALIBRATION_GRID = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
"""Candidate factors of :func:`colour_calibration` (1: the mixtures' own log-likelihoods)."""

ROUGHNESS_PERCENTILE = 90.0
"""Percentile of outline-to-edge distances that :func:`edge_roughness` reports (robust to the outline's share that
runs along no edge, yet near the largest offsets)."""

SAGITTA_SCALE = 0.9
"""ρ = this × :func:`outline_sagitta` for a polygonal mask (chosen on ../shared subsets under the polygon protocol at
T = 4, 8, 16 px: 0.5 to 1 all gained; 0.9 gained on every set and T)."""

SAGITTA_TRUST = 4.0
"""The sagitta-based ρ stays within this factor of :func:`edge_roughness`."""

POLYGON_SAGITTA = (0.9, 1.5)
"""Sagittas [px] below the first are smooth outlines (ρ from the edges alone), above the second polygons."""

_MAX_SAMPLES = 5000  # training pixels per class (seeded subsample); the mixture fit cost stays bounded
_EM_ITERATIONS = 10
_COV_REG = 4.0  # colour levels²: added to every covariance diagonal (flat regions stay non-singular)
_MIN_SAMPLES_PER_COMPONENT = 8
# Canny hysteresis thresholds, fractions of the largest channel's 99th-percentile gradient magnitude
_EDGE_LOW, _EDGE_HIGH = 0.15, 0.3


@dataclass
class MaskGeometry:
    """Per-class distances of a label map (``C`` = classes; NumPy, CPU).

    Attributes:
        present: ``(C,)`` bool, the classes the label map holds.
        dist: ``(C, H, W)`` float32 d_c [px] (inf for absent classes).
        reach: ``(C, H, W)`` float32 ρ_c at each pixel [px].
        zone: ``(H, W)`` bool, doubted pixels (void included).
        confident: ``(C, H, W)`` bool, the training pixels of each class.
        roughness: ρ [px], the zone's largest width.
    """

    present: np.ndarray
    dist: np.ndarray
    reach: np.ndarray
    zone: np.ndarray
    confident: np.ndarray
    roughness: float


def mask_geometry(labels: np.ndarray, num_classes: int, roughness: float, *, thin_fraction: float,
                  unknown: np.ndarray | None = None, void_reach: float = 1.0) -> MaskGeometry:
    """The zone, reaches and training pixels of ``(H, W)`` int ``labels`` (-1 = unknown) at ``roughness`` ρ [px] > 0.

    ``unknown``: ``(H, W)`` bool, pixels the mask leaves unannotated (their ``labels`` already filled with the
    nearest label): doubted, never training pixels, and every class reaches them from ``void_reach`` · ρ away.
    See the module docstring for the definitions.
    """
    from scipy.ndimage import distance_transform_edt, maximum_filter

    h, w = labels.shape
    present = np.zeros(num_classes, bool)
    dist = np.full((num_classes, h, w), np.inf, np.float32)
    reach = np.ones((num_classes, h, w), np.float32)
    confident = np.zeros((num_classes, h, w), bool)
    zone = labels < 0
    window = 2 * int(math.ceil(roughness / thin_fraction)) + 1  # sees the medial depth m wherever κ·m < ρ
    for c in np.unique(labels[labels >= 0]).tolist():
        inside = labels == c
        present[c] = True
        depth = distance_transform_edt(inside) if not inside.all() else np.full((h, w), np.inf)
        width = maximum_filter(np.where(inside, depth, 0.0), size=window)
        own = np.minimum(thin_fraction * width, roughness)
        d, (iy, ix) = distance_transform_edt(~inside, return_indices=True)
        dist[c] = d
        reach[c] = own[iy, ix]
        confident[c] = inside & ((depth > own) | (depth >= width))
        zone |= inside & (depth <= own)
    if unknown is not None and unknown.any():
        reach[:, unknown] = np.maximum(reach[:, unknown], void_reach * roughness)
        zone |= unknown
        confident &= ~unknown
    return MaskGeometry(present, dist, reach, zone, confident, float(roughness))


@dataclass
class ColourModels:
    """Gaussian mixtures per class over ``D`` features (3 colour, +2 position when ``pos_scale`` > 0).

    Attributes:
        log_weights: ``(C, K)`` log mixture weights (-inf for unused components and classes without a model).
        means: ``(C, K, D)``.
        chol: ``(C, K, D, D)`` lower Cholesky factors of the covariances.
        fitted: ``(C,)`` bool, classes with a model.
        pos_scale: s of the position features (0: colour only).
    """

    log_weights: Tensor
    means: Tensor
    chol: Tensor
    fitted: Tensor
    pos_scale: float


def _features(image: Tensor, pos_scale: float) -> Tensor:
    """``(H·W, D)`` per-pixel features of a ``(3, H, W)`` float image."""
    h, w = image.shape[-2:]
    feats = [image.reshape(3, -1).T]
    if pos_scale > 0:
        ys, xs = torch.meshgrid(torch.arange(h, device=image.device, dtype=image.dtype),
                                torch.arange(w, device=image.device, dtype=image.dtype), indexing="ij")
        feats.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], 1) * pos_scale)
    return torch.cat(feats, 1)


def _gauss_logpdf(x: Tensor, means: Tensor, chol: Tensor) -> Tensor:
    """``(N, K)`` log N(x; μ_k, L_k L_kᵀ) for ``x`` (N, D), ``means`` (K, D), ``chol`` (K, D, D)."""
    k, d = means.shape
    eye = torch.eye(d, device=x.device, dtype=x.dtype).expand(k, d, d)
    whiten = torch.linalg.solve_triangular(chol, eye, upper=False).transpose(1, 2)  # L_k^{-T}, (K, D, D)
    flat = whiten.permute(1, 0, 2).reshape(d, k * d)
    y = (x @ flat).view(-1, k, d) - torch.einsum("kd,kde->ke", means, whiten)  # (N, K, D)
    maha = y.square().sum(2)
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
    return -0.5 * (maha + logdet + d * math.log(2 * math.pi))


def _class_masks(labels: Tensor, num_classes: int) -> Tensor:
    """``(C, N)`` bool, row c where ``labels`` (N,) int equals c (one comparison; ``one_hot`` builds an (N, C) int64
    tensor first, several times slower at 0.5 MP × 21 classes)."""
    return labels.unsqueeze(0) == torch.arange(num_classes, device=labels.device, dtype=labels.dtype).unsqueeze(1)


def _fit_one(x: Tensor, k: int, reg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """EM for a ``k``-component full-covariance mixture on ``x`` (N, D); deterministic initialisation: the points
    sorted by brightness, cut into ``k`` equal groups (GrabCut initialises by clustering)."""
    dtype = x.dtype
    centre = x.mean(0)
    x = (x - centre).double()  # centred, float64: second moments of 0..255 values lose nothing
    reg = reg.double()
    n, d = x.shape
    order = torch.argsort(x[:, :3].sum(1), stable=True)
    resp = torch.zeros(n, k, device=x.device, dtype=x.dtype)
    resp[order, (torch.arange(n, device=x.device) * k) // n] = 1.0
    for _ in range(_EM_ITERATIONS):
        nk = resp.sum(0) + 1e-6
        means = (resp.T @ x) / nk.unsqueeze(1)
        second = (resp.T.unsqueeze(2) * x.unsqueeze(0)).transpose(1, 2) @ x  # (K, D, D) Σ_n r_nk x_n x_nᵀ
        cov = second / nk.view(-1, 1, 1) - means.unsqueeze(2) * means.unsqueeze(1) + reg
        chol = torch.linalg.cholesky(cov)
        log_w = torch.log(nk / n)
        resp = torch.softmax(_gauss_logpdf(x, means, chol) + log_w, 1)
    return log_w.to(dtype), (means + centre.double()).to(dtype), chol.to(dtype)


def fit_colour_models(image: Tensor, samples: Tensor, num_classes: int, *, components: int,
                      position_weight: float = 0.0, seed: int = 0) -> ColourModels:
    """Fit one mixture per class on the pixels ``samples`` marks.

    Args:
        image: ``(3, H, W)`` float32, 0..255.
        samples: ``(C, H, W)`` bool training pixels per class (on the image's device).
        components: K ≥ 1; a class with fewer than ``8·K`` pixels gets fewer components, and one with fewer than 8
            none (``fitted`` False: its colour term is neutral, see :func:`colour_log_likelihood`).
        position_weight: 0 for colour only; > 0 adds (x, y) features scaled so ``position_weight`` · max(H, W) px
            spans 255 colour levels.
        seed: seeds the subsample of classes with more than 5000 pixels.
    """
    h, w = image.shape[-2:]
    pos_scale = position_weight * 255.0 / max(h, w)
    feats = _features(image.float(), pos_scale)
    d = feats.shape[1]
    reg = torch.eye(d, device=image.device) * _COV_REG
    log_w = torch.full((num_classes, components), -math.inf, device=image.device)
    means = torch.zeros(num_classes, components, d, device=image.device)
    chol = torch.eye(d, device=image.device).repeat(num_classes, components, 1, 1)
    fitted = torch.zeros(num_classes, dtype=torch.bool, device=image.device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    flat = samples.reshape(num_classes, -1)
    for c in range(num_classes):
        idx = torch.nonzero(flat[c]).squeeze(1)
        k = min(components, idx.numel() // _MIN_SAMPLES_PER_COMPONENT)
        if k < 1:
            continue
        if idx.numel() > _MAX_SAMPLES:
            idx = idx[torch.randperm(idx.numel(), generator=gen)[:_MAX_SAMPLES].to(idx.device)]
        lw, mu, lc = _fit_one(feats[idx], k, reg)
        log_w[c, :k], means[c, :k], chol[c, :k] = lw, mu, lc
        fitted[c] = True
    return ColourModels(log_w, means, chol, fitted, pos_scale)


def colour_log_likelihood(models: ColourModels, image: Tensor, pixels: Tensor | None = None) -> Tensor:
    """``(C, N)`` log P(colour | class[, position]) at ``pixels`` (flat indices, N; None: all H·W); classes without a
    model get -inf."""
    feats = _features(image.float(), models.pos_scale)
    if pixels is not None:
        feats = feats[pixels]
    c, k, d = models.means.shape
    out = torch.full((c, feats.shape[0]), -math.inf, device=feats.device)
    for cls in torch.nonzero(models.fitted).squeeze(1).tolist():
        used = torch.isfinite(models.log_weights[cls])
        joint = torch.logsumexp(_gauss_logpdf(feats, models.means[cls, used], models.chol[cls, used])
                                + models.log_weights[cls, used], 1)
        if models.pos_scale > 0:
            # conditional on position: subtract log P(position) of the same mixture (its 2-D marginal)
            cov = models.chol[cls, used] @ models.chol[cls, used].transpose(-1, -2)
            pos_chol = torch.linalg.cholesky(cov[:, 3:, 3:])
            joint = joint - torch.logsumexp(_gauss_logpdf(feats[:, 3:], models.means[cls, used, 3:], pos_chol)
                                            + models.log_weights[cls, used], 1)
        out[cls] = joint
    return out


def _smoothed_log_likelihood(models: ColourModels, image: Tensor, sigma: float) -> Tensor:
    """``(C, H·W)`` colour log-likelihoods, each floored at the pixel's best class − 2L and blurred by a Gaussian of
    ``sigma`` px (0: none), so a speck of odd colour inside a region does not flip alone; -inf where no model."""
    loglik = colour_log_likelihood(models, image)
    fitted = models.fitted
    if sigma <= 0 or not bool(fitted.any()):
        return loglik
    h, w = image.shape[-2:]
    best = loglik[fitted].max(0).values
    ll = torch.maximum(loglik[fitted], best - 2 * LOG_RATIO_CLIP).view(1, -1, h, w)
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = torch.exp(-torch.arange(-radius, radius + 1, device=image.device, dtype=ll.dtype) ** 2 / (2 * sigma ** 2))
    taps = taps / taps.sum()
    n = ll.shape[1]
    ll = torch.nn.functional.pad(ll, (radius, radius, radius, radius), mode="replicate")
    ll = torch.nn.functional.conv2d(ll, taps.view(1, 1, 1, -1).expand(n, 1, 1, -1), groups=n)
    ll = torch.nn.functional.conv2d(ll, taps.view(1, 1, -1, 1).expand(n, 1, -1, 1), groups=n)
    loglik[fitted] = ll.view(n, -1)
    return loglik


def colour_calibration(loglik: Tensor, geometry: MaskGeometry, labels: Tensor, fitted: Tensor, *,
                       max_pixels: int = 20_000) -> float:
    """The factor a ≥ 0 that calibrates the colour models' log-likelihoods on the image's own confident pixels.

    Calibration pixels are training pixels of a class l with another present class within 2ρ (the band just outside
    the uncertain zone, where colours must tell l from its neighbours); a minimises the Brier score of their labels
    under softmax(a · log P(I | k)) over k ∈ {l} ∪ {classes within 2ρ} (a proper score that, unlike the log-loss, a
    few confidently wrong colours cannot dominate), searched on :data:`CALIBRATION_GRID`. Where
    the classes' colours overlap (street scenes) a is small and the mask prior decides; where they differ (a horse on
    grass) a is large. a = 1 when no pixel qualifies.

    Args:
        loglik: ``(C, H·W)`` colour log-likelihoods (-inf where no model).
        labels: ``(H·W,)`` int64, each pixel's mask label (unknown pixels filled with the nearest).
        fitted: ``(C,)`` bool, classes with a colour model.
        max_pixels: calibration pixels used at most (an even stride through them).
    """
    chosen = _calibration_pixels(geometry, labels, fitted, max_pixels=max_pixels)
    if chosen is None:
        return 1.0
    pixels, cand, own = chosen
    return _calibration_factor(loglik[:, pixels], cand, own)


def _calibration_pixels(geometry: MaskGeometry, labels: Tensor, fitted: Tensor, *,
                        max_pixels: int = 20_000) -> tuple[Tensor, Tensor, Tensor] | None:
    """:func:`colour_calibration`'s pixels ``(M,)`` (flat indices), their candidate classes and own class, both
    ``(C, M)`` bool; None when no pixel qualifies."""
    dev = labels.device
    num_classes = geometry.dist.shape[0]
    confident = torch.from_numpy(geometry.confident.reshape(num_classes, -1)).to(dev).any(0)
    pix = torch.nonzero(confident & fitted[labels]).squeeze(1)
    if pix.numel() == 0:
        return None
    dist = torch.from_numpy(geometry.dist.reshape(num_classes, -1)).to(dev)[:, pix]
    own = _class_masks(labels[pix], num_classes)
    near = (dist <= 2 * geometry.roughness) & ~own & fitted.unsqueeze(1)
    keep = near.any(0)
    if not bool(keep.any()):
        return None
    stride = max(1, int(keep.sum()) // max_pixels)
    idx = torch.nonzero(keep).squeeze(1)[::stride]
    return pix[idx], (near | own)[:, idx], own[:, idx]


def _calibration_factor(ll: Tensor, cand: Tensor, own: Tensor) -> float:
    """The Brier-optimal factor on :data:`CALIBRATION_GRID` for log-likelihoods ``ll`` ``(C, M)`` at the pixels of
    :func:`_calibration_pixels`."""
    best = torch.where(cand, ll, torch.full_like(ll, -math.inf)).max(0).values
    ll = torch.where(cand, torch.maximum(ll, best - 2 * LOG_RATIO_CLIP), torch.full_like(ll, -math.inf))
    target = own.float()
    brier = [float((torch.softmax(torch.where(cand, a * ll, ll), 0) - target).square().sum(0).mean())
             for a in CALIBRATION_GRID]
    return float(CALIBRATION_GRID[int(np.argmin(brier))])


def appearance_probs(image: Tensor, geometry: MaskGeometry, models: ColourModels, *, confidence: float,
                     colour_weight: float, prior_width: float, labels: np.ndarray, smoothing: float = 0.0,
                     strokes: np.ndarray | None = None, calibrate: bool = False) -> Tensor:
    """The unary ``(C, H, W)`` float32 probabilities of the module docstring, on the image's device.

    Args:
        image: ``(3, H, W)`` float32 0..255.
        geometry: from :func:`mask_geometry` of ``labels``.
        labels: ``(H, W)`` int, -1 unknown (strokes already painted in).
        smoothing: σ [px] of the Gaussian blur of the colour log-likelihoods (0: none).
        strokes: ``(H, W)`` int, -1 unpainted; painted pixels become one-hot.
        calibrate: multiply the colour log-likelihoods by :func:`colour_calibration`'s factor first.
    """
    dev = image.device
    num_classes, h, w = geometry.dist.shape
    rest = (1.0 - confidence) / (num_classes - 1)
    lab = torch.from_numpy(labels).to(dev)
    n = _class_masks(lab.reshape(-1).clamp_min(0), num_classes).float()
    zone = torch.from_numpy(geometry.zone).to(dev).reshape(-1)
    pix = torch.nonzero(zone).squeeze(1)
    if pix.numel():
        dist = torch.from_numpy(geometry.dist).to(dev).reshape(num_classes, -1)[:, pix]
        reach = torch.from_numpy(geometry.reach).to(dev).reshape(num_classes, -1)[:, pix]
        present = torch.from_numpy(geometry.present).to(dev).unsqueeze(1)
        own = _class_masks(lab.reshape(-1)[pix], num_classes)  # unknown (-1) pixels own no class
        cand = own | ((dist <= reach) & present)
        fitted = models.fitted.unsqueeze(1)
        none_near = ~cand.any(0, keepdim=True)
        cand = torch.where(none_near, fitted | own, cand)  # void far from every class: every modelled class
        if smoothing > 0:  # the blur needs every pixel's log-likelihood
            loglik = _smoothed_log_likelihood(models, image, smoothing)
            a = colour_calibration(loglik, geometry, lab.reshape(-1).clamp_min(0), models.fitted) if calibrate else 1.0
            loglik = loglik[:, pix]
        else:  # only the zone's and the calibration pixels' (a tenth of the image or less)
            loglik = colour_log_likelihood(models, image, pix)
            chosen = _calibration_pixels(geometry, lab.reshape(-1).clamp_min(0), models.fitted) if calibrate else None
            a = 1.0 if chosen is None else _calibration_factor(colour_log_likelihood(models, image, chosen[0]),
                                                                  *chosen[1:])
        if a != 1.0:
            loglik = torch.where(torch.isfinite(loglik), loglik * a, loglik)
        masked = torch.where(cand & fitted, loglik, torch.full_like(loglik, -math.inf))
        norm = torch.logsumexp(masked, 0, keepdim=True)
        ratio = (masked - norm).clamp_min(-LOG_RATIO_CLIP)
        ratio = torch.where(fitted | ~torch.isfinite(norm), ratio, torch.zeros_like(ratio))  # no model: neutral
        ratio = torch.nan_to_num(ratio, nan=0.0, neginf=-LOG_RATIO_CLIP)
        sigma = prior_width * reach
        prior = torch.where(torch.isfinite(dist), -dist * dist / (2 * sigma * sigma), torch.zeros_like(dist))
        prior = torch.where(none_near, torch.zeros_like(prior), prior)
        score = torch.where(cand, prior + colour_weight * ratio, torch.full_like(prior, -math.inf))
        n[:, pix] = torch.softmax(score, 0)
    probs = (rest + (confidence - rest) * n).reshape(num_classes, h, w)
    if strokes is not None:
        painted = torch.from_numpy(strokes >= 0).to(dev)
        hard = torch.nn.functional.one_hot(torch.from_numpy(strokes).to(dev).clamp_min(0), num_classes)
        probs = torch.where(painted.unsqueeze(0), hard.permute(2, 0, 1).float(), probs)
    return probs


def edge_roughness(image: np.ndarray, labels: np.ndarray, *, percentile: float = ROUGHNESS_PERCENTILE,
                   sigma: float = 1.5, max_roughness: float | None = None) -> float:
    """How far the mask's outline lies from strong image edges: a robust statistic, pixels ≥ 1.

    Strong edges are the union of Canny edges (Canny 1986) of the three colour channels (Gaussian σ = ``sigma``,
    hysteresis thresholds at 0.15 and 0.3 of the largest channel 99th-percentile gradient magnitude); outline
    pixels are mask pixels with a 4-neighbour of another label (unknown = -1 and the image border do not count).
    The result is the ``percentile``-th percentile of the distance [px] from each outline pixel to the nearest edge
    pixel, clipped to [1, ``max_roughness``] (default: an eighth of the shorter image side). A mask offset by k px
    from the object's edges (a dilation or erosion by k) gives about k.

    Args:
        image: ``(H, W, 3)`` uint8.
        labels: ``(H, W)`` int, -1 = unknown.

    Returns:
        The roughness ρ [px]; 1.0 when the mask has no outline or the image no edge.
    """
    from scipy.ndimage import distance_transform_edt, gaussian_gradient_magnitude
    from skimage.feature import canny

    h, w = labels.shape
    cap = max_roughness if max_roughness is not None else max(1.0, min(h, w) / 8.0)
    edges = np.zeros((h, w), bool)
    channels = [image[..., ch].astype(np.float32) for ch in range(3)]
    top = max(float(np.percentile(gaussian_gradient_magnitude(c, sigma), 99.0)) for c in channels)
    for channel in channels if top > 0 else ():
        # skimage's canny measures the Sobel magnitude (about 8x the unit-step gradient) of the smoothed image
        edges |= canny(channel, sigma=sigma, low_threshold=_EDGE_LOW * 8 * top, high_threshold=_EDGE_HIGH * 8 * top)
    outline = np.zeros((h, w), bool)
    known = labels >= 0
    for a, b, sl_a, sl_b in ((labels[1:], labels[:-1], np.s_[1:], np.s_[:-1]),
                             (labels[:, 1:], labels[:, :-1], np.s_[:, 1:], np.s_[:, :-1])):
        diff = (a != b) & known[sl_a] & known[sl_b]
        outline[sl_a] |= diff
        outline[sl_b] |= diff
    if not outline.any() or not edges.any():
        return 1.0
    dist = distance_transform_edt(~edges)
    return float(np.clip(np.percentile(dist[outline], percentile), 1.0, cap))

def fill_unknown(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` int ``labels`` with each -1 pixel given the label of its nearest labelled pixel (Euclidean; at least
    one pixel must be labelled)."""
    from scipy.ndimage import distance_transform_edt

    _, (iy, ix) = distance_transform_edt(labels < 0, return_indices=True)
    return labels[iy, ix]


def outline_sagitta(labels: np.ndarray, *, tolerance: float = 1.0) -> float:
    """How far a polygonal outline would lie from a smooth boundary through its vertices: pixels ≥ 0.

    Each class's outline (scikit-image contours at the half level, image borders not included) is simplified to a
    polygon at ``tolerance`` px (Douglas–Peucker), and each of its segments gets the sagitta L·φ/8 of the circular arc
    that turns by φ over its length L (φ: the mean of the turning angles at its two ends, radians). The result is the
    length-weighted median. A mask drawn as a polygon at tolerance T over a curved object gives about T (the chords'
    largest distance from the object); a smooth mask (a network's output, a dilated shape) gives at most ~1, as its
    simplified chords turn by little.

    Args:
        labels: ``(H, W)`` int, every pixel labelled (fill unknown pixels first).
    """
    from skimage.measure import approximate_polygon, find_contours

    sagittas, lengths = [], []
    for c in np.unique(labels).tolist():
        region = np.pad((labels == c).astype(np.float32), 1, mode="edge")  # no outline along the image border
        for contour in find_contours(region, 0.5):
            closed = bool(np.allclose(contour[0], contour[-1]))
            poly = approximate_polygon(contour, tolerance)
            poly = poly[:-1] if closed else poly
            if len(poly) < 3:
                continue
            seg = (np.roll(poly, -1, 0) if closed else poly[1:]) - (poly if closed else poly[:-1])
            angle = np.arctan2(seg[:, 0], seg[:, 1])
            if closed:
                start = np.abs((angle - np.roll(angle, 1) + np.pi) % (2 * np.pi) - np.pi)
                end = np.roll(start, -1)
            else:  # an outline that ends on the image border: no turn at its ends
                turn = np.abs((angle[1:] - angle[:-1] + np.pi) % (2 * np.pi) - np.pi)
                start, end = np.concatenate([[0.0], turn]), np.concatenate([turn, [0.0]])
            length = np.hypot(seg[:, 0], seg[:, 1])
            sagittas.append(length * 0.5 * (start + end) / 8.0)
            lengths.append(length)
    if not lengths:
        return 0.0
    value, weight = np.concatenate(sagittas), np.concatenate(lengths)
    order = np.argsort(value)
    cumulative = np.cumsum(weight[order])
    return float(value[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def estimate_roughness(image: np.ndarray, labels: np.ndarray) -> float:
    """The roughness ρ [px] ``roughness="auto"`` takes: the image's evidence (:func:`edge_roughness`, e) refined by the
    outline's shape (:func:`outline_sagitta`, s) where the mask was drawn as a polygon.

    For a smooth outline (s ≤ 0.9 px) ρ = e: a dilated or eroded mask is told only by the image. For a polygonal one
    (s ≥ 1.5 px) ρ = ``SAGITTA_SCALE`` · s, kept within a factor ``SAGITTA_TRUST`` of e (a true box drawn as a box
    has sharp corners, which the sagitta reads as curvature; the edges then bound it), blended geometrically between.
    Canny edges alone underestimate polygon roughness on textured images (edges everywhere) and overestimate it where
    labels do not follow colour edges (street scenes); the sagitta does neither.

    Args:
        image: ``(H, W, 3)`` uint8.
        labels: ``(H, W)`` int, -1 = unknown.
    """
    edges = edge_roughness(image, labels)
    known = labels >= 0
    if not known.any():
        return edges
    sagitta = outline_sagitta(fill_unknown(labels) if not known.all() else labels)
    lo, hi = POLYGON_SAGITTA
    weight = float(np.clip((sagitta - lo) / (hi - lo), 0.0, 1.0))
    if weight == 0.0:
        return edges
    cap = max(1.0, min(labels.shape) / 8.0)  # edge_roughness's own cap
    shaped = float(np.clip(SAGITTA_SCALE * sagitta, edges / SAGITTA_TRUST, min(edges * SAGITTA_TRUST, cap)))
    return max(1.0, float(np.exp((1 - weight) * np.log(edges) + weight * np.log(shaped))))
