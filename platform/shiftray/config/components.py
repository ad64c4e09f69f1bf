"""Checks of what a spec names (methods, datasets, backbones) and of their own options.

Pydantic prefixes the errors of a `ValidationError` raised inside a validator with the location
of that validator's field or model, so the errors built here come out with their full dotted
path (``data.options.image_size``, ``method.params.trade_off``) and are collected with every
other invalid field of the spec instead of stopping at the first.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from shiftray.errors import UserInputError

# timm.create_model takes these sources as they are; the hub or the folder says if they exist
TIMM_PASS_THROUGH = ("hf-hub:", "hf_hub:", "local-dir:")


def nested_error(
    title: str, errors: list[tuple[tuple[str | int, ...], str, Any]]
) -> ValidationError:
    """A ValidationError of (location, message, input) triples, messages shown as written."""
    details = [
        InitErrorDetails(
            type=PydanticCustomError("value_error", "{msg}", {"msg": msg}), loc=loc, input=value
        )
        for loc, msg, value in errors
    ]
    return ValidationError.from_exception_data(title, details)


def validate_options(model: type[BaseModel], value: Any, owner: str, noun: str) -> BaseModel:
    """``value`` validated by ``model``; an unknown or missing key says what ``owner`` (e.g.
    "dataset 'parquet'") accepts, so a spec written for another component can be fixed."""
    try:
        return model.model_validate(value)
    except ValidationError as e:
        accepts = ", ".join(model.model_fields) or "none"
        errors = []
        for x in e.errors():
            msg = x["msg"]
            if x["type"] == "extra_forbidden":
                msg = f"not {noun} of {owner}; it accepts: {accepts}"
            elif x["type"] == "missing":
                msg = f"required by {owner} (it accepts: {accepts})"
            errors.append((x["loc"], msg, x.get("input")))
        raise nested_error(owner, errors) from None


def check_timm_name(name: str) -> str:
    """A timm architecture name (pretrained tag allowed: resnet50.a1_in1k), else the closest
    names. Imports timm, so only when a spec names a timm backbone."""
    if name.startswith(TIMM_PASS_THROUGH):
        return name
    import timm

    arch = name.split(".", 1)[0]
    if timm.is_model(arch):
        return name
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    hint = f"closest: {', '.join(close)}" if close else "see timm.list_models()"
    raise UserInputError(f"unknown timm model {arch!r}; {hint}")
