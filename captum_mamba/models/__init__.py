"""Model definitions the package provides where no installed library has them (Vision Mamba)."""

from captum_mamba.models.vim import VIM_OPTIONS, VIM_VARIANTS, VisionMamba, load_vim_checkpoint, vim_model

__all__ = ["VIM_OPTIONS", "VIM_VARIANTS", "VisionMamba", "load_vim_checkpoint", "vim_model"]
