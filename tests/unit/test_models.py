import torch
from shiftray.config.schema import ModelSpec
from shiftray.models.build import build_model


def test_lenet_digits_shapes():
    model = build_model(ModelSpec(backbone="lenet", bottleneck_dim=500), (1, 28, 28), 10)
    logits, feats = model(torch.rand(4, 1, 28, 28))
    assert logits.shape == (4, 10) and feats.shape == (4, 500)
    assert model.feature_dim == 500


def test_timm_backbone_and_local_pretrained_file(tmp_path):
    spec = ModelSpec(backbone="timm/test_resnet", bottleneck_dim=0)
    torch.manual_seed(0)
    a = build_model(spec, (3, 32, 32), 5)
    logits, feats = a(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 5) and feats.shape[1] == a.feature_dim
    # weights from a local file (no hub): timm's pretrained_cfg_overlay(file=...)
    path = tmp_path / "weights.pth"
    torch.save(a.backbone.model.state_dict(), path)
    torch.manual_seed(1)
    b = build_model(spec.model_copy(update={"pretrained": str(path)}), (3, 32, 32), 5)
    for (k, va), (_, vb) in zip(
        a.backbone.state_dict().items(), b.backbone.state_dict().items(), strict=True
    ):
        assert torch.equal(va, vb), k
