"""Model definitions and Hugging Face checkpoint loading (torch).

``seallm.models.config`` is torch-free; everything else here imports torch.
"""

from seallm.models.config import CheckpointError, ModelConfig, SUPPORTED_ARCHITECTURES, load_model_config

__all__ = ["CheckpointError", "ModelConfig", "SUPPORTED_ARCHITECTURES", "load_model_config"]
