"""Model graphs over timenet.nn: the class-conditional U-Net denoiser."""
from .unet import PRESETS, AttnBlock, ResnetBlock, UNet, UNetConfig

__all__ = ["UNet", "UNetConfig", "PRESETS", "ResnetBlock", "AttnBlock"]
