"""Synthetic anomalies for training the timestep-perceptive network (DRAEM-style).

    from timenet.anomaly import Synthesizer
    synth = Synthesizer(texture_dir=None, seed=0)       # procedural textures
    x_aug, masks = synth(x, rng)                         # x (N, 3, H, W) in [-1, 1]
"""
from .synth import AUGMENTATIONS, Synthesizer, perlin_mask, rotate
from .textures import (FAMILIES, DTDTextures, ProceduralTextures, fractal_noise, perlin_2d,
                       procedural_texture)

__all__ = ["Synthesizer", "perlin_mask", "perlin_2d", "fractal_noise", "rotate", "AUGMENTATIONS",
           "FAMILIES", "procedural_texture", "ProceduralTextures", "DTDTextures"]
