"""Registries by short name: everything a job spec can name is looked up here.

A `Registry` maps a name to a lazy entry, ``"module:attr"``, imported on the first `get` and
cached. The built-in entries are the strings in `BUILTIN` below, so this bottom layer imports
nothing: validating a spec that names lenet and dann never imports timm or another method's
torch code. Packages outside shiftray add entries through Python entry points (groups
``shiftray.methods``, ``shiftray.backbones``, ``shiftray.datasets``, ``shiftray.validators``),
read on first use; a plugin name that clashes with another entry is an error naming both.
Unknown names raise `UnknownNameError`, which lists what is registered, so a typo in a job spec
tells the user what they could have written.

A method's module imports torch (about 2 s), so validating ``method.params`` does not import it:
`Registry.params_of` reads a built-in method's Params from its lazy params entry
(`BUILTIN_PARAMS`: torch-free models in ``shiftray.methods.params``, the same classes the method
modules re-export). A plugin method has no params entry: ``params_of`` imports it and reads its
``Params``, so plugins work unchanged (at the cost of that import).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from shiftray.errors import UserInputError

T = TypeVar("T")

# name -> "module:attr", per registry: the single list of what shiftray ships
BUILTIN: dict[str, dict[str, str]] = {
    "backbone": {
        "lenet": "shiftray.models.backbones:lenet",
        "mlp": "shiftray.models.backbones:mlp",
    },
    "method": {
        "erm": "shiftray.methods.erm:ERM",
        "dann": "shiftray.methods.dann:DANN",
        "cdan": "shiftray.methods.cdan:CDAN",
        "mcc": "shiftray.methods.mcc:MCC",
        "self_training": "shiftray.methods.self_training:SelfTraining",
        "fixmatch": "shiftray.methods.consistency:FixMatch",
        "mean_teacher": "shiftray.methods.consistency:MeanTeacher",
        "shot": "shiftray.methods.shot:SHOT",
        "distill": "shiftray.methods.distill:Distill",
    },
    "dataset": {
        "digits": "shiftray.data.readers.digits:Digits",
        "amazon": "shiftray.data.readers.amazon:AmazonReviews",
        "office_caltech": "shiftray.data.readers.office:OfficeCaltech10",
        "imagefolder": "shiftray.data.readers.imagefolder:ImageFolder",
        "table": "shiftray.data.readers.table:TableFile",
        "parquet": "shiftray.data.readers.parquet:ParquetDomains",
        "synthetic": "shiftray.data.readers.synthetic:Synthetic",
        "drugreview": "shiftray.data.readers.drugreview:DrugReviews",
    },
    "validator": {
        "entropy": "shiftray.evaluate.validators.scores:entropy",
        "im": "shiftray.evaluate.validators.scores:im",
        "bnm": "shiftray.evaluate.validators.scores:bnm",
        "snd": "shiftray.evaluate.validators.scores:snd",
        "dev": "shiftray.evaluate.validators.scores:dev",
        "class_ami": "shiftray.evaluate.validators.scores:class_ami",
        "mixval": "shiftray.evaluate.validators.scores:mixval",
        "source_acc": "shiftray.evaluate.validators.scores:source_acc",
    },
}


# name -> "module:attr" of the entry's Params, per registry: what validation reads without
# importing the entry (its module imports torch); each must be the entry's own ``Params``
BUILTIN_PARAMS: dict[str, dict[str, str]] = {
    "method": {
        "erm": "shiftray.methods.params:ERMParams",
        "dann": "shiftray.methods.params:DANNParams",
        "cdan": "shiftray.methods.params:CDANParams",
        "mcc": "shiftray.methods.params:MCCParams",
        "self_training": "shiftray.methods.params:SelfTrainingParams",
        "fixmatch": "shiftray.methods.params:FixMatchParams",
        "mean_teacher": "shiftray.methods.params:MeanTeacherParams",
        "shot": "shiftray.methods.params:SHOTParams",
        "distill": "shiftray.methods.params:DistillParams",
    },
}


class UnknownNameError(UserInputError, KeyError):
    """A name that is not registered (a ValueError, so spec validation reports it per field)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RegistryError(ValueError):
    """A plugin clashes with another entry, or an entry cannot be imported."""


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """A name -> lazy entry table with helpful errors.

    Entries are ``"module:attr"`` strings (built-ins, `add`), entry points (plugins) or objects
    (`register` as a decorator, for code that builds its own). `names` and `__contains__` never
    import an entry; `get` imports one; `params_of` only its Params where a params entry names
    them; `describe` imports all (for docstrings in `shiftray ls`).
    """

    def __init__(
        self,
        kind: str,
        group: str,
        builtin: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> None:
        self.kind, self.group = kind, group
        self._params = dict(params or {})  # name -> "module:attr" of its Params (lazy)
        self._entries: dict[str, str | EntryPoint | T] = dict(builtin or {})
        self._own = dict(self._entries)  # what a reset keeps: built-ins and registered objects
        self._loaded: dict[str, T] = {}
        self._scanned = False

    def add(self, name: str, target: str | T) -> None:
        if name in self._entries:
            raise RegistryError(
                f"{self.kind} {name!r} is registered twice: {self._where(name)} and "
                f"{self._show(target)}"
            )
        self._entries[name] = self._own[name] = target

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def reset(self) -> None:
        """Forget loaded entries and plugins (entry points are read again on next use)."""
        self._entries, self._loaded, self._scanned = dict(self._own), {}, False

    def _show(self, target: Any) -> str:
        if isinstance(target, EntryPoint):
            dist = target.dist.name if target.dist else "?"
            return f"{target.value} (plugin {dist}, entry point group {self.group})"
        if isinstance(target, str):
            return target
        return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', target)}"

    def _where(self, name: str) -> str:
        return self._show(self._entries[name])

    def _scan(self) -> None:
        """Add the entry points of this registry's group, once; a clash fails every use until
        the plugin is renamed (a half-read table would make names depend on the order)."""
        if self._scanned:
            return
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=self.group):
            if ep.name in self._entries or ep.name in found:
                other = self._show(found.get(ep.name) or self._entries[ep.name])
                builtin = "the built-in " if ep.name in BUILTIN.get(self.kind, {}) else ""
                raise RegistryError(
                    f"{self.kind} {ep.name!r} of {self._show(ep)} clashes with {builtin}"
                    f"{other}; rename one of them"
                )
            found[ep.name] = ep
        self._entries.update(found)
        self._scanned = True

    def check(self, name: str) -> str:
        """``name`` if registered (nothing imported), else `UnknownNameError`."""
        if name not in self:
            close = difflib.get_close_matches(name, self.names(), n=3)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}{hint}"
            )
        return name

    def get(self, name: str) -> T:
        if name in self._loaded:
            return self._loaded[name]
        entry = self._entries[self.check(name)]
        try:
            if isinstance(entry, EntryPoint):
                obj = entry.load()
            else:
                obj = _resolve(entry) if isinstance(entry, str) else entry
        except (ImportError, AttributeError) as e:
            raise RegistryError(
                f"{self.kind} {name!r}: cannot load {self._show(entry)}: {e}"
            ) from e
        self._loaded[name] = obj
        return obj

    def params_of(self, name: str) -> Any:
        """``get(name).Params`` (the pydantic model of the entry's options), without importing
        the entry when it has a params entry (built-in methods); else the entry is imported."""
        self.check(name)
        target = self._params.get(name)
        if target is None:
            return self.get(name).Params
        try:
            return _resolve(target)
        except (ImportError, AttributeError) as e:
            raise RegistryError(f"{self.kind} {name!r}: cannot load {target}: {e}") from e

    def __contains__(self, name: object) -> bool:
        self._scan()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        self._scan()
        return sorted(self._entries)

    def describe(self) -> list[tuple[str, str]]:
        """(name, the docstring's first paragraph on one line) for each entry: imports every one."""
        out = []
        for n in self.names():
            doc = (getattr(self.get(n), "__doc__", None) or "").strip()
            out.append((n, " ".join(doc.split("\n\n")[0].split())))
        return out


