"""Build diffusers components from what the manager loaded, without a second
copy of the weights, and run them.

Usage: python diffusers_from_lease.py [PIPELINE]   (a diffusers pipeline
folder; without one, a tiny pipeline written by diffusers itself)

Needs torch and diffusers (`pip install torch diffusers`).
"""

import sys
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from model_manager import Lease, ModelManager


def tiny_pipeline(folder: Path) -> Path:
    """A UNet and a VAE with random weights, saved by diffusers."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        norm_num_groups=4,
        sample_size=16,
    )
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    (folder / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],'
        ' "vae": ["diffusers", "AutoencoderKL"]}'
    )
    return folder


def unet_from(lease: Lease) -> UNet2DConditionModel:
    """The UNet on the meta device, then the leased tensors assigned to it:
    its parameters are the manager's memory."""
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(lease.config("unet"))
    unet.load_state_dict(lease.state_dict("unet"), assign=True, strict=True)
    return unet.eval()


def vae_from(lease: Lease) -> AutoencoderKL:
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(lease.config("vae"))
    vae.load_state_dict(lease.state_dict("vae"), assign=True, strict=True)
    return vae.eval()


def main(folder: Path) -> None:
    with ModelManager() as manager:
        manager.load_model(folder)
        with manager.acquire() as lease:
            unet, vae = unet_from(lease), vae_from(lease)
            shared = lease.tensor("unet", "conv_in.weight").data_ptr
            assert unet.conv_in.weight.data_ptr() == shared, "no copy"
            size = manager.sample_size or 8
            latents = torch.randn(1, 4, size, size, generator=torch.Generator().manual_seed(1))
            text = torch.randn(1, 4, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(2))
            with torch.no_grad():
                noise = unet(latents, 10, encoder_hidden_states=text).sample
                image = vae.decode(latents - noise).sample
            print(f"unet {tuple(noise.shape)}, vae {tuple(image.shape)}, weights shared at {shared:#x}")
            del unet, vae  # their parameters hold the lease
        manager.unload_model(timeout=10)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tiny_pipeline(Path(tmp)))
