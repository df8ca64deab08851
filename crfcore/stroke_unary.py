"""The unary of brush strokes without a mask: colour models from the strokes and a geodesic distance prior.

With a mask, :mod:`crfcore.appearance` doubts only a zone along its outlines. From strokes alone every unpainted
pixel is doubted, and colour models learned from a few brush disks are too uncertain to decide alone: a stroke on a
horse's white halter makes every white pixel of the image (sky, a trailer) horse. So strokes also act where they are
painted, through their geodesic distance (Bai & Sapiro 2007, "A geodesic framework for fast interactive image and
video segmentation and matting", ICCV; Criminisi, Sharp & Blake 2008, "GeoS", ECCV): for a pixel x and a class c
painted somewhere (DESIGN.md §3 notation)::

    D_c(x)  = min over paths from a pixel painted c to x of Σ steps (1 + e · |∇I|) · step length   [px]
    s_c(x)  = -γ log(D_c(x) + δ) + w · max(log P(I_x | c) - logsumexp_k log P(I_x | k), -L)
    n_c(x)  = softmax over the painted classes of s_c(x)              (0 for a class nobody painted)

with e = ``stroke_edges`` (|∇I|: the Gaussian (σ 1 px) gradient magnitude of the RGB image, colour levels per px),
γ = ``stroke_prior``, w = ``colour_weight``, δ = :data:`DISTANCE_OFFSET` and L =
:data:`crfcore.appearance.LOG_RATIO_CLIP`. The log makes the prior scale-free: a pixel ten times nearer to one class's
strokes than to another's gets γ log 10 nats for it, whether it lies 5 or 200 px away, and a pixel about as far from
both is left to its colour. P(I | c) is the K-component mixture of :func:`crfcore.appearance.fit_colour_models`
fitted on the pixels painted c (and, from a second GrabCut round on, on the previous round's labels away from their
outlines). The probabilities are ``p_c = r + (confidence - r) n_c``, ``r = (1 - confidence)/(C - 1)``, and painted
pixels are one-hot (hard).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .appearance import LOG_RATIO_CLIP, ColourModels, colour_log_likelihood

__all__ = ["DISTANCE_OFFSET", "geodesic_distances", "stroke_scores", "stroke_probs"]

DISTANCE_OFFSET = 5.0
"""δ [px]: added to the geodesic distance before its log, about a brush radius, so the prior stays finite next to a
stroke and pixels a few pixels from two strokes of different classes are not decided by the prior alone."""

_GRADIENT_SIGMA = 1.0  # px, Gaussian derivative scale of |∇I|


def geodesic_distances(image: np.ndarray, strokes: np.ndarray, num_classes: int, *, edge_weight: float) -> np.ndarray:
    """D_c of the module docstring: each pixel's geodesic distance to the nearest pixel painted c.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        strokes: ``(H, W)`` int, the class painted at each pixel, -1 unpainted.
        num_classes: C.
        edge_weight: e ≥ 0 [px per colour level]: a step across a gradient of g colour levels per px costs 1 + e·g
            px per px (0: Euclidean distance along 8-connected paths).

    Returns:
        ``(C, H, W)`` float32 distances [px], ``inf`` for classes nobody painted.
    """
    from scipy.ndimage import gaussian_gradient_magnitude
    from skimage.graph import MCP_Geometric

    h, w = strokes.shape
    out = np.full((num_classes, h, w), np.inf, np.float32)
    cost = np.ones((h, w))
    if edge_weight > 0:
        channels = [image[..., ch].astype(np.float64) for ch in range(3)]
        grad = np.sqrt(sum(gaussian_gradient_magnitude(c, _GRADIENT_SIGMA) ** 2 for c in channels))
        cost = 1.0 + edge_weight * grad
    for c in range(num_classes):
        seeds = np.argwhere(strokes == c)
        if len(seeds):
            dist, _ = MCP_Geometric(cost, fully_connected=True).find_costs([tuple(p) for p in seeds.tolist()])
            out[c] = dist
    return out


def stroke_scores(image: Tensor, strokes: np.ndarray, models: ColourModels,
                  distances: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
    """The two terms of s_c and the painted classes: ``(log_distance, ratio, present)``.

    Returns:
        ``log_distance``: ``(C, H·W)`` float32 −log(D_c + δ) (0 for classes nobody painted); ``ratio``: ``(C, H·W)``
        the clipped colour log-likelihood ratio over the painted classes with a model (0 elsewhere);
        ``present``: ``(C,)`` bool, the painted classes. s_c = γ · log_distance + w · ratio.
    """
    dev = image.device
    num_classes = distances.shape[0]
    painted = torch.from_numpy(strokes).to(dev).reshape(-1)
    present = torch.zeros(num_classes, dtype=torch.bool, device=dev)
    present[painted[painted >= 0].unique()] = True
    cand = (present & models.fitted).unsqueeze(1)
    loglik = colour_log_likelihood(models, image)
    masked = torch.where(cand, loglik, torch.full_like(loglik, -math.inf))
    norm = torch.logsumexp(masked, 0, keepdim=True)
    ratio = (masked - norm).clamp_min(-LOG_RATIO_CLIP)
    ratio = torch.where(cand & torch.isfinite(norm), ratio, torch.zeros_like(ratio))
    dist = torch.from_numpy(distances).to(dev).reshape(num_classes, -1)
    log_distance = torch.where(torch.isfinite(dist), -torch.log(dist + DISTANCE_OFFSET), torch.zeros_like(dist))
    return log_distance, ratio, present


def stroke_probs(image: Tensor, strokes: np.ndarray, models: ColourModels, distances: np.ndarray, *,
                 confidence: float, colour_weight: float, prior_strength: float) -> Tensor:
    """The unary ``(C, H, W)`` float32 probabilities of the module docstring, on the image's device.

    Args:
        image: ``(3, H, W)`` float32 0..255.
        strokes: ``(H, W)`` int, -1 unpainted; at least one pixel painted.
        models: the colour models (:func:`crfcore.appearance.fit_colour_models`); a painted class without a model
            (fewer than 8 training pixels) gets a neutral colour term.
        distances: ``(C, H, W)`` from :func:`geodesic_distances`.
        confidence: probability of the best class where the unary is sure, in (1/C, 1].
        colour_weight: w ≥ 0.
        prior_strength: γ ≥ 0.
    """
    num_classes, h, w = distances.shape
    log_distance, ratio, present = stroke_scores(image, strokes, models, distances)
    score = torch.where(present.unsqueeze(1), prior_strength * log_distance + colour_weight * ratio,
                        torch.full_like(ratio, -math.inf))
    n = torch.softmax(score, 0)
    rest = (1.0 - confidence) / (num_classes - 1)
    probs = (rest + (confidence - rest) * n).reshape(num_classes, h, w)
    painted = torch.from_numpy(strokes).to(image.device)
    hard = torch.nn.functional.one_hot(painted.clamp_min(0), num_classes).permute(2, 0, 1).float()
    return torch.where((painted >= 0).unsqueeze(0), hard, probs)
