"""Components from outside the package: a plugin distribution declares entry points, a job spec
names them, and they train like the built-ins. The plugin here is real files on sys.path
(a module and its .dist-info), found by importlib.metadata the way an installed one is."""

import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, synthetic_spec
from shiftray.config.load import SpecError, spec_from_dict
from shiftray.registry import (
    BACKBONES,
    BUILTIN,
    DATASETS,
    METHODS,
    VALIDATORS,
    RegistryError,
    reset_all,
)

PLUGIN = '''
"""A method and a dataset from outside shiftray."""
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from shiftray.data.readers.synthetic import Synthetic
from shiftray.methods.base import AdaptationMethod, StepOutput


class TinyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    smoothing: float = Field(0.0, ge=0.0, lt=1.0)


class TinyMethod(AdaptationMethod):
    """Source cross-entropy with label smoothing (a plugin)."""

    Params = TinyParams

    def forward(self, model, batch, progress):
        logits, _ = model(batch.x_s)
        loss = F.cross_entropy(logits, batch.y_s, label_smoothing=self.params.smoothing)
        return StepOutput(loss, {"cls_loss": loss.detach()})


class TinyBlobs(Synthetic):
    """The synthetic blobs under another name (a plugin)."""

    name = "tiny_blobs"
'''


def write_dist(root, name: str, entry_points: str) -> None:
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """tiny_plugin on sys.path with entry points for a method and a dataset."""
    (tmp_path / "tiny_plugin.py").write_text(PLUGIN)
    write_dist(
        tmp_path,
        "tiny_plugin",
        """
        [shiftray.methods]
        tiny = tiny_plugin:TinyMethod
        [shiftray.datasets]
        tiny_blobs = tiny_plugin:TinyBlobs
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reset_all()
    yield tmp_path
    monkeypatch.undo()  # off sys.path before the registries read entry points again
    sys.modules.pop("tiny_plugin", None)
    reset_all()


def test_every_builtin_entry_resolves():
    """The table of strings is the single list of built-ins: each names a real object."""
    for reg in (BACKBONES, METHODS, DATASETS, VALIDATORS):
        for name in BUILTIN[reg.kind]:
            assert reg.get(name) is not None, (reg.kind, name)
    assert {"entropy", "im", "bnm", "snd", "dev", "class_ami", "mixval", "source_acc"} <= set(
        VALIDATORS.names()
    )


def test_plugin_method_and_dataset_train(plugin, tmp_path):
    from shiftray.train.launch import fit_local

    assert "tiny" in METHODS.names() and "tiny_blobs" in DATASETS.names()
    raw = synthetic_spec(
        name="plugin", method={"name": "tiny", "params": {"smoothing": 0.1}},
        data__benchmark="tiny_blobs", train__steps=6, train__eval_every=6,
        train__checkpoint_every=6, tracking__output_dir=str(tmp_path / "runs"),
    )  # fmt: skip
    spec = spec_from_dict(raw)
    assert type(spec.method.resolved_params()).__name__ == "TinyParams"
    result = fit_local(spec)
    assert result.metrics["step"] == 6 and "target_acc" in result.metrics
    with pytest.raises(SpecError, match=r"method\.params\.smooth: not a parameter of method "
                       r"'tiny'; it accepts: smoothing"):  # fmt: skip
        spec_from_dict(synthetic_spec(method={"name": "tiny", "params": {"smooth": 0.1}}))


def test_plugin_names_are_unknown_without_the_plugin():
    reset_all()
    with pytest.raises(SpecError, match=r"method\.name: unknown method 'tiny'; registered: cdan"):
        spec_from_dict(synthetic_spec(method={"name": "tiny"}))


def test_plugin_clashing_with_a_builtin_names_both(plugin):
    write_dist(plugin, "clash_plugin", "[shiftray.methods]\ndann = tiny_plugin:TinyMethod\n")
    reset_all()
    with pytest.raises(RegistryError) as e:
        METHODS.names()
    msg = str(e.value)
    assert "'dann'" in msg and "tiny_plugin:TinyMethod (plugin clash_plugin" in msg
    assert "built-in shiftray.methods.dann:DANN" in msg


def test_plugin_that_does_not_import_names_its_entry(plugin):
    write_dist(plugin, "broken_plugin", "[shiftray.backbones]\nbroken = no_such_module:net\n")
    reset_all()
    assert "broken" in BACKBONES  # listed without importing it
    with pytest.raises(RegistryError, match=r"backbone 'broken': cannot load no_such_module:net"):
        BACKBONES.get("broken")


@pytest.mark.parametrize("job", ["jobs/digits/mnist-usps-dann.yaml", "jobs/amazon/dann.yaml"])
def test_validate_imports_only_the_components_the_spec_names(job):
    """The registry's entries are strings and a built-in method's Params come from the torch-free
    shiftray.methods.params: validating a lenet or mlp / dann spec imports its reader, not torch
    (2 s of the 2.4 s validate took), timm, any method's module or the image-folder reader."""
    code = (
        "import sys; from shiftray.cli import main; "
        f"assert main(['validate', {job!r}]) == 0; "
        "print(sorted(m for m in ('timm', 'shiftray.methods.cdan', 'shiftray.data.readers.imagefolder', "
        "'shiftray.models.backbones', 'shiftray.methods.dann', 'shiftray.methods.base', 'torch', "
        "'shiftray.methods.params') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()[-1]
    assert out == "['shiftray.methods.params']"


def test_builtin_params_entries_are_the_methods_own():
    """`params_of` reads a built-in method's Params from its lazy params entry: the very class
    the method uses, declaring the same needs_whole_target as the method (streaming reads it)."""
    from shiftray.config.schema import needs_whole_target
    from shiftray.registry import BUILTIN_PARAMS

    assert set(BUILTIN_PARAMS["method"]) == set(BUILTIN["method"])
    for name in BUILTIN["method"]:
        method = METHODS.get(name)
        assert METHODS.params_of(name) is method.Params, name
        assert needs_whole_target(name) is method.needs_whole_target, name
    assert needs_whole_target("shot") and not needs_whole_target("dann")


def test_plugin_params_are_read_from_the_method_class(plugin, tmp_path):
    """A plugin has no params entry: `params_of` imports the method and reads its Params."""
    from shiftray.config.schema import needs_whole_target

    assert "tiny_plugin" not in sys.modules
    assert METHODS.params_of("tiny").__name__ == "TinyParams" and "tiny_plugin" in sys.modules
    assert not needs_whole_target("tiny")
    for domain in ("a", "b"):
        (tmp_path / "shards" / domain).mkdir(parents=True)
        (tmp_path / "shards" / domain / "train.parquet").touch()  # listed, not read
    stream = {"benchmark": "parquet", "source": "a", "target": "b", "stream": {"enabled": True},
              "options": {"path": str(tmp_path / "shards")}}  # fmt: skip
    spec_from_dict(synthetic_spec(data=stream, method={"name": "tiny"}))
    with pytest.raises(SpecError, match="'shot' keeps per-example state over the whole target"):
        spec_from_dict(synthetic_spec(data=stream, method={"name": "shot"}))


def test_registry_entries_are_lazy_strings_or_registered_objects():
    import json

    from shiftray.registry import Registry, UnknownNameError

    reg = Registry("thing", "shiftray.no_such_group", {"dumps": "json:dumps"})

    @reg.register("loads")
    def loads(text):
        """Parse JSON (registered by decorator)."""
        return json.loads(text)

    assert reg.names() == ["dumps", "loads"] and reg.get("dumps") is json.dumps
    assert reg.describe()[1] == ("loads", "Parse JSON (registered by decorator).")
    with pytest.raises(RegistryError, match=r"thing 'dumps' is registered twice: json:dumps and"):
        reg.add("dumps", "json:loads")
    with pytest.raises(UnknownNameError, match=r"registered: dumps, loads; closest: loads"):
        reg.get("load")
