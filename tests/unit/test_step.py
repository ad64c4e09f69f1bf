import torch
from shiftray.config.schema import ModelSpec
from shiftray.data.batches.base import DABatch
from shiftray.methods.base import ModelInfo
from shiftray.methods.dann import DANN, DANNParams
from shiftray.models.build import build_model
from shiftray.train.module import TrainModule
from shiftray.train.step import StepConfig, train_step


def make(seed=0):
    torch.manual_seed(seed)
    model = build_model(
        ModelSpec(backbone="mlp", backbone_kwargs={"hidden": [8]}, bottleneck_dim=0), (5,), 3
    )
    method = DANN(DANNParams(disc_hidden=[4], disc_batch_norm=False), ModelInfo(8, 3))
    module = TrainModule(model, method)
    return module, torch.optim.SGD(module.parameters(), lr=0.1)


def test_grad_accumulation_equals_one_big_step():
    torch.manual_seed(1)
    batch = DABatch(torch.randn(8, 5), torch.randint(0, 3, (8,)), torch.randn(8, 5))
    a, opt_a = make()
    b, opt_b = make()
    train_step(a, opt_a, batch, 0.5, StepConfig())
    train_step(b, opt_b, batch, 0.5, StepConfig(grad_accum=2))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_bf16_autocast_and_channels_last_step_on_cpu():
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="lenet", bottleneck_dim=32), (1, 28, 28), 10)
    module = TrainModule(model, DANN(DANNParams(disc_hidden=[16]), ModelInfo(32, 10)))
    module = module.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(module.parameters(), lr=0.01)
    batch = DABatch(torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,)), torch.rand(4, 1, 28, 28))
    cfg = StepConfig(autocast_dtype=torch.bfloat16, channels_last=True)
    out = train_step(module, opt, batch.to("cpu", channels_last=True), 0.1, cfg)
    assert torch.isfinite(out.loss) and set(out.logs) >= {"cls_loss", "transfer_loss"}


def test_compiled_network_compiles_once_while_the_progress_moves():
    """train.compile compiles the network only: the methods' losses take the progress as a
    Python float (GRL ramp), on which a compiled DANN module recompiled every step until
    Dynamo's limit of 8 and then ran eager. One graph for ten progress values here, the same
    parameters as eager, and the state_dict keys unchanged (checkpoints load either way)."""
    import torch._dynamo
    from shiftray.train.step import compile_network
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(1)
    batch = DABatch(torch.randn(8, 5), torch.randint(0, 3, (8,)), torch.randn(8, 5))
    eager, opt_e = make()
    compiled, opt_c = make()
    keys = list(compiled.state_dict())
    compile_network(compiled.model)
    for i in range(10):
        train_step(eager, opt_e, batch, i / 10, StepConfig(), i)
        train_step(compiled, opt_c, batch, i / 10, StepConfig(), i)
    assert counters["stats"]["unique_graphs"] == 1
    assert list(compiled.state_dict()) == keys
    for pe, pc in zip(eager.parameters(), compiled.parameters(), strict=True):
        assert torch.allclose(pe, pc, atol=1e-5)


def test_channels_last_auto_follows_the_measurements():
    """NHWC where bench/memory_format.py found it faster: GPUs, and LeNet on CPU (x1.6); not
    timm's resnet18 on CPU (x0.84)."""
    from conftest import synthetic_spec
    from shiftray.config.load import spec_from_dict

    def cl(backbone, device, setting="auto"):
        spec = spec_from_dict(synthetic_spec(model={"backbone": backbone}, train__precision="fp32",
                                             train__channels_last=setting))  # fmt: skip
        return StepConfig.from_spec(spec, torch.device(device), image_model=True).channels_last

    assert cl("lenet", "cpu") and cl("lenet", "cuda") and cl("timm/resnet18", "cuda")
    assert not cl("timm/resnet18", "cpu") and cl("timm/resnet18", "cpu", "on")
    assert not cl("lenet", "cpu", "off")