BACKBONES: Registry[Any] = Registry("backbone", "shiftray.backbones", BUILTIN["backbone"])
METHODS: Registry[Any] = Registry(
    "method", "shiftray.methods", BUILTIN["method"], BUILTIN_PARAMS["method"]
)
DATASETS: Registry[Any] = Registry("dataset", "shiftray.datasets", BUILTIN["dataset"])
VALIDATORS: Registry[Any] = Registry("validator", "shiftray.validators", BUILTIN["validator"])
REGISTRIES = (BACKBONES, METHODS, DATASETS, VALIDATORS)


@dataclass(frozen=True)
class Family:
    """Backbones named by a library's own model names, ``<prefix><name>``: what builds them
    (``"module:attr"``, called as ``builder(name, input_shape, pretrained, **kwargs)``), what
    they read (``images``, ``tokens``), and what checks a name when a spec is validated."""

    prefix: str
    builder: str
    reads: str
    about: str
    check: str = ""  # "module:attr" (name -> name or raise); "": checked when loaded

    def load(self, attr: str = "builder") -> Callable:
        module, _, name = getattr(self, attr).partition(":")
        return getattr(importlib.import_module(module), name)


# the one table of backbone families: the spec, the model builder and `shiftray ls` read it
FAMILIES: tuple[Family, ...] = (
    Family("timm/", "shiftray.models.backbones:timm_backbone", "images",
           "any timm image model, e.g. timm/resnet50 (weights from the hub or a file)",
           check="shiftray.config.components:check_timm_name"),
    Family("hf/", "shiftray.models.text:hf_backbone", "tokens",
           "a transformers text encoder, e.g. hf/distilbert-base-uncased (hub name or a local "
           "folder; the tokenizer comes with it)"),
    Family("clip/", "shiftray.models.zeroshot:clip_backbone", "images",
           "a CLIP image tower for zero-shot and transfer, e.g. "
           "clip/openai/clip-vit-base-patch32 (hub name or a local folder)"),
)  # fmt: skip


def family_of(backbone: str | None) -> Family | None:
    """The family a backbone name belongs to, or None for a registered backbone."""
    return next((f for f in FAMILIES if backbone and backbone.startswith(f.prefix)), None)


def reads_tokens(backbone: str | None) -> bool:
    """Whether the backbone reads token ids (a text encoder), not numbers or pixels."""
    fam = family_of(backbone)
    return fam is not None and fam.reads == "tokens"


def reset_all() -> None:
    """Forget every registry's loaded entries and plugins (tests that install plugins)."""
    for reg in REGISTRIES:
        reg.reset()
