"""torch and diffusers interop: state_dict shares the manager's memory, and
diffusers components built from a lease compute what from_pretrained's do.
Skipped, with the reason shown, when torch (or diffusers) is not installed;
`test.sh --with-torch` installs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import model_manager as mm

torch = pytest.importorskip("torch", reason="torch is not installed (bindings/python/test.sh --with-torch)")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_state_dict_shares_the_lease_memory(model_file: Path) -> None:
    with mm.ModelManager() as manager:
        manager.load_model(model_file)
        with manager.acquire() as lease:
            sd = lease.state_dict("model")
            for name, t in sd.items():
                assert t.data_ptr() == lease.tensor("model", name).data_ptr
        # Every exported tensor holds the lease: the loop's last one too.
        del sd, t
        manager.unload_model(timeout=5)


def test_bf16_and_f16_reach_torch(tmp_path: Path) -> None:
    import numpy as np

    from conftest import safetensors_bytes, write

    bits = np.array([0x3F80, 0x4000], dtype=np.uint16)
    path = write(
        tmp_path / "m.safetensors",
        safetensors_bytes({"bf": ("BF16", [2], bits.tobytes()), "h": np.ones(2, np.float16)}),
    )
    with mm.ModelManager() as manager:
        manager.load_model(path)
        with manager.acquire() as lease:
            sd = lease.state_dict("model")
            assert sd["bf"].dtype == torch.bfloat16 and sd["bf"].tolist() == [1.0, 2.0]
            assert sd["h"].dtype == torch.float16
            del sd


def test_diffusers_components_from_a_lease_match_from_pretrained(tmp_path: Path) -> None:
    pytest.importorskip("diffusers", reason="diffusers is not installed (bindings/python/test.sh --with-torch)")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import diffusers_from_lease as example
    finally:
        sys.path.pop(0)
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = example.tiny_pipeline(tmp_path / "pipe")
    ref_unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    ref_vae = AutoencoderKL.from_pretrained(folder / "vae").eval()
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    text = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(2))
    with mm.ModelManager() as manager:
        manager.load_model(folder)
        with manager.acquire() as lease:
            unet, vae = example.unet_from(lease), example.vae_from(lease)
            for name, p in unet.named_parameters():
                assert p.data_ptr() == lease.tensor("unet", name).data_ptr, name
            for name, p in vae.named_parameters():
                assert p.data_ptr() == lease.tensor("vae", name).data_ptr, name
            # The weights are from_pretrained's, bit for bit.
            for ours, ref in ((unet, ref_unet), (vae, ref_vae)):
                theirs = ref.state_dict()
                for name, t in ours.state_dict().items():
                    assert torch.equal(t, theirs[name]), name
            # Built the same way from copies of those weights, the model
            # computes the very same outputs: sharing the manager's memory
            # changes nothing. (from_pretrained's own model differs from any
            # model built with from_config + load_state_dict in the last
            # bits: about 1e-6, measured with torch 2.15 / diffusers 0.42.)
            copied_unet = UNet2DConditionModel.from_config(ref_unet.config).eval()
            copied_unet.load_state_dict({k: v.clone() for k, v in unet.state_dict().items()})
            copied_vae = AutoencoderKL.from_config(ref_vae.config).eval()
            copied_vae.load_state_dict({k: v.clone() for k, v in vae.state_dict().items()})
            with torch.no_grad():
                out = unet(latents, 10, encoder_hidden_states=text).sample
                assert torch.equal(out, copied_unet(latents, 10, encoder_hidden_states=text).sample)
                ref = ref_unet(latents, 10, encoder_hidden_states=text).sample
                assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5), (out - ref).abs().max()
                image = vae.decode(latents).sample
                assert torch.equal(image, copied_vae.decode(latents).sample)
                ref = ref_vae.decode(latents).sample
                assert torch.allclose(image, ref, rtol=1e-5, atol=1e-5), (image - ref).abs().max()
            del out, image, copied_unet, copied_vae, ours, t, p
            del unet, vae
        manager.unload_model(timeout=10)


def test_the_diffusers_example_runs() -> None:
    pytest.importorskip("diffusers", reason="diffusers is not installed (bindings/python/test.sh --with-torch)")
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "diffusers_from_lease.py")], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "weights shared" in out.stdout


def test_pytorch_checkpoints_written_by_torch_load_with_their_values(tmp_path: Path) -> None:
    """A state dict torch.save wrote (a module's, every float dtype, a tied
    view), as a file and as a folder's pytorch_model.bin, loads with torch's
    values."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.LayerNorm(4))
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    state["half"] = torch.randn(3, 5).half()
    state["bf16"] = torch.randn(7).bfloat16()
    state["tied"] = state["0.weight"][1]
    state["steps"] = torch.tensor([1, 2, 3])
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    folder = tmp_path / "model"
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    for source in (path, folder):
        with mm.ModelManager() as manager:
            manager.load_model(source)
            with manager.acquire() as lease:
                got = lease.state_dict("model")
                assert sorted(got) == sorted(state)
                for name, want in state.items():
                    assert got[name].dtype == want.dtype, name
                    assert torch.equal(got[name], want), name
                del got
