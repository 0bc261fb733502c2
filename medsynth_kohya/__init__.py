"""medsynth-kohya: ISIC dermoscopy data to an SDXL melanoma LoRA through kohya-ss sd-scripts."""

__version__ = "0.1.0"
