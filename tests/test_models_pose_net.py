"""Models: torchvision-compatible ResNet keys, checkpoint loading by key, the head's shapes, the factory."""
from __future__ import annotations

import pytest
import torch

from integral_pose import create_model, soft_argmax
from integral_pose.models import list_models, load_torchvision_weights, output_stride, resnet
from integral_pose.models.pose_net import IMAGENET_MEAN, IMAGENET_STD

# torchvision's resnet state_dict sizes (fc.weight and fc.bias included): resnet18 122, resnet50 320.
TORCHVISION_KEYS = {"resnet18": 122, "resnet34": 218, "resnet50": 320}


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_resnet_state_dict_matches_torchvision_layout(name):
    sd = resnet(name).state_dict()
    assert len(sd) + 2 == TORCHVISION_KEYS[name]  # + fc.weight, fc.bias (not built)
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert "layer1.0.bn1.running_mean" in sd and "layer4.1.conv2.weight" in sd
    assert "layer2.0.downsample.0.weight" in sd and "layer2.0.downsample.1.running_var" in sd
    if name == "resnet50":
        assert sd["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
        assert "layer1.0.downsample.0.weight" in sd  # the 64 -> 256 projection of a bottleneck


def test_load_torchvision_checkpoint_by_key(tmp_path):
    src = resnet("resnet18")
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": state}, path)
    net = create_model("resnet18", 17, pretrained=path)
    for k, v in src.state_dict().items():
        assert torch.equal(net.backbone.state_dict()[k], v), k

    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        create_model("resnet18", 17, pretrained=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="has shape .* but the model expects"):
        load_torchvision_weights(resnet("resnet18", width=32), path)  # width-reduced: shapes differ


@pytest.mark.parametrize("name,num_deconv,stride", [("tiny", None, 4), ("tiny", 1, 8), ("resnet18", None, 4), ("resnet18", 2, 8)])
def test_output_shapes_2d_3d(name, num_deconv, stride):
    net = create_model(name, 17, num_deconv=num_deconv, width=8, head_channels=16).eval()
    assert net.stride == stride == output_stride(name, num_deconv)
    x = torch.rand(2, 3, 64, 96)
    assert net(x).shape == (2, 17, 64 // stride, 96 // stride)
    assert net.heatmap_size((96, 64)) == (96 // stride, 64 // stride)
    net3 = create_model("tiny", 5, depth_bins=8, width=8, head_channels=16).eval()
    out = net3(x)
    assert out.shape == (2, 5, 8, 16, 24)
    assert soft_argmax(out).shape == (2, 5, 3)
    assert net3.predict(x).shape == (2, 5, 3)


def test_paper_head_structure():
    net = create_model("resnet50", 17)
    deconvs = [m for m in net.head.deconv if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(deconvs) == 3
    assert all(d.out_channels == 256 and d.kernel_size == (4, 4) and d.stride == (2, 2) for d in deconvs)
    assert net.head.final.kernel_size == (1, 1) and net.head.final.out_channels == 17
    assert create_model("resnet50", 17, depth_bins=64).head.final.out_channels == 17 * 64


def test_normalisation_is_inside_the_model():
    torch.manual_seed(0)
    net = create_model("tiny", 3, width=8, head_channels=16).eval()
    img = torch.rand(1, 3, 64, 64)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ref = net.head(net.backbone((img - mean) / std))
    assert torch.allclose(net(img), ref, atol=1e-6)
    assert "mean" not in net.state_dict() and "std" not in net.state_dict()  # not persisted


def test_factory_errors_and_names():
    assert {"tiny", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"} <= set(list_models())
    with pytest.raises(ValueError, match="resnet50"):
        create_model("resnet05", 17)
    with pytest.raises(ValueError, match="multiple of 32"):
        create_model("tiny", 17).heatmap_size((100, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        create_model("tiny", 17)(torch.rand(1, 1, 64, 64))


def test_gradients_reach_the_trunk():
    net = create_model("tiny", 4, width=8, head_channels=16)
    soft_argmax(net(torch.rand(2, 3, 64, 64))).sum().backward()
    assert net.backbone.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("upscale,depth_bins", [(2, None), (4, None), (2, 3)])
def test_sub_pixel_output_layout(upscale, depth_bins):
    """Output cell (i, j) of block (y, x) of joint k (depth d) is channel ((k*D + d)*r + i)*r + j of
    the 1x1 conv at (y, x): the joint / depth channel order of ``split_depth_channels`` survives."""
    torch.manual_seed(0)
    r, k = upscale, 5
    net = create_model("tiny", k, depth_bins=depth_bins, width=8, head_channels=16, upscale=r).eval()
    assert net.stride == 4 // r == output_stride("tiny", upscale=r)
    with torch.no_grad():
        net.head.final.weight.normal_()  # break the ICNR init's equal sub-kernels
    x = torch.rand(2, 3, 64, 96)
    out = net(x)
    d = depth_bins or 1
    assert out.shape == ((2, k, 16 * r, 24 * r) if depth_bins is None else (2, k, d, 16 * r, 24 * r))
    assert net.heatmap_size((96, 64)) == (24 * r, 16 * r)
    with torch.no_grad():
        conv = net.head.final(net.head.deconv(net.backbone((x - net.mean) / net.std)))  # (2, k*d*r*r, 16, 24)
    maps = out.reshape(2, k, d, 16 * r, 24 * r)
    for kk, dd, i, j in [(0, 0, 0, 0), (k - 1, d - 1, r - 1, r - 1), (2, d // 2, 1, 0)]:
        assert torch.allclose(maps[:, kk, dd, i::r, j::r], conv[:, ((kk * d + dd) * r + i) * r + j], atol=1e-5)


def test_sub_pixel_init_repeats_the_coarse_map():
    """ICNR: untrained, every r x r block is one value (no checkerboard), for both head inits."""
    for init in ("integral", "simple_baselines"):
        out = create_model("tiny", 4, width=8, head_channels=16, upscale=2, head_init=init).eval()(torch.rand(1, 3, 64, 64))
        assert out.shape == (1, 4, 32, 32) and out.std() > 0
        coarse = out[..., 0::2, 0::2]
        assert torch.equal(out, coarse.repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_sub_pixel_errors():
    with pytest.raises(ValueError, match="upscale must be one of"):
        create_model("tiny", 4, upscale=3)
    with pytest.raises(ValueError, match="upsamples past the input resolution"):
        create_model("tiny", 4, num_deconv=4, upscale=2)


def test_sub_pixel_model_exports_to_onnx(tmp_path):
    from integral_pose.engine.export import check_onnx, export_onnx

    net = create_model("tiny", 4, width=8, head_channels=16, upscale=2).eval()
    export_onnx(net, tmp_path / "m.onnx", (64, 64))
    diff = check_onnx(net, tmp_path / "m.onnx", (64, 64))  # ONNX Runtime against PyTorch, max abs difference
    assert diff["logits"] < 1e-4 and diff["coords"] < 1e-4
