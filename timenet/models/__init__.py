"""Model graphs over timenet.nn: the class-conditional U-Net denoiser and
the timestep-perceptive network (backbones live in .backbones)."""
from .tpn import TPN, TPNConfig
from .unet import PRESETS, AttnBlock, ResnetBlock, UNet, UNetConfig

__all__ = ["UNet", "UNetConfig", "PRESETS", "ResnetBlock", "AttnBlock", "TPN", "TPNConfig"]
